"""China's working days: the `holidays` package plus the policy's overrides.

* Public holidays are off, weekends are off, adjusted weekend working days (调休) are on:
  the package's ``China`` calendar keeps them in ``weekend_workdays`` and its
  ``is_working_day`` honours them (2026-10-10, a Saturday, is a working day; 2026-10-07 is
  not).
* Operator overrides (policy ``[calendar]``) win: ``holidays`` forces a date off,
  ``working_days`` forces it on.
* Provisional: China publishes each year's schedule (with its 调休 swaps) in November of the
  year before. The package carries the published schedules as per-year "special" entries;
  a year after the last year it has entries for is computed from the fixed rules only
  (festivals by the lunar calendar, no swaps) and is *provisional*, unless the operator lists
  it in ``calendar.confirmed_years`` (after entering its overrides by hand).
* ``add_working_days(start, n)``: the n-th working day strictly after ``start`` (``start``
  itself never counts, whatever it is); ``n == 0`` gives ``start`` unchanged.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

from .policy import OnsitePolicy

DayKind = Literal["working", "adjusted-working", "weekend", "holiday"]


def _last_published_year() -> int:
    """The last year whose official schedule (with 调休 swaps) the package carries."""
    try:
        from holidays.countries.china import ChinaStaticHolidays

        return max(ChinaStaticHolidays.special_public_holidays)
    except (ImportError, AttributeError, ValueError):  # pragma: no cover - package layout
        # Fallback: the last year that has an adjusted weekend working day.
        import holidays

        probe = holidays.country_holidays("CN", years=range(2020, date.today().year + 3))
        return max(d.year for d in probe.weekend_workdays)


class WorkCalendar:
    def __init__(self, policy: OnsitePolicy) -> None:
        import holidays  # ~9 MiB: imported when a calendar is first needed, not at start

        self._cn = holidays.country_holidays("CN")  # expands to any year on lookup
        self._off = policy.calendar.holidays
        self._on = policy.calendar.working_days
        self._confirmed = policy.calendar.confirmed_years
        self.last_published_year = _last_published_year()

    def _package_working(self, d: date) -> bool:
        return bool(self._cn.is_working_day(d))

    def is_working_day(self, d: date) -> bool:
        if d in self._off:
            return False
        if d in self._on:
            return True
        return self._package_working(d)

    def day_kind(self, d: date) -> DayKind:
        weekend = d.weekday() >= 5
        if self.is_working_day(d):
            return "adjusted-working" if weekend or d in self._cn else "working"
        if d in self._off or d in self._cn:
            return "holiday"
        return "weekend"

    def holiday_name(self, d: date) -> str | None:
        name = self._cn.get(d)
        return str(name) if name is not None else None

    def provisional(self, d: date) -> bool:
        """True when `d`'s year has no published schedule in the data (see module doc)."""
        return d.year > self.last_published_year and d.year not in self._confirmed

    def add_working_days(self, start: date, n: int) -> date:
        """The n-th working day strictly after `start`; n == 0 gives `start` itself."""
        if n < 0:
            raise ValueError("n must be >= 0")
        d = start
        left = n
        while left:
            d += timedelta(days=1)
            if self.is_working_day(d):
                left -= 1
        return d

    def any_provisional(self, start: date, end: date) -> bool:
        lo, hi = min(start, end), max(start, end)
        return any(self.provisional(date(y, 1, 1)) for y in range(lo.year, hi.year + 1))
