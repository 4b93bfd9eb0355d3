"""The on-site policy: one TOML file, the seed's values as defaults, operator overrides on top.

`load_policy(path)` reads ``default_policy.toml`` (next to this module), deep-merges the
operator's file over it (same keys; tables merge, scalars and arrays replace) and validates the
result into frozen dataclasses. Unknown keys and bad values raise `PolicyError` naming the key
and what to do.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import PolicyError

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.toml")
TIERS = ("1", "new-1", "2", "3", "4", "5", "remote")
CUSTOMER_KINDS = ("individual", "small-business", "enterprise")


@dataclass(frozen=True)
class Hours:
    start: time
    end: time
    timezone: str

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class TierRule:
    tier: str
    covered: bool
    lead_working_days: int
    travel_fee: int


@dataclass(frozen=True)
class ServiceType:
    name: str
    label: str
    hours: float
    base_fee: int
    difficulty: str
    onsite_work: bool
    customer_kinds: tuple[str, ...]


@dataclass(frozen=True)
class Pricing:
    free_km: float
    per_km: float
    per_extra_hour: int
    individual_min: int
    individual_max: int
    clamp_kinds: tuple[str, ...]
    overtime_rate: float
    urgent_rate: float
    difficulty: tuple[tuple[str, float], ...]

    def difficulty_factor(self, level: str) -> float:
        return dict(self.difficulty)[level]


@dataclass(frozen=True)
class EligibilityRules:
    contract_kinds: tuple[str, ...]
    remote_first_kinds: tuple[str, ...]
    qualifying_case_states: tuple[str, ...]
    promotion_visit_free: bool


@dataclass(frozen=True)
class CalendarOverrides:
    holidays: frozenset[date]
    working_days: frozenset[date]
    confirmed_years: frozenset[int]


@dataclass(frozen=True)
class Promotion:
    name: str
    start: date
    end: date
    customers: tuple[str, ...]  # "*" means every customer

    def applies(self, customer: str | None, day: date) -> bool:
        if not self.start <= day <= self.end:
            return False
        return "*" in self.customers or (customer is not None and customer in self.customers)


@dataclass(frozen=True)
class Dispatch:
    slot_times: tuple[time, ...]
    max_distance_km: float
    search_working_days: int


@dataclass(frozen=True)
class Preparation:
    always: tuple[str, ...]
    findings: tuple[tuple[str, tuple[str, ...]], ...]  # (finding code or prefix, items)

    def for_findings(self, codes: list[str]) -> list[str]:
        """The items a visit needs for these finding codes: the always-list, then per code
        the items of the longest matching prefix (``disk`` matches ``disk.smart_failing``)."""
        out = list(self.always)
        for code in codes:
            best: tuple[str, tuple[str, ...]] | None = None
            for prefix, items in self.findings:
                if code == prefix or code.startswith(prefix + "."):
                    if best is None or len(prefix) > len(best[0]):
                        best = (prefix, items)
            if best is not None:
                out += [i for i in best[1] if i not in out]
        return out


@dataclass(frozen=True)
class OnsitePolicy:
    currency: str
    bases: tuple[str, ...]
    hours: Hours
    tiers: tuple[TierRule, ...]
    services: tuple[ServiceType, ...]
    pricing: Pricing
    eligibility: EligibilityRules
    followup_working_days: int
    calendar: CalendarOverrides
    promotions: tuple[Promotion, ...]
    dispatch: Dispatch
    preparation: Preparation
    checklist: tuple[str, ...]

    def tier(self, tier: str) -> TierRule:
        for rule in self.tiers:
            if rule.tier == tier:
                return rule
        raise KeyError(f"unknown city tier {tier!r}; known: {', '.join(TIERS)}")

    def service(self, name: str) -> ServiceType:
        for svc in self.services:
            if svc.name == name:
                return svc
        known = ", ".join(s.name for s in self.services)
        raise KeyError(f"unknown service {name!r}; known: {known}")

    def active_promotion(self, customer: str | None, day: date) -> Promotion | None:
        for promo in self.promotions:
            if promo.applies(customer, day):
                return promo
        return None


# --- loading -----------------------------------------------------------------------------


def _merge(base: dict[str, Any], over: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        path = f"{where}.{key}" if where else key
        if key not in base:
            # new services, difficulty levels and preparation rules may be added; other
            # keys must be known
            if where not in ("services", "pricing.difficulty", "preparation.findings"):
                raise PolicyError(f"{path}: unknown key; remove it or check the spelling "
                                  f"(known here: {', '.join(sorted(base))})")
            out[key] = value
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise PolicyError(f"{path}: must be a table")
            out[key] = _merge(base[key], value, path)
        else:
            out[key] = value
    return out


def _get(table: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise PolicyError(f"{where}.{key}: missing; add it")
    return table[key]


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(table) - allowed
    if extra:
        raise PolicyError(f"{where}.{sorted(extra)[0]}: unknown key; remove it "
                          f"(known here: {', '.join(sorted(allowed))})")


def _num(v: Any, key: str, *, lo: float = 0.0, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise PolicyError(f"{key}: must be a number, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise PolicyError(f"{key}: must be {rng}, got {v!r}")
    return float(v)


def _int(v: Any, key: str, *, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise PolicyError(f"{key}: must be a whole number, got {v!r}")
    if v < lo:
        raise PolicyError(f"{key}: must be >= {lo}, got {v!r}")
    return v


def _bool(v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        raise PolicyError(f"{key}: must be true or false, got {v!r}")
    return v


def _str(v: Any, key: str) -> str:
    if not isinstance(v, str) or not v:
        raise PolicyError(f"{key}: must be a non-empty string, got {v!r}")
    return v


def _strs(v: Any, key: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise PolicyError(f"{key}: must be a list of strings, got {v!r}")
    if allowed is not None:
        for x in v:
            if x not in allowed:
                raise PolicyError(f"{key}: {x!r} is not one of {', '.join(allowed)}")
    return tuple(v)


def _date(v: Any, key: str) -> date:
    if isinstance(v, date):
        return v
    if isinstance(v, str):
        try:
            return date.fromisoformat(v)
        except ValueError:
            pass
    raise PolicyError(f"{key}: must be a date like 2026-10-10, got {v!r}")


def _dates(v: Any, key: str) -> frozenset[date]:
    if not isinstance(v, list):
        raise PolicyError(f"{key}: must be a list of dates like [\"2026-10-10\"], got {v!r}")
    return frozenset(_date(x, key) for x in v)


def _time(v: Any, key: str) -> time:
    if isinstance(v, time):
        return v
    if isinstance(v, str):
        try:
            return time.fromisoformat(v)
        except ValueError:
            pass
    raise PolicyError(f"{key}: must be a time like \"09:00\", got {v!r}")


def _build(d: Mapping[str, Any]) -> OnsitePolicy:
    hours_t = _get(d, "hours", "")
    hours = Hours(_time(hours_t["start"], "hours.start"), _time(hours_t["end"], "hours.end"),
                  _str(hours_t["timezone"], "hours.timezone"))
    if hours.start >= hours.end:
        raise PolicyError("hours.start: must be before hours.end")
    try:
        ZoneInfo(hours.timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise PolicyError(f"hours.timezone: unknown time zone {hours.timezone!r}; "
                          "use an IANA name such as Asia/Shanghai") from e

    tiers = []
    for tier in TIERS:
        t = d["tiers"][tier]
        w = f"tiers.{tier}"
        tiers.append(TierRule(tier, _bool(t["covered"], f"{w}.covered"),
                              _int(t["lead_working_days"], f"{w}.lead_working_days"),
                              _int(t["travel_fee"], f"{w}.travel_fee")))

    p = d["pricing"]
    diff = p["difficulty"]
    if not isinstance(diff, dict) or not diff:
        raise PolicyError("pricing.difficulty: must be a table of level = factor")
    difficulty = tuple((str(k), _num(v, f"pricing.difficulty.{k}", lo=0.0))
                       for k, v in sorted(diff.items()))
    pricing = Pricing(
        free_km=_num(p["free_km"], "pricing.free_km"),
        per_km=_num(p["per_km"], "pricing.per_km"),
        per_extra_hour=_int(p["per_extra_hour"], "pricing.per_extra_hour"),
        individual_min=_int(p["individual_min"], "pricing.individual_min"),
        individual_max=_int(p["individual_max"], "pricing.individual_max"),
        clamp_kinds=_strs(p["clamp_kinds"], "pricing.clamp_kinds", CUSTOMER_KINDS),
        overtime_rate=_num(p["overtime_rate"], "pricing.overtime_rate", hi=10.0),
        urgent_rate=_num(p["urgent_rate"], "pricing.urgent_rate", hi=10.0),
        difficulty=difficulty,
    )
    if pricing.individual_min > pricing.individual_max:
        raise PolicyError("pricing.individual_min: must not exceed pricing.individual_max")

    services = []
    svc_keys = {"label", "hours", "base_fee", "difficulty", "onsite_work", "customer_kinds"}
    for name, s in sorted(d["services"].items()):
        w = f"services.{name}"
        if not isinstance(s, dict):
            raise PolicyError(f"{w}: must be a table")
        _check_keys(s, svc_keys, w)
        level = _str(_get(s, "difficulty", w), f"{w}.difficulty")
        if level not in dict(difficulty):
            raise PolicyError(f"{w}.difficulty: {level!r} is not a level of pricing.difficulty "
                              f"({', '.join(k for k, _ in difficulty)})")
        services.append(ServiceType(
            name=name, label=_str(_get(s, "label", w), f"{w}.label"),
            hours=_num(_get(s, "hours", w), f"{w}.hours", lo=0.0),
            base_fee=_int(_get(s, "base_fee", w), f"{w}.base_fee"),
            difficulty=level, onsite_work=_bool(_get(s, "onsite_work", w), f"{w}.onsite_work"),
            customer_kinds=_strs(_get(s, "customer_kinds", w), f"{w}.customer_kinds",
                                 CUSTOMER_KINDS)))
    if not services:
        raise PolicyError("services: define at least one service type")

    el = d["eligibility"]
    elig = EligibilityRules(
        contract_kinds=_strs(el["contract_kinds"], "eligibility.contract_kinds", CUSTOMER_KINDS),
        remote_first_kinds=_strs(el["remote_first_kinds"], "eligibility.remote_first_kinds",
                                 CUSTOMER_KINDS),
        qualifying_case_states=_strs(el["qualifying_case_states"],
                                     "eligibility.qualifying_case_states"),
        promotion_visit_free=_bool(el["promotion_visit_free"], "eligibility.promotion_visit_free"),
    )

    c = d["calendar"]
    years = c["confirmed_years"]
    if not isinstance(years, list):
        raise PolicyError("calendar.confirmed_years: must be a list of years like [2027]")
    cal = CalendarOverrides(_dates(c["holidays"], "calendar.holidays"),
                            _dates(c["working_days"], "calendar.working_days"),
                            frozenset(_int(y, "calendar.confirmed_years", lo=1950)
                                      for y in years))
    both = cal.holidays & cal.working_days
    if both:
        raise PolicyError(f"calendar.holidays: {min(both)} is also in calendar.working_days; "
                          "keep it in one list")

    promos = []
    raw = d["promotions"]
    if not isinstance(raw, list):
        raise PolicyError("promotions: must be an array of tables ([[promotions]])")
    for i, pr in enumerate(raw):
        w = f"promotions[{i}]"
        if not isinstance(pr, dict):
            raise PolicyError(f"{w}: must be a table")
        _check_keys(pr, {"name", "from", "to", "customers"}, w)
        promo = Promotion(_str(_get(pr, "name", w), f"{w}.name"),
                          _date(_get(pr, "from", w), f"{w}.from"),
                          _date(_get(pr, "to", w), f"{w}.to"),
                          _strs(pr.get("customers", ["*"]), f"{w}.customers"))
        if promo.start > promo.end:
            raise PolicyError(f"{w}.from: must not be after {w}.to")
        promos.append(promo)

    dt = d["dispatch"]
    times = tuple(_time(t, "dispatch.slot_times") for t in _strs(dt["slot_times"],
                                                                  "dispatch.slot_times"))
    if not times:
        raise PolicyError("dispatch.slot_times: list at least one appointment start time")
    dispatch = Dispatch(times, _num(dt["max_distance_km"], "dispatch.max_distance_km"),
                        _int(dt["search_working_days"], "dispatch.search_working_days", lo=1))
    pr_t = d["preparation"]
    prep_findings = pr_t["findings"]
    if not isinstance(prep_findings, dict):
        raise PolicyError("preparation.findings: must be a table of code = [items]")
    preparation = Preparation(
        _strs(pr_t["always"], "preparation.always"),
        tuple((str(k), _strs(v, f"preparation.findings.{k}"))
              for k, v in sorted(prep_findings.items())))
    checklist = _strs(d["checklist"]["items"], "checklist.items")

    bases = _strs(d["bases"], "bases")
    if not bases:
        raise PolicyError("bases: list at least one technician base city")
    return OnsitePolicy(
        currency=_str(d["currency"], "currency"), bases=bases, hours=hours, tiers=tuple(tiers),
        services=tuple(services), pricing=pricing, eligibility=elig,
        followup_working_days=_int(d["followup"]["delay_working_days"],
                                   "followup.delay_working_days"),
        calendar=cal, promotions=tuple(promos), dispatch=dispatch, preparation=preparation,
        checklist=checklist)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise PolicyError(f"{path}: cannot read the policy file ({e.strerror})") from e
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{path}: not valid TOML ({e}); fix the syntax") from e


#: The operator's policy file in the server's home (optional).
HOME_POLICY = "onsite-policy.toml"


def load_home_policy(home: Path) -> OnsitePolicy:
    """The policy in force for the server whose home is ``home``."""
    path = home / HOME_POLICY
    return load_policy(path if path.is_file() else None)


def load_policy(path: Path | None = None) -> OnsitePolicy:
    """The defaults, with the operator's file at `path` (if any) deep-merged over them."""
    data = _read(DEFAULT_POLICY_PATH)
    if path is not None:
        data = _merge(data, _read(path), "")
    return _build(data)


def policy_as_json(p: OnsitePolicy) -> dict[str, Any]:
    """The policy in force, JSON-able, with stable keys (`hw-server onsite policy --json`)."""
    return {
        "currency": p.currency,
        "bases": list(p.bases),
        "hours": {"start": p.hours.start.strftime("%H:%M"), "end": p.hours.end.strftime("%H:%M"),
                  "timezone": p.hours.timezone},
        "tiers": {t.tier: {"covered": t.covered, "lead_working_days": t.lead_working_days,
                           "travel_fee": t.travel_fee} for t in p.tiers},
        "services": {s.name: {"label": s.label, "hours": s.hours, "base_fee": s.base_fee,
                              "difficulty": s.difficulty, "onsite_work": s.onsite_work,
                              "customer_kinds": list(s.customer_kinds)} for s in p.services},
        "pricing": {
            "free_km": p.pricing.free_km, "per_km": p.pricing.per_km,
            "per_extra_hour": p.pricing.per_extra_hour,
            "individual_min": p.pricing.individual_min,
            "individual_max": p.pricing.individual_max,
            "clamp_kinds": list(p.pricing.clamp_kinds),
            "overtime_rate": p.pricing.overtime_rate, "urgent_rate": p.pricing.urgent_rate,
            "difficulty": dict(p.pricing.difficulty),
        },
        "eligibility": {
            "contract_kinds": list(p.eligibility.contract_kinds),
            "remote_first_kinds": list(p.eligibility.remote_first_kinds),
            "qualifying_case_states": list(p.eligibility.qualifying_case_states),
            "promotion_visit_free": p.eligibility.promotion_visit_free,
        },
        "followup": {"delay_working_days": p.followup_working_days},
        "calendar": {"holidays": sorted(d.isoformat() for d in p.calendar.holidays),
                     "working_days": sorted(d.isoformat() for d in p.calendar.working_days),
                     "confirmed_years": sorted(p.calendar.confirmed_years)},
        "dispatch": {"slot_times": [t.strftime("%H:%M") for t in p.dispatch.slot_times],
                     "max_distance_km": p.dispatch.max_distance_km,
                     "search_working_days": p.dispatch.search_working_days},
        "preparation": {"always": list(p.preparation.always),
                        "findings": {k: list(v) for k, v in p.preparation.findings}},
        "checklist": {"items": list(p.checklist)},
        "promotions": [{"name": pr.name, "from": pr.start.isoformat(), "to": pr.end.isoformat(),
                        "customers": list(pr.customers)} for pr in p.promotions],
    }
