"""Visit prices (server.onsite.pricing) and the policy file they come from (policy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.onsite.errors import PolicyError
from server.onsite.policy import load_policy, policy_as_json
from server.onsite.pricing import price_visit

P = load_policy(None)


def price(**kw: object) -> object:
    args: dict[str, object] = {"policy": P, "service": P.service("hardware-repair"),
                               "tier": P.tier("1"), "customer_kind": "individual",
                               "distance_km": 0.0, "overtime": False, "urgent": False}
    args.update(kw)
    return price_visit(**args)  # type: ignore[arg-type]


def test_plain_visit() -> None:
    pr = price()
    assert pr.subtotal == 480 and pr.total == 480  # 400 + difficulty 1.2


def test_each_surcharge_alone_and_together() -> None:
    assert price(overtime=True).total == 480 + 240
    assert price(urgent=True).total == 480 + 240
    both = price(overtime=True, urgent=True)
    assert both.total == 480 + 240 + 240
    names = [i.name for i in both.items]
    assert any("overtime" in n for n in names) and any("urgent" in n for n in names)


def test_individual_clamp() -> None:
    far = price(distance_km=1000.0)  # 480 + 940 km * 2 -> clamped to 800
    assert far.subtotal == 800 and far.total == 800
    cheap = price(service=P.service("software-install"))  # 300 basic, stays 300
    assert cheap.subtotal == 300
    ent = price(distance_km=1000.0, customer_kind="enterprise")  # no clamp for enterprise
    assert ent.subtotal == 480 + 1940


def test_travel_and_free_visit() -> None:
    t3 = price(tier=P.tier("3"), overtime=True)
    assert t3.total == 480 + 240 + 200
    free = price(customer_kind="enterprise", free_visit="contract", urgent=True)
    assert free.total == 240  # surcharge stays payable
    rate = price(customer_kind="enterprise", contract_rate=650, distance_km=1000.0)
    assert rate.subtotal == 650 and rate.total == 650


def test_policy_json_is_stable_and_seeded() -> None:
    j = policy_as_json(P)
    json.dumps(j)
    assert j["hours"] == {"start": "09:00", "end": "18:00", "timezone": "Asia/Shanghai"}
    assert {t: v["lead_working_days"] for t, v in j["tiers"].items() if v["covered"]} == {
        "1": 3, "new-1": 3, "2": 5, "3": 7, "4": 7}
    assert not j["tiers"]["5"]["covered"] and not j["tiers"]["remote"]["covered"]
    assert (j["pricing"]["individual_min"], j["pricing"]["individual_max"]) == (300, 800)


def test_operator_file_merges(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('[pricing]\nurgent_rate = 1.0\n[calendar]\nholidays = ["2026-10-09"]\n'
                 '[[promotions]]\nname = "launch"\nfrom = "2026-11-01"\nto = "2026-11-30"\n',
                 encoding="utf-8")
    p = load_policy(f)
    assert p.pricing.urgent_rate == 1.0 and p.pricing.overtime_rate == 0.5
    assert p.promotions[0].customers == ("*",)
    assert p.active_promotion("acme", __import__("datetime").date(2026, 11, 5)) is not None


@pytest.mark.parametrize(("text", "key"), [
    ("[pricing]\nurgnt_rate = 1\n", "pricing.urgnt_rate"),
    ("[pricing]\nurgent_rate = -1\n", "pricing.urgent_rate"),
    ('[hours]\nstart = "nine"\n', "hours.start"),
    ('[tiers."1"]\nlead_working_days = "3"\n', "tiers.1.lead_working_days"),
    ("colour = 1\n", "colour"),
    ('[services.hardware-repair]\ndifficulty = "epic"\n', "services.hardware-repair.difficulty"),
])
def test_bad_policy_says_which_key(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "p.toml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError, match=key.replace(".", r"\.")):
        load_policy(f)
