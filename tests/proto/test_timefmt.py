import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from proto.timefmt import human_span, human_time


def test_a_shanghai_reader_sees_local_time_with_its_offset() -> None:
    at = datetime(2026, 12, 6, 8, 41, 9, tzinfo=UTC)
    assert human_time(at, ZoneInfo("Asia/Shanghai")) == "2026-12-06 16:41 +08:00"
    assert human_time(at, ZoneInfo("Asia/Shanghai"), seconds=True) == "2026-12-06 16:41:09 +08:00"


def test_naive_times_are_utc_and_none_is_a_dash() -> None:
    assert human_time(datetime(2026, 12, 6, 8, 41), timezone(timedelta(hours=-5))) == \
        "2026-12-06 03:41 -05:00"
    assert human_time(None) == "-"


@pytest.fixture
def in_berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The reader's machine is in Berlin (an OS setting: TZ)."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_appointments_are_in_the_customers_zone_whoever_reads(in_berlin: None) -> None:
    cn = timezone(timedelta(hours=8))
    start = datetime(2026, 12, 1, 10, 0, tzinfo=cn)
    assert human_span(start, start + timedelta(hours=2)) == "2026-12-01 10:00-12:00 +08:00"
    assert human_span(start, datetime(2026, 12, 1, 4, 0, tzinfo=UTC)) == \
        "2026-12-01 10:00-12:00 +08:00"  # the end is shown in the start's zone
    assert human_span(start) == "2026-12-01 10:00 +08:00"
    assert human_span(None) == "-"
