from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from proto.timefmt import human_time


def test_a_shanghai_reader_sees_local_time_with_its_offset() -> None:
    at = datetime(2026, 12, 6, 8, 41, 9, tzinfo=UTC)
    assert human_time(at, ZoneInfo("Asia/Shanghai")) == "2026-12-06 16:41 +08:00"
    assert human_time(at, ZoneInfo("Asia/Shanghai"), seconds=True) == "2026-12-06 16:41:09 +08:00"


def test_naive_times_are_utc_and_none_is_a_dash() -> None:
    assert human_time(datetime(2026, 12, 6, 8, 41), timezone(timedelta(hours=-5))) == \
        "2026-12-06 03:41 -05:00"
    assert human_time(None) == "-"
