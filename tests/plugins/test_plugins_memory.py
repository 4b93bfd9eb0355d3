"""plugins.memory: low-memory and swap rules on recorded readings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from plugins import memory
from proto.messages import Category, Severity

Recorded = Callable[[str], dict[str, Any]]


def test_recorded_readings_have_no_finding(recorded: Recorded) -> None:
    assert memory.evaluate(recorded("memory")) == []


@pytest.mark.parametrize(
    ("available", "severity"),
    [
        (50.0, None),
        (10.0, None),
        (9.99, Severity.WARNING),
        (5.0, Severity.WARNING),
        (4.99, Severity.CRITICAL),
        (0.0, Severity.CRITICAL),
    ],
)
def test_low_boundaries(recorded: Recorded, available: float, severity: Severity | None) -> None:
    readings = recorded("memory")
    readings["available_percent"] = available
    readings["available"] = int(readings["total"] * available / 100)
    findings = memory.evaluate(readings)
    if severity is None:
        assert findings == []
        return
    (f,) = findings
    assert (f.code, f.severity, f.category) == ("memory.low", severity, Category.SOFTWARE)
    assert f.evidence["available_percent"] == available
    assert f.evidence["total"] == readings["total"]
    assert f.summary and f.summary_zh


@pytest.mark.parametrize(
    ("swap_percent", "expected"), [(0.0, False), (79.9, False), (80.0, True), (100.0, True)]
)
def test_swap_heavy_boundary(recorded: Recorded, swap_percent: float, expected: bool) -> None:
    readings = recorded("memory")
    readings["swap_total"] = 8 * 1024**3
    readings["swap_used"] = int(readings["swap_total"] * swap_percent / 100)
    readings["swap_percent"] = swap_percent
    findings = memory.evaluate(readings)
    assert [f.code for f in findings] == (["memory.swap_heavy"] if expected else [])
    if expected:
        assert (findings[0].severity, findings[0].category) == (
            Severity.WARNING, Category.SOFTWARE
        )


def test_no_swap_configured_is_not_swap_heavy(recorded: Recorded) -> None:
    readings = recorded("memory")
    assert readings["swap_total"] == 0
    readings["swap_percent"] = 100.0
    assert memory.evaluate(readings) == []


def test_missing_keys_give_no_finding() -> None:
    assert memory.evaluate({}) == []
