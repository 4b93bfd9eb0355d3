"""Times hw-tech prints for a person (issue 12, bug 6): local time with its offset, never
bare UTC (appointments, in the zone they carry: tests/proto/test_timefmt.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tech.common import _when


@pytest.fixture
def in_berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The technician's machine is in Berlin (an OS setting: TZ)."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_history_times_are_the_readers_local_time_with_offset(in_berlin: None) -> None:
    at = datetime(2026, 12, 6, 8, 41, 9, tzinfo=UTC)
    assert _when(at) == "2026-12-06 09:41 +01:00"
    assert _when(None) == "-"
