"""Quotes for on-site visits (server.onsite.quote)."""

from __future__ import annotations

import json
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from server.onsite.calendar import WorkCalendar
from server.onsite.coverage import City, nearest_base, resolve_city
from server.onsite.eligibility import ContractState
from server.onsite.errors import QuoteError
from server.onsite.policy import load_policy
from server.onsite.quote import quote

TZ = ZoneInfo("Asia/Shanghai")
P = load_policy(None)
CAL = WorkCalendar(P)
NOW = datetime(2026, 11, 26, 10, tzinfo=TZ)  # Thursday


def city(tier: str) -> City:
    return City(name=f"T{tier}", pinyin="x", province="p", tier=tier, lat=0.0, lon=0.0)


def q(**kw: object) -> dict[str, object]:
    args: dict[str, object] = {"policy": P, "calendar": CAL, "customer_kind": "individual",
                               "contract": None, "city": city("1"), "distance_km": 0.0,
                               "service": "hardware-repair",
                               "when": datetime(2026, 12, 2, 10, tzinfo=TZ), "urgent": False,
                               "now": NOW, "case_state": "needs-onsite"}
    args.update(kw)
    out = quote(**args).as_json()  # type: ignore[arg-type]
    json.dumps(out)
    return out


def total(out: dict[str, object]) -> int:
    price = out["price"]
    assert isinstance(price, dict)
    return int(price["total"])


def test_real_city_quote_keys() -> None:
    chengdu = resolve_city("成都")
    _, km = nearest_base(chengdu, P.bases)
    out = q(city=chengdu, distance_km=km)
    for key in ("eligible", "reasons", "covered", "tier", "earliest_standard", "provisional",
                "price", "currency", "slot"):
        assert key in out
    assert out["currency"] == "CNY" and out["eligible"] and out["covered"]
    assert total(out) == 480


@pytest.mark.parametrize(("tier", "earliest"), [
    ("1", "2026-12-01"), ("new-1", "2026-12-01"), ("2", "2026-12-03"),
    ("3", "2026-12-07"), ("4", "2026-12-07")])
def test_coverage_and_lead_by_tier(tier: str, earliest: str) -> None:
    out = q(city=city(tier), when=datetime(2026, 12, 10, 10, tzinfo=TZ))
    assert out["covered"] and out["earliest_standard"] == earliest
    travel = 200 if tier in ("3", "4") else 0
    assert total(out) == 480 + travel


@pytest.mark.parametrize("tier", ["5", "remote"])
def test_uncovered(tier: str) -> None:
    out = q(city=city(tier))
    assert not out["covered"] and not out["eligible"] and out["price"] is None
    assert "not covered" in str(out["reasons"]) and out["alternatives"]


def test_surcharges_alone_and_together() -> None:
    assert total(q()) == 480
    early = q(when=datetime(2026, 11, 30, 10, tzinfo=TZ))  # before earliest (12-01)
    assert early["slot"]["urgent"] and total(early) == 720  # type: ignore[index]
    evening = q(when=datetime(2026, 12, 2, 19, tzinfo=TZ))
    assert evening["slot"]["urgent"] and total(evening) == 720  # type: ignore[index]
    asked = q(urgent=True)
    assert total(asked) == 720
    sat = q(when=datetime(2026, 12, 5, 10, tzinfo=TZ))
    assert sat["slot"]["overtime"] and not sat["slot"]["urgent"]  # type: ignore[index]
    assert total(sat) == 720
    both = q(when=datetime(2026, 12, 5, 20, tzinfo=TZ))
    assert total(both) == 960


def test_adjusted_saturday_is_ordinary() -> None:
    now = datetime(2026, 9, 28, 10, tzinfo=TZ)
    out = q(now=now, when=datetime(2026, 10, 10, 10, tzinfo=TZ))
    assert out["earliest_standard"] == "2026-10-08"  # Sep 29, Sep 30, then Oct 8 (3rd)
    slot = out["slot"]
    assert isinstance(slot, dict)
    assert slot["day_kind"] == "adjusted-working" and not slot["overtime"]
    assert not slot["urgent"] and total(out) == 480
    hol = q(now=now, when=datetime(2026, 10, 7, 10, tzinfo=TZ))
    assert hol["slot"]["overtime"] and hol["slot"]["urgent"]  # type: ignore[index]


def test_free_visit_ledger_runs_out() -> None:
    def c(used: int) -> ContractState:
        return ContractState(free_visits=2, used=used, rate=650, valid_from=date(2026, 1, 1),
                             valid_to=date(2026, 12, 31))
    first = q(customer_kind="enterprise", contract=c(1), case_state=None)
    assert first["free_visit"] and total(first) == 0
    assert first["contract"] == {"quota": 2, "used": 1, "remaining": 1}
    out = q(customer_kind="enterprise", contract=c(2), case_state=None)
    assert not out["free_visit"] and out["pays"] and total(out) == 650
    assert out["contract"] == {"quota": 2, "used": 2, "remaining": 0}


def test_individual_clamp_in_quote() -> None:
    assert total(q(distance_km=2000.0)) == 800
    assert total(q(distance_km=2000.0, urgent=True)) == 1200  # surcharge on the clamped 800


def test_reproducible_and_provisional() -> None:
    a = q()
    assert a == q() and not a["provisional"]
    far = q(now=datetime(2099, 3, 2, 10, tzinfo=TZ), when=datetime(2099, 3, 20, 10, tzinfo=TZ))
    assert far["provisional"] and "provisional" in str(far["reasons"])


def test_bad_times() -> None:
    with pytest.raises(QuoteError):
        q(when=datetime(2026, 12, 2, 10))
    with pytest.raises(QuoteError):
        q(when=datetime(2026, 11, 1, 10, tzinfo=TZ))
