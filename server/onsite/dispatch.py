"""Dispatch: which field technician takes a visit (pure; the booking tables enforce it).

Hard filters first — the technician has the service as a skill, their base covers the
customer's city (within ``dispatch.max_distance_km``), they are free for every hour of the
visit and below their daily capacity that day — then the nearest base, then the least
loaded technician (fewest visits booked), then the name (stable order).

The database, not this ranking, is what makes double booking impossible: a booking inserts
one ``tech_hours`` row per occupied hour and a ``tech_day_visits`` row, both under primary
keys (see :mod:`server.onsite.tables`); a concurrent booking that lost the race fails on
insert and takes the next candidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from .coverage import City, haversine_km, resolve_city
from .errors import UnknownCity

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class FieldTech:
    name: str
    base: str
    skills: tuple[str, ...]
    daily_capacity: int
    active: bool = True


@dataclass(frozen=True)
class Candidate:
    tech: FieldTech
    distance_km: float
    load: int


def occupied_hours(start: datetime, end: datetime) -> list[datetime]:
    """The whole hours (UTC, on the hour) a visit from ``start`` to ``end`` occupies."""
    first = start.replace(minute=0, second=0, microsecond=0)
    hours = []
    at = first
    while at < end:
        hours.append(at)
        at += HOUR
    return hours


def visit_end(start: datetime, hours: float) -> datetime:
    """A visit lasts its service's duration estimate, rounded up to whole hours."""
    return start + HOUR * max(1, -(-int(hours * 60) // 60))


def rank(techs: Iterable[FieldTech], *, city: City, service: str, start: datetime,
         end: datetime, local_day: date, busy: set[tuple[str, datetime]],
         day_visits: Mapping[tuple[str, date], int], load: Mapping[str, int],
         max_distance_km: float) -> list[Candidate]:
    """Technicians who can take the visit, best first (see the module docstring)."""
    hours = occupied_hours(start, end)
    out: list[Candidate] = []
    for tech in techs:
        if not tech.active or service not in tech.skills:
            continue
        try:
            km = haversine_km(resolve_city(tech.base), city)
        except UnknownCity:
            continue
        if km > max_distance_km:
            continue
        if any((tech.name, h) in busy for h in hours):
            continue
        if day_visits.get((tech.name, local_day), 0) >= tech.daily_capacity:
            continue
        out.append(Candidate(tech, km, load.get(tech.name, 0)))
    out.sort(key=lambda c: (round(c.distance_km, 1), c.load, c.tech.name))
    return out
