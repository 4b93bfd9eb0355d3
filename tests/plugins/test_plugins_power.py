"""plugins.power: charge and wear rules on recorded readings; read() here and on fakes."""

from __future__ import annotations

import copy
import json
import sys
from collections import namedtuple
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from plugins import NotAvailable, ProbeContext, power
from proto.messages import Category, ProbeReport, ProbeStatus, Severity

CASES: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "power_cases.json").read_text(encoding="utf-8")
)


#: The shape psutil.sensors_battery() returns (its named tuple lives in a private module).
sbattery = namedtuple("sbattery", ["percent", "secsleft", "power_plugged"])


def case(name: str) -> dict[str, Any]:
    return copy.deepcopy(CASES[name])


def codes(readings: dict[str, Any]) -> list[str]:
    return [f.code for f in power.evaluate(readings)]


def wire_ready(readings: dict[str, Any]) -> None:
    report = ProbeReport(
        probe=power.NAME, version=power.VERSION, status=ProbeStatus.OK,
        readings=readings, findings=power.evaluate(readings),
    )
    assert msgspec.json.decode(msgspec.json.encode(report), type=ProbeReport) == report


def test_healthy_laptop_on_battery_has_no_finding() -> None:
    assert codes(case("laptop_healthy_on_battery")) == []


def test_worn_battery() -> None:
    (f,) = power.evaluate(case("laptop_worn_battery"))
    assert (f.code, f.severity, f.category, f.remote_fixable) == (
        "power.battery_worn", Severity.WARNING, Category.HARDWARE, False
    )
    assert f.evidence == {
        "name": "BAT0", "full": 25080000, "full_design": 57000000, "unit": "µWh",
        "capacity_percent": 44.0, "threshold_percent": power.WORN_CAPACITY_PERCENT,
    }
    assert "44%" in f.summary and "44%" in f.summary_zh


def test_failing_battery() -> None:
    (f,) = power.evaluate(case("laptop_failing_battery"))
    assert (f.code, f.severity, f.category, f.remote_fixable) == (
        "power.battery_failing", Severity.CRITICAL, Category.HARDWARE, False
    )
    assert f.evidence["unit"] == "µAh"
    assert f.evidence["threshold_percent"] == power.FAILING_CAPACITY_PERCENT
    assert "BAT1" in f.summary


def test_low_on_battery_without_wear_data() -> None:
    readings = case("macbook_low_on_battery")
    assert "wear" not in readings  # macOS: no design capacity exposed, no wear verdict
    (f,) = power.evaluate(readings)
    assert (f.code, f.severity, f.category) == (
        "power.battery_low", Severity.WARNING, Category.CONFIGURATION
    )
    assert f.evidence == {
        "percent": 7.0, "plugged": False, "secsleft": 900,
        "threshold_percent": power.LOW_CHARGE_PERCENT,
    }
    assert f.summary and f.summary_zh


@pytest.mark.parametrize(
    ("capacity", "expected"),
    [
        (100.0, None),
        (60.0, None),
        (59.9, "power.battery_worn"),
        (40.0, "power.battery_worn"),
        (39.9, "power.battery_failing"),
        (0.0, "power.battery_failing"),
    ],
)
def test_wear_boundaries(capacity: float, expected: str | None) -> None:
    readings = case("laptop_healthy_on_battery")
    readings["wear"][0]["capacity_percent"] = capacity
    assert codes(readings) == ([expected] if expected else [])


@pytest.mark.parametrize(
    ("percent", "plugged", "expected"),
    [
        (10.0, False, False),
        (9.9, False, True),
        (0.0, False, True),
        (5.0, True, False),  # charging
        (5.0, None, False),  # unknown plugged state: no verdict
    ],
)
def test_low_charge_boundaries(percent: float, plugged: bool | None, expected: bool) -> None:
    readings = case("macbook_low_on_battery")
    readings.update(percent=percent, plugged=plugged)
    assert codes(readings) == (["power.battery_low"] if expected else [])


def test_one_wear_finding_per_battery_and_garbage_ignored() -> None:
    readings = case("laptop_worn_battery")
    readings["wear"].append(dict(readings["wear"][0], name="BAT1", capacity_percent=20.0))
    readings["wear"].append("garbage")
    assert codes(readings) == ["power.battery_worn", "power.battery_failing"]
    assert power.evaluate({}) == []
    assert power.evaluate({"percent": "5", "plugged": False, "wear": "x"}) == []


def test_hw_evaluate_answers_only_for_power() -> None:
    readings = case("laptop_failing_battery")
    assert power.hw_evaluate(probe="thermal", readings=readings) == []
    assert len(power.hw_evaluate(probe="power", readings=readings)) == 1


# -- reading ---------------------------------------------------------------------------------


def test_read_here_is_wire_ready_or_not_available() -> None:
    try:
        readings = power.read(ProbeContext())
    except NotAvailable as exc:
        assert str(exc) == "no battery"
        return
    wire_ready(readings)
    assert 0 <= readings["percent"] <= 100


def test_no_battery_is_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "sensors_battery", lambda: None)
    with pytest.raises(NotAvailable, match="no battery"):
        power.read(ProbeContext())
    monkeypatch.delattr(psutil, "sensors_battery")
    with pytest.raises(NotAvailable, match="no battery"):
        power.read(ProbeContext())


@pytest.mark.parametrize(
    ("secsleft", "plugged", "expected_secsleft", "unlimited"),
    [
        (psutil.POWER_TIME_UNLIMITED, True, None, True),
        (psutil.POWER_TIME_UNKNOWN, False, None, False),
        (900, False, 900, False),
    ],
)
def test_read_from_a_battery(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secsleft: int, plugged: bool,
    expected_secsleft: int | None, unlimited: bool,
) -> None:
    monkeypatch.setattr(psutil, "sensors_battery", lambda: sbattery(7.25, secsleft, plugged))
    monkeypatch.setattr(power, "_POWER_SUPPLY", tmp_path)  # no sysfs battery: no wear
    readings = power.read(ProbeContext())
    assert readings == {
        "percent": 7.2, "plugged": plugged, "secsleft": expected_secsleft,
        "secsleft_unlimited": unlimited,
    }
    wire_ready(readings)
    assert codes(readings) == ([] if plugged else ["power.battery_low"])


def write_battery(root: Path, name: str, **files: int) -> None:
    (root / name).mkdir()
    for key, value in files.items():
        (root / name / key).write_text(f"{value}\n")


def test_wear_from_sysfs(tmp_path: Path) -> None:
    write_battery(tmp_path, "BAT0", energy_full=25080000, energy_full_design=57000000)
    write_battery(tmp_path, "BAT1", charge_full=1496000, charge_full_design=4400000)
    write_battery(tmp_path, "BAT2", energy_full=1000, energy_full_design=0)  # unknown design
    write_battery(tmp_path, "BAT3", capacity=80)  # no full/design pair
    write_battery(tmp_path, "AC", energy_full=1, energy_full_design=1)  # not a battery
    assert power._wear(tmp_path) == [
        {"name": "BAT0", "full": 25080000, "full_design": 57000000, "unit": "µWh",
         "capacity_percent": 44.0},
        {"name": "BAT1", "full": 1496000, "full_design": 4400000, "unit": "µAh",
         "capacity_percent": 34.0},
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sysfs wear is Linux only")
def test_read_includes_wear_on_linux(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_battery(tmp_path, "BAT0", energy_full=30000000, energy_full_design=57000000)
    monkeypatch.setattr(psutil, "sensors_battery", lambda: sbattery(80, 3600, False))
    monkeypatch.setattr(power, "_POWER_SUPPLY", tmp_path)
    readings = power.read(ProbeContext())
    assert readings["wear"][0]["capacity_percent"] == 52.6
    assert codes(readings) == ["power.battery_worn"]


def test_every_code_has_a_row_in_docs_findings() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "findings.md").read_text(encoding="utf-8")
    for code in power.FINDING_CODES:
        assert f"| `{code}` |" in docs, code
