"""Who gets an on-site visit and who pays (server.onsite.eligibility)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from server.onsite.eligibility import ContractState, assess
from server.onsite.errors import EligibilityError
from server.onsite.policy import load_policy

NOW = datetime(2026, 11, 26, 10, tzinfo=ZoneInfo("Asia/Shanghai"))
P = load_policy(None)


def ask(**kw: object) -> object:
    args: dict[str, object] = {"policy": P, "customer_kind": "individual", "contract": None,
                               "case_state": None, "service": "hardware-repair",
                               "city_tier": "1", "promotion_active": False, "now": NOW}
    args.update(kw)
    return assess(**args)  # type: ignore[arg-type]


def contract(used: int, *, rate: int | None = 500, to: date = date(2026, 12, 31)) -> ContractState:
    return ContractState(free_visits=3, used=used, rate=rate, valid_from=date(2026, 1, 1),
                         valid_to=to)


def test_enterprise_contract_free_then_rate() -> None:
    e = ask(customer_kind="enterprise", contract=contract(2), service="software-install")
    assert e.eligible and e.free_visit and not e.pays and e.reasons
    e = ask(customer_kind="enterprise", contract=contract(3))
    assert e.eligible and e.pays and not e.free_visit and e.contract_rate == 500
    assert any("used up" in r for r in e.reasons)
    e = ask(customer_kind="enterprise", contract=contract(3, rate=None))
    assert e.eligible and e.pays and e.contract_rate is None


def test_expired_contract_falls_back() -> None:
    old = contract(0, to=date(2026, 6, 30))
    e = ask(customer_kind="enterprise", contract=old, service="software-install")
    assert not e.eligible and any("not valid" in r for r in e.reasons)
    e = ask(customer_kind="enterprise", contract=old, service="network-setup")
    assert e.eligible and e.pays


def test_enterprise_onsite_work_or_failed_remote() -> None:
    assert ask(customer_kind="enterprise", service="deployment").eligible
    assert ask(customer_kind="enterprise", service="software-install",
               case_state="needs-onsite").eligible
    assert not ask(customer_kind="enterprise", service="software-install").eligible


@pytest.mark.parametrize("kind", ["individual", "small-business"])
def test_remote_first_kinds(kind: str) -> None:
    e = ask(customer_kind=kind)
    assert not e.eligible and e.alternatives and "remote" in e.reasons[-1]
    e = ask(customer_kind=kind, case_state="needs-onsite")
    assert e.eligible and e.pays and not e.free_visit


def test_promotion_is_free() -> None:
    e = ask(promotion_active=True)
    assert e.eligible and e.free_visit and not e.pays


def test_uncovered_tier_and_unoffered_service() -> None:
    e = ask(city_tier="remote", case_state="needs-onsite")
    assert not e.eligible and "not covered" in e.reasons[0] and e.alternatives
    assert not ask(service="training", case_state="needs-onsite").eligible


def test_bad_arguments() -> None:
    with pytest.raises(EligibilityError):
        ask(customer_kind="alien")
    with pytest.raises(EligibilityError):
        ask(service="teleport")
