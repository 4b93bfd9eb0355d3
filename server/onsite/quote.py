"""A quote for one on-site visit: eligibility, coverage, slot classification and price.

Pure: every date comes from the arguments (`now` is always passed in), so the same arguments
give the same quote. Times are judged in the policy's time zone (Asia/Shanghai).

Slot classification (seed: "标准上门服务时间为工作日9:00-18:00,周末和节假日上门可能需要支付加班费,
紧急服务可安排在工作时间外,但费用较高"; "需要提前3-7个工作日预约"):

* ``earliest_standard`` = the tier's ``lead_working_days``-th working day strictly after
  today (`now`'s date); a slot on an earlier date is urgent;
* a slot starting outside standard hours [start, end) is urgent; so is one the customer asks
  to be urgent;
* a slot on a weekend or holiday that is not a working day is overtime; an adjusted working
  Saturday (调休) is an ordinary working day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from .calendar import DayKind, WorkCalendar
from .eligibility import ContractState, Eligibility, assess
from .errors import QuoteError
from .policy import OnsitePolicy
from .pricing import Price, price_visit

if TYPE_CHECKING:
    from .coverage import City


@dataclass(frozen=True)
class Slot:
    when: datetime  # in the policy's time zone
    day_kind: DayKind
    urgent: bool
    overtime: bool
    reasons: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"when": self.when.isoformat(), "day_kind": self.day_kind,
                "urgent": self.urgent, "overtime": self.overtime, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Quote:
    eligible: bool
    reasons: list[str]
    covered: bool
    tier: str
    city: str
    distance_km: float
    service: str
    customer_kind: str
    earliest_standard: date | None
    provisional: bool
    slot: Slot
    pays: bool
    free_visit: bool
    price: Price | None
    currency: str
    contract: dict[str, int] | None = None
    alternatives: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "eligible": self.eligible,
            "reasons": list(self.reasons),
            "covered": self.covered,
            "tier": self.tier,
            "city": self.city,
            "distance_km": round(self.distance_km, 1),
            "service": self.service,
            "customer_kind": self.customer_kind,
            "earliest_standard": (self.earliest_standard.isoformat()
                                  if self.earliest_standard else None),
            "provisional": self.provisional,
            "slot": self.slot.as_json(),
            "pays": self.pays,
            "free_visit": self.free_visit,
            "contract": self.contract,
            "price": self.price.as_json() if self.price is not None else None,
            "currency": self.currency,
            "alternatives": list(self.alternatives),
        }


def classify_slot(*, policy: OnsitePolicy, calendar: WorkCalendar, when: datetime,
                  earliest_standard: date | None, urgent: bool) -> Slot:
    local = when.astimezone(policy.hours.tz)
    kind = calendar.day_kind(local.date())
    reasons: list[str] = []
    is_urgent = False
    if urgent:
        is_urgent = True
        reasons.append("urgent service requested (紧急上门)")
    if earliest_standard is not None and local.date() < earliest_standard:
        is_urgent = True
        reasons.append(f"before the earliest standard date {earliest_standard} "
                       "(需要提前预约): urgent")
    start, end = policy.hours.start, policy.hours.end
    if not start <= local.time().replace(tzinfo=None) < end:
        is_urgent = True
        reasons.append(f"outside standard hours {start:%H:%M}-{end:%H:%M} "
                       "(工作时间外): urgent")
    overtime = kind in ("weekend", "holiday")
    if overtime:
        reasons.append(f"on a {kind} that is not a working day (加班费): overtime")
    elif kind == "adjusted-working":
        reasons.append("an adjusted working day (调休): ordinary working day")
    return Slot(local, kind, is_urgent, overtime, tuple(reasons))


def quote(*, policy: OnsitePolicy, calendar: WorkCalendar, customer_kind: str,
          contract: ContractState | None, city: City, distance_km: float, service: str,
          when: datetime, urgent: bool, now: datetime, case_state: str | None = None,
          promotion: bool = False, hours: float | None = None) -> Quote:
    if when.tzinfo is None or now.tzinfo is None:
        raise QuoteError("`when` and `now` must carry a time zone (e.g. +08:00)")
    if when < now:
        raise QuoteError(f"the slot {when.isoformat()} is before now ({now.isoformat()})")
    tz = policy.hours.tz
    today = now.astimezone(tz).date()
    svc = policy.service(service)
    tier = policy.tier(city.tier)
    elig: Eligibility = assess(policy=policy, customer_kind=customer_kind, contract=contract,
                               case_state=case_state, service=service, city_tier=city.tier,
                               promotion_active=promotion, now=now)
    earliest = calendar.add_working_days(today, tier.lead_working_days) if tier.covered else None
    slot = classify_slot(policy=policy, calendar=calendar, when=when,
                         earliest_standard=earliest, urgent=urgent)
    last = max(slot.when.date(), earliest or today)
    provisional = calendar.any_provisional(today, last)
    reasons = list(elig.reasons)
    if provisional:
        reasons.append("the official holiday schedule for a year involved is not published "
                       "yet: working days are estimated (provisional)")
    price: Price | None = None
    if tier.covered and elig.eligible:
        price = price_visit(policy=policy, service=svc, tier=tier, customer_kind=customer_kind,
                            distance_km=distance_km, overtime=slot.overtime, urgent=slot.urgent,
                            free_visit=elig.free_basis, contract_rate=elig.contract_rate,
                            hours=hours)
    return Quote(
        eligible=elig.eligible and tier.covered, reasons=reasons, covered=tier.covered,
        tier=tier.tier, city=city.name, distance_km=distance_km, service=service,
        customer_kind=customer_kind, earliest_standard=earliest, provisional=provisional,
        slot=slot, pays=elig.pays, free_visit=elig.free_visit, price=price,
        currency=policy.currency,
        contract=contract.ledger() if contract is not None else None,
        alternatives=list(elig.alternatives))
