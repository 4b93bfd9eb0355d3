"""plugins.cpu: overload and throttling rules on recorded readings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from plugins import cpu
from proto.messages import Category, Severity

Recorded = Callable[[str], dict[str, Any]]


def codes(readings: dict[str, Any]) -> list[str]:
    return [f.code for f in cpu.evaluate(readings)]


def test_recorded_readings_have_no_finding(recorded: Recorded) -> None:
    assert cpu.evaluate(recorded("cpu")) == []


@pytest.mark.parametrize(
    ("load_per_core", "expected"), [(0.1, False), (2.0, False), (2.001, True), (8.0, True)]
)
def test_overloaded_by_load_boundary(
    recorded: Recorded, load_per_core: float, expected: bool
) -> None:
    readings = recorded("cpu")
    readings["percent"] = 10.0
    readings["load1_per_core"] = load_per_core
    readings["load1"] = load_per_core * readings["logical_cores"]
    assert codes(readings) == (["cpu.overloaded"] if expected else [])


@pytest.mark.parametrize(
    ("percent", "expected"), [(50.0, False), (95.0, False), (95.1, True), (100.0, True)]
)
def test_overloaded_by_utilisation_boundary(
    recorded: Recorded, percent: float, expected: bool
) -> None:
    readings = recorded("cpu")
    readings["percent"] = percent
    assert codes(readings) == (["cpu.overloaded"] if expected else [])


def test_overloaded_finding_fields(recorded: Recorded) -> None:
    readings = recorded("cpu")
    readings["percent"] = 99.0
    (f,) = cpu.evaluate(readings)
    assert (f.severity, f.category, f.remote_fixable) == (
        Severity.WARNING, Category.SOFTWARE, False
    )
    assert f.evidence["percent"] == 99.0
    assert f.evidence["logical_cores"] == readings["logical_cores"]
    assert f.summary and f.summary_zh


def test_windows_shape_without_load_average(recorded: Recorded) -> None:
    readings = recorded("cpu")
    for key in ("load1", "load5", "load15", "load1_per_core"):
        del readings[key]
    assert codes(readings) == []
    readings["percent"] = 96.0
    assert codes(readings) == ["cpu.overloaded"]


def throttle_case(recorded: Recorded, current: float, percent: float) -> dict[str, Any]:
    readings = recorded("cpu")
    readings.update(freq_current_mhz=current, freq_max_mhz=4000.0, percent=percent)
    return readings


@pytest.mark.parametrize(
    ("current", "percent", "expected"),
    [
        (2000.0, 90.0, False),  # exactly half of max: not throttled
        (1999.9, 90.0, True),
        (1999.9, 50.0, True),  # busy threshold is inclusive
        (1999.9, 49.9, False),  # idle CPUs clock down: that is not throttling
        (800.0, 5.0, False),
        (4000.0, 90.0, False),
    ],
)
def test_throttled_boundary(
    recorded: Recorded, current: float, percent: float, expected: bool
) -> None:
    assert codes(throttle_case(recorded, current, percent)) == (
        ["cpu.throttled"] if expected else []
    )


def test_throttled_finding_fields(recorded: Recorded) -> None:
    (f,) = cpu.evaluate(throttle_case(recorded, 1000.0, 80.0))
    assert (f.severity, f.category) == (Severity.WARNING, Category.HARDWARE)
    assert f.evidence["freq_current_mhz"] == 1000.0
    assert f.evidence["freq_max_mhz"] == 4000.0


def test_overloaded_and_throttled_together(recorded: Recorded) -> None:
    assert codes(throttle_case(recorded, 1000.0, 99.0)) == ["cpu.overloaded", "cpu.throttled"]


@pytest.mark.parametrize("maximum", [None, 0.0, "4000"])
def test_unknown_max_frequency_is_not_throttling(recorded: Recorded, maximum: object) -> None:
    readings = throttle_case(recorded, 100.0, 99.0)
    readings["freq_max_mhz"] = maximum
    assert codes(readings) == ["cpu.overloaded"]


def test_recorded_vm_has_no_max_frequency(recorded: Recorded) -> None:
    """VMs often report no maximum: the probe says None rather than guessing."""
    assert recorded("cpu")["freq_max_mhz"] is None
