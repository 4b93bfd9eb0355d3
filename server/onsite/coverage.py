"""City coverage data and travel distance for on-site service (issue 6, "Coverage and travel").

The city list lives in ``cities.json`` next to this module (package data, loaded once through
:mod:`importlib.resources`); the file cites where its tiers and coordinates come from.

Resolution rules of :func:`resolve_city` (it never guesses; anything else is :class:`UnknownCity`):

1. exact Chinese name, with or without the ``市`` / ``地区`` suffix (``成都``, ``成都市``);
2. pinyin or a listed Latin alias, case-insensitive, ignoring spaces, hyphens and apostrophes
   (``Chengdu``, ``cheng du``, ``CHENGDU``, ``xian`` / ``Xi'an``, ``Harbin``); a spelling shared by
   two cities (``Taizhou`` = 台州 / 泰州, ``Fuzhou`` = 福州 / 抚州) is refused as ambiguous;
3. free text that contains a known Chinese city name (an address such as
   ``四川省成都市武侯区人民南路``). Province names written as a province (``吉林省``,
   ``广西壮族自治区``) are ignored, and a city name directly followed by a road, street or
   district word (``北京路``, ``中山区``, ``阿里巴巴``) is not a mention of that city. Among the
   remaining mentions the longest name wins; between names of equal length, one written with an
   administrative suffix (``成都市``) wins, and otherwise the first occurrence in the text wins.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .errors import UnknownCity

__all__ = [
    "TIERS",
    "City",
    "UnknownCity",
    "cities",
    "haversine_km",
    "nearest_base",
    "resolve_city",
]

TIERS: tuple[str, ...] = ("1", "new-1", "2", "3", "4", "5", "remote")
EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius

_HINT = "give the city name, e.g. 成都 or Chengdu"
_ADMIN_SUFFIXES: tuple[str, ...] = ("市", "地区")
# A city name followed by one of these is a street, district or brand name, not the city.
_NOT_A_CITY_AFTER = re.compile(r"[东西南北中]?(?:路|街|大道|大街|巷|胡同)|区|公园|广场|大厦|巴巴")
_PROVINCE_FORM = r"(?:省|(?:壮族|回族|维吾尔)?自治区)"
_LATIN_NOISE = re.compile(r"[\s\-'’_.]+")


@dataclass(frozen=True)
class City:
    """A city (or prefecture) the on-site service knows about."""

    name: str
    pinyin: str
    province: str
    tier: str  # one of TIERS
    lat: float
    lon: float


@dataclass(frozen=True)
class _Index:
    cities: tuple[City, ...]
    by_name: dict[str, City]
    by_latin: dict[str, tuple[City, ...]]
    province_re: re.Pattern[str] | None


def _latin_key(text: str) -> str:
    return _LATIN_NOISE.sub("", text).casefold()


def _city_from(raw: Any, position: int) -> tuple[City, list[str]]:
    if not isinstance(raw, dict):
        raise ValueError(f"cities.json: entry {position} is not an object")
    try:
        city = City(
            name=str(raw["name"]),
            pinyin=str(raw["pinyin"]),
            province=str(raw["province"]),
            tier=str(raw["tier"]),
            lat=float(raw["lat"]),
            lon=float(raw["lon"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"cities.json: entry {position} is malformed: {exc}") from exc
    if city.tier not in TIERS:
        raise ValueError(f"cities.json: {city.name}: tier {city.tier!r} not one of {TIERS}")
    if not (18.0 <= city.lat <= 54.0 and 73.0 <= city.lon <= 135.0):
        raise ValueError(f"cities.json: {city.name}: coordinates outside China")
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ValueError(f"cities.json: {city.name}: aliases must be a list of strings")
    return city, aliases


@functools.cache
def _index() -> _Index:
    text = (
        resources.files(__package__ or "server.onsite")
        .joinpath("cities.json")
        .read_text(encoding="utf-8")
    )
    data = json.loads(text)
    entries = data.get("cities") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError("cities.json: missing 'cities' list")
    loaded: list[City] = []
    by_name: dict[str, City] = {}
    by_latin: dict[str, list[City]] = {}
    for position, raw in enumerate(entries):
        city, aliases = _city_from(raw, position)
        if city.name in by_name:
            raise ValueError(f"cities.json: duplicate city {city.name}")
        loaded.append(city)
        by_name[city.name] = city
        for spelling in (city.pinyin, *aliases):
            bucket = by_latin.setdefault(_latin_key(spelling), [])
            if city not in bucket:
                bucket.append(city)
    provinces = sorted({c.province for c in loaded}, key=len, reverse=True)
    province_re = (
        re.compile("(?:" + "|".join(map(re.escape, provinces)) + ")" + _PROVINCE_FORM)
        if provinces
        else None
    )
    return _Index(
        cities=tuple(loaded),
        by_name=by_name,
        by_latin={k: tuple(v) for k, v in by_latin.items()},
        province_re=province_re,
    )


def cities() -> tuple[City, ...]:
    """All known cities, in file order (loaded once)."""
    return _index().cities


def _unknown(text: str) -> UnknownCity:
    return UnknownCity(f"could not match {text!r} to a known city; {_HINT}")


def _strip_suffix(text: str) -> str:
    for suffix in _ADMIN_SUFFIXES:
        if text.endswith(suffix) and len(text) > len(suffix):
            return text[: -len(suffix)]
    return text


def _from_address(text: str, index: _Index) -> City | None:
    # Blank out "吉林省", "广西壮族自治区" etc. (same length, so positions stay comparable).
    if index.province_re is not None:
        text = index.province_re.sub(lambda m: " " * len(m.group(0)), text)
    best: tuple[int, int, int] | None = None
    found: City | None = None
    for name, city in index.by_name.items():
        start = text.find(name)
        while start != -1:
            end = start + len(name)
            if not _NOT_A_CITY_AFTER.match(text, end):
                suffixed = int(text.startswith(_ADMIN_SUFFIXES, end))
                key = (len(name), suffixed, -start)
                if best is None or key > best:
                    best, found = key, city
            start = text.find(name, start + 1)
    return found


def resolve_city(text: str) -> City:
    """Resolve a city name, pinyin or free-text address to a known city (see module docstring).

    Raises :class:`UnknownCity` when nothing (or more than one city, for a shared pinyin)
    matches; it never guesses.
    """
    index = _index()
    cleaned = text.strip()
    if not cleaned:
        raise _unknown(text)
    city = index.by_name.get(cleaned) or index.by_name.get(_strip_suffix(cleaned))
    if city is not None:
        return city
    candidates = index.by_latin.get(_latin_key(cleaned), ())
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        raise UnknownCity(
            f"{text!r} matches several cities ({names}); give the Chinese name, "
            f"e.g. {candidates[0].name}"
        )
    city = _from_address(cleaned, index)
    if city is None:
        raise _unknown(text)
    return city


def haversine_km(a: City, b: City) -> float:
    """Great-circle distance between two city centres in kilometres."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a.lat, a.lon, b.lat, b.lon))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def nearest_base(city: City, bases: Sequence[str]) -> tuple[City, float]:
    """The technician base nearest to ``city`` and its distance in km.

    Each base is resolved with :func:`resolve_city` (an unresolvable base raises
    :class:`UnknownCity`); on equal distance the base listed first wins.
    """
    if isinstance(bases, str):
        raise TypeError("bases must be a sequence of city names, not a single string")
    if not bases:
        raise ValueError("no technician bases configured")
    best: tuple[City, float] | None = None
    for base_name in bases:
        base = resolve_city(base_name)
        distance = haversine_km(city, base)
        if best is None or distance < best[1]:
            best = (base, distance)
    assert best is not None
    return best
