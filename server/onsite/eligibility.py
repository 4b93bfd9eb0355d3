"""Who gets an on-site visit, who pays, and why (every answer carries its reasons).

Order of the rules (seed: "HelloWord是否提供上门服务?答案是:视具体情况而定,有限提供"):

1. the city's tier must be covered, else not eligible (remote alternatives offered);
2. the customer kind must be allowed for the service type (policy ``customer_kinds``);
3. a contract customer (``eligibility.contract_kinds``) under a contract valid today: eligible;
   the contract's free visits are consumed first, then the contract rate (standard prices when
   the contract has no rate);
4. an active promotion campaign: eligible, free when ``promotion_visit_free``;
5. remote-first kinds (individuals, small businesses): eligible only after a remote attempt
   failed (case state in ``qualifying_case_states``), and they pay;
6. any other customer: eligible for on-site work (hardware, network, deployment, training) or a
   physical fault remote support could not fix (a qualifying case state), and pays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from .errors import EligibilityError
from .policy import CUSTOMER_KINDS, OnsitePolicy

REMOTE_ALTERNATIVES = (
    "remote assistance with your consent (远程协助)",
    "video guidance (视频指导)",
    "illustrated and video guides on the website (图文指南)",
    "the user community (用户社区)",
)


@dataclass(frozen=True)
class ContractState:
    free_visits: int
    used: int
    rate: int | None
    valid_from: date
    valid_to: date

    @property
    def remaining(self) -> int:
        return max(0, self.free_visits - self.used)

    def valid_on(self, day: date) -> bool:
        return self.valid_from <= day <= self.valid_to

    def ledger(self) -> dict[str, int]:
        return {"quota": self.free_visits, "used": self.used, "remaining": self.remaining}


@dataclass(frozen=True)
class Eligibility:
    eligible: bool
    reasons: list[str] = field(default_factory=list)
    pays: bool = False
    free_visit: bool = False
    contract_rate: int | None = None  # the visit is priced at this flat rate (contract)
    free_basis: str | None = None  # "contract" or "promotion" when free_visit
    alternatives: list[str] = field(default_factory=list)


def _remote(reasons: list[str]) -> Eligibility:
    return Eligibility(False, reasons, alternatives=list(REMOTE_ALTERNATIVES))


def assess(*, policy: OnsitePolicy, customer_kind: str, contract: ContractState | None,
           case_state: str | None, service: str, city_tier: str, promotion_active: bool,
           now: datetime) -> Eligibility:
    if customer_kind not in CUSTOMER_KINDS:
        raise EligibilityError(f"customer kind {customer_kind!r}: use one of "
                               f"{', '.join(CUSTOMER_KINDS)}")
    try:
        svc = policy.service(service)
        tier = policy.tier(city_tier)
    except KeyError as e:
        raise EligibilityError(str(e.args[0])) from e
    today = now.astimezone(policy.hours.tz).date() if now.tzinfo else now.date()
    rules = policy.eligibility

    if not tier.covered:
        return _remote([f"tier-{tier.tier} cities are not covered by on-site service; "
                        "remote support is offered instead (偏远地区可能无法覆盖,推荐远程支持)"])
    if customer_kind not in svc.customer_kinds:
        return _remote([f"{service} on site is not offered to {customer_kind} customers "
                        f"(offered to: {', '.join(svc.customer_kinds)})"])

    reasons: list[str] = []
    if contract is not None and customer_kind in rules.contract_kinds:
        if contract.valid_on(today):
            reasons.append(f"{customer_kind} customer under a service contract valid "
                           f"{contract.valid_from}..{contract.valid_to} (企业服务合同)")
            if contract.remaining > 0:
                reasons.append(f"free visit {contract.used + 1} of {contract.free_visits} "
                               "included in the contract (合同包含的免费上门)")
                return Eligibility(True, reasons, pays=False, free_visit=True,
                                   free_basis="contract")
            reasons.append(f"the contract's {contract.free_visits} free visits are used up")
            if contract.rate is not None:
                reasons.append(f"charged at the contract rate, {contract.rate} "
                               f"{policy.currency} per visit")
            else:
                reasons.append("the contract has no rate: charged at standard prices")
            return Eligibility(True, reasons, pays=True, contract_rate=contract.rate)
        reasons.append(f"the service contract is not valid on {today} "
                       f"(valid {contract.valid_from}..{contract.valid_to})")
    elif contract is not None:
        reasons.append(f"service contracts apply to {', '.join(rules.contract_kinds)} "
                       f"customers, not {customer_kind}")

    if promotion_active:
        free = rules.promotion_visit_free
        reasons.append("an on-site promotion campaign is active for this customer"
                       + (" (免费上门体验服务)" if free else ""))
        return Eligibility(True, reasons, pays=not free, free_visit=free,
                           free_basis="promotion" if free else None)

    failed_remote = case_state is not None and case_state in rules.qualifying_case_states
    if customer_kind in rules.remote_first_kinds:
        if failed_remote:
            reasons.append(f"remote support could not solve the case (state {case_state}); "
                           f"{customer_kind} customers pay for on-site visits "
                           "(远程无法解决,上门服务会产生相应费用)")
            return Eligibility(True, reasons, pays=True)
        reasons.append(f"{customer_kind} customers get on-site service only after a remote "
                       "attempt failed; try remote support first (建议先尝试远程协助)")
        return _remote(reasons)

    if failed_remote:
        reasons.append(f"a fault remote support could not fix (state {case_state}) "
                       "(远程无法解决的物理设备问题)")
        return Eligibility(True, reasons, pays=True)
    if svc.onsite_work:
        reasons.append(f"{service} needs work on site (现场硬件部署/网络配置/培训)")
        return Eligibility(True, reasons, pays=True)
    reasons.append(f"{service} can be handled remotely; remote support comes first")
    return _remote(reasons)
