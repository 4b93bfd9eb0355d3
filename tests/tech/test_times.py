"""Times hw-tech prints for a person (issue 12, bug 6): local time with its offset; an
appointment in the zone it carries (the customer's city's), never bare UTC."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tech.common import _when
from tech.tickets import slot_text

CN = timezone(timedelta(hours=8))


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


def test_appointments_are_in_the_customers_zone_whoever_reads(in_berlin: None) -> None:
    start = datetime(2026, 12, 1, 10, 0, tzinfo=CN)
    assert slot_text(start, start + timedelta(hours=2)) == "2026-12-01 10:00-12:00 +08:00"
    assert slot_text(start) == "2026-12-01 10:00 +08:00"
    assert slot_text(None) == "-"
