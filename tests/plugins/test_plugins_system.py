"""plugins.system: clock-skew rule on recorded readings, and the real probe."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from plugins import system
from plugins.api import ProbeContext
from proto.messages import Category, Severity

Recorded = Callable[[str], dict[str, Any]]


def test_recorded_readings_have_no_finding(recorded: Recorded) -> None:
    assert system.evaluate(recorded("system")) == []


@pytest.mark.parametrize(
    ("skew", "expected"),
    [
        (0.0, False),
        (120.0, False),
        (-120.0, False),
        (120.001, True),
        (-120.001, True),
        (3600.0, True),
    ],
)
def test_clock_skew_boundary(recorded: Recorded, skew: float, expected: bool) -> None:
    readings = recorded("system")
    readings["clock_skew_s"] = skew
    findings = system.evaluate(readings)
    assert [f.code for f in findings] == (["system.clock_skew"] if expected else [])
    if expected:
        (f,) = findings
        assert f.severity is Severity.WARNING
        assert f.category is Category.CONFIGURATION
        assert f.remote_fixable is False
        assert f.evidence["clock_skew_s"] == skew
        assert f.evidence["threshold_s"] == system.CLOCK_SKEW_MAX_S
        assert f.summary and f.summary_zh
        assert ("ahead" in f.summary) == (skew > 0)


def test_no_server_time_no_skew_no_finding(recorded: Recorded) -> None:
    readings = recorded("system")
    del readings["clock_skew_s"]
    assert system.evaluate(readings) == []


@pytest.mark.parametrize("junk", [None, "120", True, float("nan")])
def test_malformed_skew_is_ignored(recorded: Recorded, junk: object) -> None:
    readings = recorded("system")
    readings["clock_skew_s"] = junk
    assert system.evaluate(readings) == []


def test_read_measures_skew_against_server_time() -> None:
    behind = datetime.now(UTC) - timedelta(hours=1)
    readings = system.read(ProbeContext(server_time=behind, agent_version="9.9"))
    assert readings["clock_skew_s"] > 3000  # the local clock is an hour ahead of "server"
    assert readings["agent_version"] == "9.9"
    assert [f.code for f in system.evaluate(readings)] == ["system.clock_skew"]


def test_read_takes_naive_server_time_as_utc() -> None:
    naive = datetime.now(UTC).replace(tzinfo=None)
    readings = system.read(ProbeContext(server_time=naive))
    assert abs(readings["clock_skew_s"]) < 60
    assert readings["server_time"].endswith("+00:00")


def test_read_without_server_time() -> None:
    readings = system.read(ProbeContext())
    assert "clock_skew_s" not in readings
    assert readings["uptime_s"] >= 0
    assert readings["agent_version"] == system.agent_version() != ""
    datetime.fromisoformat(readings["boot_time"])
