"""`hw-server onsite policy|quote` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def hw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "hw-server"), *args], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("onsite") / "S")
    assert hw("init", "--home", path, "--listen", "127.0.0.1:9").returncode == 0
    assert hw("contract", "add", "--home", path, "--customer", "Acme Ltd", "--free-visits", "2",
              "--from", "2026-01-01", "--to", "2026-12-31", "--rate", "350").returncode == 0
    return path


def quote(home: str, *args: str) -> dict[str, object]:
    p = hw("onsite", "quote", "--home", home, "--service", "hardware-repair", "--json", *args)
    assert p.returncode == 0, p.stderr
    out: dict[str, object] = json.loads(p.stdout)
    return out


def test_policy_prints_the_seed_defaults(home: str) -> None:
    data = json.loads(hw("onsite", "policy", "--home", home, "--json").stdout)
    text = json.dumps(data, ensure_ascii=False)
    assert "09:00" in text and "18:00" in text and "Asia/Shanghai" in text


def test_individual_after_a_failed_remote_attempt_pays_within_the_band(home: str) -> None:
    q = quote(home, "--customer-kind", "individual", "--city", "成都", "--case-state",
              "needs-onsite", "--when", "2026-12-02T10:00", "--now", "2026-11-26T10:00")
    assert q["eligible"] is True and q["covered"] is True and q["currency"] == "CNY"
    price = q["price"]
    assert isinstance(price, dict) and 300 <= price["total"] <= 800
    assert q["earliest_standard"] == "2026-12-01"
    again = quote(home, "--customer-kind", "individual", "--city", "成都", "--case-state",
                  "needs-onsite", "--when", "2026-12-02T10:00", "--now", "2026-11-26T10:00")
    assert again == q, "--now makes the answer reproducible"


def test_individual_without_a_remote_attempt_is_not_eligible(home: str) -> None:
    q = quote(home, "--customer-kind", "individual", "--city", "成都",
              "--when", "2026-12-02T10:00", "--now", "2026-11-26T10:00")
    assert q["eligible"] is False and q["price"] is None and q["reasons"]


def test_contract_visit_on_an_adjusted_saturday_is_free_and_ordinary(home: str) -> None:
    q = quote(home, "--customer-kind", "enterprise", "--contract", "CT-0001", "--city", "上海",
              "--when", "2026-10-10T10:00", "--now", "2026-09-28T10:00")
    slot = q["slot"]
    assert isinstance(slot, dict) and slot["day_kind"] == "adjusted-working"
    assert slot["urgent"] is False and slot["overtime"] is False
    price = q["price"]
    assert isinstance(price, dict) and price["total"] == 0 and q["free_visit"] is True


def test_uncovered_city_and_unknown_city(home: str) -> None:
    q = quote(home, "--customer-kind", "enterprise", "--contract", "CT-0001", "--city", "拉萨",
              "--when", "2026-12-02T10:00", "--now", "2026-11-26T10:00")
    assert q["covered"] is False and q["price"] is None
    p = hw("onsite", "quote", "--home", home, "--service", "hardware-repair",
           "--customer-kind", "individual", "--city", "Atlantis", "--when", "2026-12-02T10:00")
    assert p.returncode == 2 and "known city" in p.stderr  # a usage error (docs: exit 2)
