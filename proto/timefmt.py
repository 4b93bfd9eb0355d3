"""Times as a person reads them: local wall-clock time with its UTC offset.

The wire and ``--json`` keep UTC (RFC 3339); everything printed for a person goes through
:func:`human_time`, so a Shanghai customer reads ``2026-12-06 16:41 +08:00``, never a bare
UTC ``2026-12-06T08:41:09``; an appointment goes through :func:`human_span`, in the zone
it carries. Pure: the zone is passed in; ``None`` means the zone of the
machine the program runs on (the reader's own).
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo


def human_time(dt: datetime | None, tz: tzinfo | None = None, *, seconds: bool = False
               ) -> str:
    """``YYYY-MM-DD HH:MM[:SS] +HH:MM`` in ``tz`` (the local zone when None); ``-`` for None.

    A naive ``dt`` is taken as UTC (the store and the wire only hold UTC).
    """
    if dt is None:
        return "-"
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    local = dt.astimezone(tz)
    text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    offset = local.strftime("%z")  # +0800
    return f"{text} {offset[:3]}:{offset[3:]}" if offset else f"{text} UTC"


def human_span(start: datetime | None, end: datetime | None = None) -> str:
    """An appointment in the zone it carries (the customer's city's, where the visit
    happens, whoever reads it), offset shown: ``2026-12-01 10:00-12:00 +08:00``; ``-`` for
    None."""
    if start is None:
        return "-"
    text = human_time(start, start.tzinfo)
    if end is None:
        return text
    day_time, _sp, offset = text.rpartition(" ")
    return f"{day_time}-{end.astimezone(start.tzinfo):%H:%M} {offset}"
