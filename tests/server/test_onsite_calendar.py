"""China's working-day calendar for on-site visits (server.onsite.calendar)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from server.onsite.calendar import WorkCalendar
from server.onsite.policy import CalendarOverrides, load_policy


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return WorkCalendar(load_policy(None))


def test_adjusted_saturday_and_national_day(cal: WorkCalendar) -> None:
    assert cal.is_working_day(date(2026, 10, 10))  # Saturday, 调休
    assert cal.day_kind(date(2026, 10, 10)) == "adjusted-working"
    assert not cal.is_working_day(date(2026, 10, 7))
    assert cal.day_kind(date(2026, 10, 7)) == "holiday"
    assert cal.day_kind(date(2026, 10, 4)) == "weekend"  # Sunday inside the block
    assert cal.day_kind(date(2026, 10, 9)) == "working"


def test_add_working_days_across_national_day(cal: WorkCalendar) -> None:
    # 2026-09-30 Wed; Oct 1-7 off; Oct 8 Thu, 9 Fri, 10 Sat (调休) on.
    assert cal.add_working_days(date(2026, 9, 30), 1) == date(2026, 10, 8)
    assert cal.add_working_days(date(2026, 9, 30), 3) == date(2026, 10, 10)
    assert cal.add_working_days(date(2026, 9, 30), 4) == date(2026, 10, 12)
    # start itself never counts, even when it is a working day
    assert cal.add_working_days(date(2026, 10, 8), 1) == date(2026, 10, 9)
    assert cal.add_working_days(date(2026, 10, 8), 0) == date(2026, 10, 8)


def test_add_working_days_across_spring_festival(cal: WorkCalendar) -> None:
    # 2026: Feb 14 (Sat) on, Feb 15-23 off, Feb 28 (Sat) on.
    assert cal.is_working_day(date(2026, 2, 14))
    assert cal.day_kind(date(2026, 2, 17)) == "holiday"
    assert cal.add_working_days(date(2026, 2, 13), 1) == date(2026, 2, 14)
    assert cal.add_working_days(date(2026, 2, 14), 1) == date(2026, 2, 24)
    assert cal.add_working_days(date(2026, 2, 24), 4) == date(2026, 2, 28)


def test_overrides_win() -> None:
    p = load_policy(None)
    over = CalendarOverrides(holidays=frozenset({date(2026, 10, 9)}),
                             working_days=frozenset({date(2026, 10, 4)}),
                             confirmed_years=frozenset())
    cal = WorkCalendar(replace(p, calendar=over))
    assert cal.day_kind(date(2026, 10, 9)) == "holiday"
    assert cal.day_kind(date(2026, 10, 4)) == "adjusted-working"
    assert cal.add_working_days(date(2026, 9, 30), 1) == date(2026, 10, 4)


def test_provisional_years(cal: WorkCalendar) -> None:
    assert not cal.provisional(date(2026, 10, 10))
    assert cal.provisional(date(2099, 5, 1))
    p = load_policy(None)
    confirmed = WorkCalendar(replace(p, calendar=replace(
        p.calendar, confirmed_years=frozenset({2099}))))
    assert not confirmed.provisional(date(2099, 5, 1))
