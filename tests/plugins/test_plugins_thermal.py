"""plugins.thermal: overheating and stalled-fan rules on recorded readings; read() here."""

from __future__ import annotations

import copy
import json
from collections import namedtuple
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from plugins import NotAvailable, ProbeContext, thermal
from proto.messages import Category, ProbeReport, ProbeStatus, Severity

CASES: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "thermal_cases.json").read_text(encoding="utf-8")
)

#: The shapes psutil.sensors_temperatures() / sensors_fans() return.
shwtemp = namedtuple("shwtemp", ["label", "current", "high", "critical"])
sfan = namedtuple("sfan", ["label", "current"])


def case(name: str) -> dict[str, Any]:
    return copy.deepcopy(CASES[name])


def codes(readings: dict[str, Any]) -> list[str]:
    return [f.code for f in thermal.evaluate(readings)]


def one_sensor(
    current: float, high: float | None = None, critical: float | None = None, rpm: int = 1500
) -> dict[str, Any]:
    return {
        "sensors": [
            {"chip": "coretemp", "label": "Package id 0", "current": current, "high": high,
             "critical": critical}
        ],
        "sensors_skipped": 0,
        "fans": [{"chip": "thinkpad", "label": "thinkpad", "rpm": rpm}],
    }


def test_idle_laptop_with_stopped_fan_has_no_finding() -> None:
    assert codes(case("laptop_idle_fan_stopped")) == []


def test_hot_laptop_with_stalled_fan() -> None:
    findings = thermal.evaluate(case("hot_laptop_stalled_fan"))
    assert [f.code for f in findings] == ["thermal.overheating", "thermal.fan_stalled"]
    hot, fan = findings
    assert (hot.severity, hot.category) == (Severity.CRITICAL, Category.HARDWARE)
    worst = hot.evidence["sensors"][0]
    assert (worst["label"], worst["current"], worst["threshold_c"], worst["severity"]) == (
        "Core 0", 101.0, 100.0, "critical"
    )
    assert hot.evidence["hot_sensors"] == 3  # Core 0, Package, Core 1; not acpitz at 71
    assert "Core 0" in hot.summary and "101" in hot.summary_zh
    assert (fan.severity, fan.category, fan.remote_fixable) == (
        Severity.CRITICAL, Category.HARDWARE, False
    )
    assert fan.evidence["fans"] == [{"chip": "thinkpad", "label": "thinkpad", "rpm": 0}]
    assert fan.evidence["hot_sensors"][0]["current"] == 101.0
    assert fan.evidence["threshold_hot_c"] == thermal.FAN_STALL_HOT_C
    assert "thinkpad" in fan.summary and fan.summary_zh


def test_no_mark_uses_the_default_and_spinning_fans_are_fine() -> None:
    (f,) = thermal.evaluate(case("desktop_warm_fans_spinning"))
    assert (f.code, f.severity) == ("thermal.overheating", Severity.WARNING)
    assert f.evidence["sensors"] == [
        {"chip": "k10temp", "label": "Tctl", "current": 91.5, "high": None, "critical": None,
         "severity": "warning", "threshold_c": thermal.OVERHEAT_DEFAULT_C}
    ]


@pytest.mark.parametrize(
    ("current", "high", "critical", "severity"),
    [
        (85.9, 86.0, 100.0, None),
        (86.0, 86.0, 100.0, Severity.WARNING),
        (99.9, 86.0, 100.0, Severity.WARNING),
        (100.0, 86.0, 100.0, Severity.CRITICAL),
        (95.0, 100.0, 100.0, None),  # a high mark above the default wins over it
        (89.9, None, None, None),
        (90.0, None, None, Severity.WARNING),
        (89.9, None, 120.0, None),
        (120.0, None, 120.0, Severity.CRITICAL),
    ],
)
def test_overheating_boundaries(
    current: float, high: float | None, critical: float | None, severity: Severity | None
) -> None:
    findings = thermal.evaluate(one_sensor(current, high, critical))
    if severity is None:
        assert findings == []
        return
    (f,) = findings
    assert (f.code, f.severity, f.category) == ("thermal.overheating", severity, Category.HARDWARE)
    assert f.evidence["sensors"][0]["current"] == current


@pytest.mark.parametrize(
    ("current", "high", "expected"),
    [
        (69.9, None, False),
        (70.0, None, True),
        (65.0, 60.0, True),  # at its own high mark, below 70
        (59.9, 60.0, False),
    ],
)
def test_fan_stalled_boundaries(current: float, high: float | None, expected: bool) -> None:
    assert ("thermal.fan_stalled" in codes(one_sensor(current, high, rpm=0))) is expected
    assert "thermal.fan_stalled" not in codes(one_sensor(current, high, rpm=1))


def test_no_fan_readings_means_no_stall_verdict() -> None:
    readings = case("hot_laptop_stalled_fan")
    del readings["fans"]  # macOS/Windows shape
    assert codes(readings) == ["thermal.overheating"]


def test_machine_with_no_sensors_has_no_finding() -> None:
    assert thermal.evaluate({}) == []
    assert thermal.evaluate({"sensors": [], "fans": [{"label": "x", "rpm": 0}]}) == []
    assert thermal.evaluate({"sensors": "garbage", "fans": None}) == []


def test_hw_evaluate_answers_only_for_thermal() -> None:
    readings = case("hot_laptop_stalled_fan")
    assert thermal.hw_evaluate(probe="power", readings=readings) == []
    assert len(thermal.hw_evaluate(probe="thermal", readings=readings)) == 2


# -- reading ---------------------------------------------------------------------------------


def test_read_here_is_wire_ready_or_not_available() -> None:
    try:
        readings = thermal.read(ProbeContext())
    except NotAvailable as exc:
        assert str(exc) == "no temperature sensors exposed"
        return
    report = ProbeReport(
        probe=thermal.NAME, version=thermal.VERSION, status=ProbeStatus.OK,
        readings=readings, findings=thermal.evaluate(readings),
    )
    assert msgspec.json.decode(msgspec.json.encode(report), type=ProbeReport) == report
    assert readings["sensors"]


@pytest.mark.parametrize("temperatures", [{}, None, {"acpitz": []}])
def test_no_sensors_exposed_is_not_available(
    monkeypatch: pytest.MonkeyPatch, temperatures: object
) -> None:
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: temperatures, raising=False)
    with pytest.raises(NotAvailable, match="no temperature sensors exposed"):
        thermal.read(ProbeContext())


def test_platform_without_temperature_support_is_not_available(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(psutil, "sensors_temperatures", raising=False)  # Windows, macOS
    with pytest.raises(NotAvailable, match="no temperature sensors exposed"):
        thermal.read(ProbeContext())


def test_read_a_hot_machine_with_a_stalled_fan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: {
        "coretemp": [shwtemp("Package id 0", 97.0, 86.0, 100.0), shwtemp("", 60.0, 0.0, None)],
        "acpitz": [shwtemp("", 71.0, None, 128.0)],
    }, raising=False)
    monkeypatch.setattr(psutil, "sensors_fans", lambda: {"thinkpad": [sfan("", 0)]},
                        raising=False)
    readings = thermal.read(ProbeContext())
    assert readings == {
        "sensors": [
            {"chip": "acpitz", "label": "acpitz", "current": 71.0, "high": None,
             "critical": 128.0},
            {"chip": "coretemp", "label": "Package id 0", "current": 97.0, "high": 86.0,
             "critical": 100.0},
            {"chip": "coretemp", "label": "coretemp", "current": 60.0, "high": None,
             "critical": None},  # a mark of 0 is no mark
        ],
        "sensors_skipped": 0,
        "fans": [{"chip": "thinkpad", "label": "thinkpad", "rpm": 0}],
    }
    report = ProbeReport(
        probe=thermal.NAME, version=thermal.VERSION, status=ProbeStatus.OK,
        readings=readings, findings=thermal.evaluate(readings),
    )
    assert msgspec.json.decode(msgspec.json.encode(report), type=ProbeReport) == report
    assert [f.code for f in report.findings] == ["thermal.overheating", "thermal.fan_stalled"]
    assert report.findings[0].severity == Severity.WARNING


def test_read_without_fan_support_leaves_fans_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "sensors_temperatures",
                        lambda: {"cpu_thermal": [shwtemp("", 48.0, None, None)]}, raising=False)
    monkeypatch.delattr(psutil, "sensors_fans", raising=False)
    assert "fans" not in thermal.read(ProbeContext())


def test_every_code_has_a_row_in_docs_findings() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "findings.md").read_text(encoding="utf-8")
    for code in thermal.FINDING_CODES:
        assert f"| `{code}` |" in docs, code
