"""The price of one visit, as named items in whole CNY (rounded half up).

Order of the computation:

1. service subtotal = base fee (service type) + difficulty extra (base fee x (factor - 1))
   + distance (km beyond ``free_km`` x ``per_km``) + duration (hours beyond the service's
   estimate x ``per_extra_hour``);
   a contract customer past the free visits with a contract rate: the subtotal is the rate;
2. clamp: for ``clamp_kinds`` (individuals) the subtotal is clamped to
   [``individual_min``, ``individual_max``] (seed: 300-800 元/次), shown as its own item;
3. surcharges, as rates of that subtotal: overtime (weekend/holiday) and urgent, each alone
   or both together (added, not compounded);
4. travel fee of the city's tier (tier 3 and 4: 差旅费), outside the clamp;
5. a free visit (contract quota or promotion) cancels the subtotal with a negative item; the
   surcharges and the travel fee asked for remain payable.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .policy import OnsitePolicy, ServiceType, TierRule


def cny(x: float | Decimal) -> int:
    return int(Decimal(str(x)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class PriceItem:
    name: str
    amount: int


@dataclass(frozen=True)
class Price:
    items: tuple[PriceItem, ...]
    subtotal: int
    total: int

    def as_json(self) -> dict[str, Any]:
        return {"items": [{"name": i.name, "amount": i.amount} for i in self.items],
                "subtotal": self.subtotal, "total": self.total}


def price_visit(*, policy: OnsitePolicy, service: ServiceType, tier: TierRule,
                customer_kind: str, distance_km: float, overtime: bool, urgent: bool,
                free_visit: str | None = None, contract_rate: int | None = None,
                hours: float | None = None) -> Price:
    """`free_visit` names why the visit is free ("contract", "promotion") or is None."""
    if distance_km < 0:
        raise ValueError("distance_km must be >= 0")
    p = policy.pricing
    items: list[PriceItem] = []
    if contract_rate is not None:
        items.append(PriceItem(f"contract rate per visit ({service.name})", contract_rate))
    else:
        items.append(PriceItem(f"base fee: {service.label}", service.base_fee))
        factor = p.difficulty_factor(service.difficulty)
        extra = cny(Decimal(service.base_fee) * (Decimal(str(factor)) - 1))
        if extra:
            items.append(PriceItem(f"difficulty {service.difficulty} (x{factor:g})", extra))
        over_km = max(0.0, distance_km - p.free_km)
        dist = cny(Decimal(str(over_km)) * Decimal(str(p.per_km)))
        if dist:
            items.append(PriceItem(f"distance {distance_km:.0f} km, {over_km:.0f} km beyond "
                                   f"the free {p.free_km:g} km at {p.per_km:g}/km", dist))
        if hours is not None and hours > service.hours:
            extra_h = hours - service.hours
            items.append(PriceItem(f"duration {extra_h:g} h beyond the {service.hours:g} h "
                                   f"estimate at {p.per_extra_hour}/h",
                                   cny(Decimal(str(extra_h)) * p.per_extra_hour)))
    subtotal = sum(i.amount for i in items)
    if contract_rate is None and customer_kind in p.clamp_kinds:
        clamped = min(max(subtotal, p.individual_min), p.individual_max)
        if clamped != subtotal:
            items.append(PriceItem(f"{customer_kind} visit fee kept within "
                                   f"{p.individual_min}-{p.individual_max} {policy.currency}",
                                   clamped - subtotal))
            subtotal = clamped
    if overtime:
        items.append(PriceItem(f"overtime surcharge, weekend/holiday ({p.overtime_rate:.0%})",
                               cny(Decimal(subtotal) * Decimal(str(p.overtime_rate)))))
    if urgent:
        items.append(PriceItem(f"urgent surcharge ({p.urgent_rate:.0%})",
                               cny(Decimal(subtotal) * Decimal(str(p.urgent_rate)))))
    if tier.travel_fee:
        items.append(PriceItem(f"travel fee, tier-{tier.tier} city (差旅费)", tier.travel_fee))
    if free_visit is not None:
        items.append(PriceItem(f"free visit ({free_visit})", -subtotal))
    return Price(tuple(items), subtotal, sum(i.amount for i in items))
