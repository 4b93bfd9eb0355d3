"""On-site tickets: escalation, offered slots, booking, the visit, sign-off, follow-up, report.

A ticket is born from a case (automatically when the case reaches ``needs-onsite``, or by
hand with ``hw-tech escalate``) and walks::

    proposed -> booked -> prepared -> on-site -> confirmed -> followed-up -> closed
         \\-> not-eligible            (ineligible or uncovered: remote alternatives instead)
    booked | prepared -> rescheduled -> booked ...   any state before on-site -> cancelled

Every transition is timestamped in ``ticket_events`` and in the audit log. Sign-off happens
on site (``on-site`` with ``resolved`` and ``root_cause`` recorded); the customer's signed
confirmation moves the ticket to ``confirmed``. The fee is settled at sign-off: the quoted
total when resolved; nothing when unresolved because of a product defect or a service
failure; the service's base fee (at most the quoted total) when unresolved because of the
customer's device or a third party.

Nothing is booked without the customer's acceptance: a slot the customer accepted through
the agent (signed with the agent's key) or by phone (recorded by a named technician).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from proto import messages as m
from proto.ticketstatus import waits_for_slots
from proto.timefmt import human_time

from ..cases import MOVES as CASE_MOVES
from ..cases import Event as CaseEvent
from ..store import NotFound, Store, StoreError
from ..store.schema import cases
from .calendar import WorkCalendar
from .coverage import City, nearest_base, resolve_city
from .dispatch import FieldTech, occupied_hours, rank, visit_end
from .eligibility import REMOTE_ALTERNATIVES, ContractState
from .errors import UnknownCity
from .policy import OnsitePolicy
from .quote import Quote, quote
from .tables import (
    contract_visits,
    field_techs,
    tech_day_visits,
    tech_hours,
    ticket_events,
    tickets,
)


class TicketError(StoreError):
    """A ticket operation that cannot be done now; the message says why and what to do."""


class SlotTaken(TicketError):
    """No technician is free for that slot any more."""


class CityNotKnown(TicketError):
    """The customer's city is not in the coverage data: nothing can be quoted or proposed
    (:class:`~server.onsite.errors.UnknownCity`, raised by the pure coverage module, as a
    ticket error with what to do)."""


S = m.TicketState
#: States from which a slot can be booked.
BOOKABLE = (S.PROPOSED, S.RESCHEDULED)
#: Ticket states that are over: a new escalation of the case opens a new ticket.
FINISHED = (S.CLOSED, S.CANCELLED, S.NOT_ELIGIBLE)
#: Allowed moves by a technician (sign-off, confirmation and booking have their own paths).
MOVES: dict[m.TicketState, tuple[m.TicketState, ...]] = {
    S.PROPOSED: (S.RESCHEDULED, S.CANCELLED),  # rescheduled: propose new slots
    S.RESCHEDULED: (S.RESCHEDULED, S.CANCELLED),
    S.BOOKED: (S.PREPARED, S.RESCHEDULED, S.CANCELLED),
    S.PREPARED: (S.ON_SITE, S.RESCHEDULED, S.CANCELLED),
    S.ON_SITE: (S.ON_SITE,),  # sign-off
    S.CONFIRMED: (S.FOLLOWED_UP,),
    S.FOLLOWED_UP: (S.CLOSED,),
}
SERVICE_DEFAULT = "hardware-repair"
MAX_BOOKING_ATTEMPTS = 20

_findings = msgspec.json.Decoder(list[m.Finding])
_slots = msgspec.json.Decoder(list[m.SlotOffer])
_reports = msgspec.json.Decoder(list[m.ProbeReport])
_fix = msgspec.json.Decoder(m.FixReport)


def ticket_number(day: str, seq: int) -> str:
    return f"TK-{day}-{seq:04d}"


@dataclass(frozen=True)
class Context:
    """What a quote for this ticket needs, read from the store."""

    customer: str
    customer_kind: str
    city: City
    distance_km: float
    contract_id: str | None
    contract: ContractState | None
    case_state: str


class OnsiteDesk:
    """The on-site service desk over the store (all times are passed in as ``now``)."""

    def __init__(self, store: Store, policy: OnsitePolicy,
                 calendar: WorkCalendar | None = None) -> None:
        self.store = store
        self.policy = policy
        self._calendar = calendar

    @property
    def calendar(self) -> WorkCalendar:
        """Built on first use: the holiday tables cost ~9 MiB and 0.1 s of every server
        start (a restart with thousands of agents waiting), and most servers never quote."""
        if self._calendar is None:
            self._calendar = WorkCalendar(self.policy)
        return self._calendar

    # -- field technicians -------------------------------------------------------------

    async def add_field_tech(self, *, name: str, base: str, skills: Sequence[str],
                             capacity: int, now: datetime) -> FieldTech:
        name = name.strip()
        if not name or len(name) > 128:
            raise TicketError("a field technician needs a name of 1-128 characters")
        try:
            base_city = resolve_city(base)
        except UnknownCity as exc:
            raise TicketError(str(exc)) from None
        unknown = [s for s in skills if s not in {sv.name for sv in self.policy.services}]
        if unknown or not skills:
            raise TicketError(f"unknown or missing skills {unknown or skills!r}; use service "
                              f"names of the policy: "
                              f"{', '.join(s.name for s in self.policy.services)}")
        if capacity < 1:
            raise TicketError("--capacity must be at least 1 visit per day")
        tech = FieldTech(name, base_city.name, tuple(skills), capacity)
        try:
            async with self.store._tx(write=True) as conn:
                await conn.execute(sa.insert(field_techs).values(
                    name=name, base=base_city.name, skills=",".join(skills),
                    daily_capacity=capacity, active=True, created_at=now))
        except IntegrityError:
            raise TicketError(f"field technician {name!r} exists already") from None
        await self.store.append_audit(event="field_tech.added", actor="operator", subject=name,
                                      now=now, detail={"base": base_city.name,
                                                       "skills": list(skills),
                                                       "capacity": capacity})
        return tech

    async def field_techs(self) -> list[FieldTech]:
        async with self.store._tx(write=False) as conn:
            rows = (await conn.execute(sa.select(field_techs).order_by(field_techs.c.name))
                    ).all()
        return [FieldTech(r.name, r.base, tuple(r.skills.split(",")), int(r.daily_capacity),
                          bool(r.active)) for r in rows]

    # -- reading -----------------------------------------------------------------------

    async def get(self, ticket_id: str) -> m.TicketInfo:
        async with self.store._tx(write=False) as conn:
            row = (await conn.execute(sa.select(tickets).where(
                tickets.c.ticket_id == ticket_id))).one_or_none()
            if row is None:
                raise NotFound(f"no ticket {ticket_id}; list tickets with `hw-tech tickets`")
            events = (await conn.execute(sa.select(ticket_events).where(
                ticket_events.c.ticket_id == ticket_id).order_by(ticket_events.c.id))).all()
        return self._info(row, events)

    async def open_ticket(self, case_number: str) -> str | None:
        """The case's ticket that is not finished, if any (at most one: escalating a case
        with an open ticket proposes that one again). One query on the case's index."""
        async with self.store._tx(write=False) as conn:
            found = (await conn.execute(sa.select(tickets.c.ticket_id).where(
                tickets.c.case_number == case_number,
                tickets.c.state.not_in([s.value for s in FINISHED])).limit(1))).scalar()
        return None if found is None else str(found)

    async def tickets(self, *, state: m.TicketState | None = None, agent_id: str | None = None,
                   followup_due_on: date | None = None, limit: int = 500,
                   visits_of: str | None = None, cases_of: str | None = None
                   ) -> list[m.TicketInfo]:
        """The newest ``limit`` tickets matching the filters, newest first.

        ``visits_of`` and ``cases_of`` narrow the list to what one technician may see
        (:func:`server.access.ticket_scope`): the tickets booked for ``visits_of`` and/or
        the tickets of the cases ``cases_of`` owns or that are unassigned (either, when both
        are given). They are filtered in this query, before its limit, so newer tickets of
        others never push a technician's own out of the list.
        """
        query = sa.select(tickets).order_by(tickets.c.created_at.desc()).limit(limit)
        shown: list[sa.ColumnElement[bool]] = []
        if visits_of is not None:
            shown.append(tickets.c.technician == visits_of)
        if cases_of is not None:
            shown.append(sa.exists().where(  # the cases' unique number index
                cases.c.number == tickets.c.case_number,
                sa.or_(cases.c.owner == cases_of, cases.c.owner.is_(None))))
        if shown:
            query = query.where(sa.or_(*shown))
        if state is not None:
            query = query.where(tickets.c.state == state.value)
        if agent_id is not None:
            query = query.where(tickets.c.agent_id == agent_id)
        if followup_due_on is not None:
            query = query.where(tickets.c.state.in_([S.ON_SITE.value, S.CONFIRMED.value]),
                                tickets.c.followup_due <= followup_due_on)
        async with self.store._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [self._info(r, [], brief=True) for r in rows]

    def _info(self, r: Any, events: Sequence[Any], *, brief: bool = False) -> m.TicketInfo:
        q = json.loads(r.quote)
        info = m.TicketInfo(
            ticket=r.ticket_id, case=r.case_number, agent_id=r.agent_id, customer=r.customer,
            state=m.TicketState(r.state), created_at=r.created_at, updated_at=r.updated_at,
            reason=r.reason[:4096], service=r.service, city=r.city, tier=r.tier,
            eligible=bool(r.eligible), covered=bool(r.covered),
            provisional=bool(r.provisional), currency=r.currency,
            reasons=[str(x)[:4096] for x in q.get("reasons", [])][:64],
            alternatives=[str(x)[:4096] for x in q.get("alternatives", [])][:64],
            price_items=[m.PriceItem(name=i["name"][:4096], amount=int(i["amount"]))
                         for i in q.get("items", [])][:32],
            total=r.total, free_visit=bool(r.free_visit),
            slots=_slots.decode(r.slots)[:3],
            booked_start=_local(r.booked_start, self.policy),
            booked_end=_local(r.booked_end, self.policy), technician=r.technician,
            accepted_by=r.accepted_by,
            preparation=json.loads(r.preparation)[:64], checklist=json.loads(r.checklist)[:64],
            findings=[] if brief else _findings.decode(r.findings)[:64],
            fixes=[] if brief else json.loads(r.fixes)[:64],
            resolved=r.resolved, root_cause=(m.RootCause(r.root_cause) if r.root_cause
                                             else None),
            signoff_note=r.signoff_note[:4096], fee=r.fee,
            confirmed=r.confirmation is not None, followup_due=r.followup_due,
            followup_resolved=r.followup_resolved, satisfaction=r.satisfaction,
            history=[m.CaseEvent(state=e.state, at=e.at, actor=e.actor[:128],
                                 note=e.note[:4096]) for e in events][-256:],
        )
        if not brief and info.booked_start is not None:
            info = msgspec.structs.replace(info, ics=appointment_ics(info))
        return info

    # -- escalation --------------------------------------------------------------------

    async def _context(self, case: Any, now: datetime, *, releasing: str | None = None
                       ) -> Context:
        """Raises CityNotKnown. ``releasing``: a ticket whose booking is being released
        (a reschedule): its free visit counts as unused."""
        agent = await self.store.get_agent(case.agent_id)
        if agent is None:
            raise NotFound(f"the agent of case {case.number} is unknown")
        try:
            city = resolve_city(agent.city)
        except UnknownCity as exc:
            raise CityNotKnown(f"the customer's city is not known to the coverage data "
                               f"({exc}); correct the customer's city, then escalate "
                               "again") from None
        _base, km = nearest_base(city, self.policy.bases)
        today = now.astimezone(self.policy.hours.tz).date()
        contract_id, contract = None, None
        for c in await self.store.list_contracts(customer=agent.customer):
            if c.valid_from <= today <= c.valid_to:
                used = await self.contract_used(c.contract_id, releasing=releasing)
                contract_id = c.contract_id
                contract = ContractState(free_visits=c.free_visits, used=used, rate=c.rate,
                                         valid_from=c.valid_from, valid_to=c.valid_to)
                break
        return Context(agent.customer, agent.kind, city, km, contract_id, contract, case.state)

    async def contract_used(self, contract_id: str, *, releasing: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(contract_visits).where(
            contract_visits.c.contract_id == contract_id)
        if releasing is not None:
            query = query.where(contract_visits.c.ticket_id != releasing)
        async with self.store._tx(write=False) as conn:
            return int((await conn.execute(query)).scalar_one())

    def _quote(self, ctx: Context, service: str, when: datetime, now: datetime) -> Quote:
        today = now.astimezone(self.policy.hours.tz).date()
        return quote(policy=self.policy, calendar=self.calendar,
                     customer_kind=ctx.customer_kind, contract=ctx.contract, city=ctx.city,
                     distance_km=ctx.distance_km, service=service, when=when, urgent=False,
                     now=now, case_state=ctx.case_state,
                     promotion=self.policy.active_promotion(ctx.customer, today) is not None)

    async def escalate(self, case_number: str, *, reason: str, actor: str, now: datetime,
                       service: str = SERVICE_DEFAULT) -> tuple[m.TicketInfo, bool]:
        """Open a ticket for the case, or return its open one (``(ticket, created)``)."""
        try:
            self.policy.service(service)
        except KeyError as exc:
            raise TicketError(str(exc.args[0])) from None
        case = await self.store.get_case(case_number)
        if case is None:
            raise NotFound(f"no case {case_number}; list cases with `hw-tech cases`")
        open_id = await self.open_ticket(case_number)
        if open_id is not None:  # proposing again: slots from the field technicians now
            return await self.propose_again(open_id, actor=actor, now=now,
                                            why=f"escalated again: {reason}"), False
        findings, fixes = await self._evidence(case_number)
        preparation = self.policy.preparation.for_findings([f.code for f in findings])
        checklist = list(self.policy.checklist)
        values: dict[str, Any] = dict(
            case_number=case_number, agent_id=case.agent_id, customer=case.customer,
            reason=reason, service=service, currency=self.policy.currency,
            preparation=json.dumps(preparation, ensure_ascii=False),
            checklist=json.dumps(checklist, ensure_ascii=False),
            findings=msgspec.json.encode(findings).decode(),
            fixes=json.dumps(fixes, ensure_ascii=False), signoff_note="", free_visit=False,
            case_opened_at=case.opened_at, created_at=now, updated_at=now, slots="[]")
        try:
            ctx = await self._context(case, now)
        except CityNotKnown as exc:
            values.update(customer_kind="unknown", city="?", tier="?", eligible=False,
                          covered=False, provisional=False, state=S.NOT_ELIGIBLE.value,
                          quote=json.dumps({"reasons": [str(exc)],
                              "alternatives": list(REMOTE_ALTERNATIVES)},
                             ensure_ascii=False))
            return await self._insert(values, actor, now), True
        values.update(customer_kind=ctx.customer_kind, contract_id=ctx.contract_id,
                      city=ctx.city.name, tier=ctx.city.tier)
        slots, probe, quote_json = await self._proposal(ctx, service, now)
        eligible = probe.eligible
        values.update(
            eligible=eligible, covered=probe.covered, provisional=probe.provisional,
            state=(S.PROPOSED if eligible else S.NOT_ELIGIBLE).value,
            quote=json.dumps(quote_json, ensure_ascii=False),
            total=probe.price.total if probe.price else None, free_visit=probe.free_visit,
            slots=msgspec.json.encode(slots if eligible else []).decode())
        return await self._insert(values, actor, now), True

    async def _proposal(self, ctx: Context, service: str, now: datetime, *,
                        releasing: str | None = None
                        ) -> tuple[list[m.SlotOffer], Quote, dict[str, Any]]:
        """Slots from the field technicians on record now, the quote they rest on (the
        first slot's, else the earliest standard date's) and the quote's JSON.
        ``releasing``: a ticket whose booking is being released; its hours count as free."""
        slots, first = self._propose(ctx, service, now,
                                     await self._occupancy(now, releasing=releasing))
        probe = first or self._quote(ctx, service, self._first_standard(ctx, now), now)
        quote_json = _quote_json(probe)
        if probe.eligible and not slots:
            quote_json["reasons"].append(
                "no field technician with this skill covers the city in the next "
                f"{self.policy.dispatch.search_working_days} working days; add one "
                "(`hw-server field-tech add`): the ticket is proposed again then (or with "
                "`hw-tech escalate`, `hw-tech book`, `hw-tech ticket reschedule`)")
        if not probe.eligible and not quote_json["alternatives"]:
            quote_json["alternatives"] = list(REMOTE_ALTERNATIVES)
        return (slots if probe.eligible else []), probe, quote_json

    @staticmethod
    def needs_slots(info: m.TicketInfo, now: datetime) -> bool:
        """An eligible offer (proposed or rescheduled) with no slot still ahead
        (:func:`proto.ticketstatus.waits_for_slots`, what every reader prints): proposing
        again cannot disturb an offer the customer may be looking at."""
        return waits_for_slots(info, now)

    async def propose_again(self, ticket_id: str, *, actor: str, now: datetime, why: str
                            ) -> m.TicketInfo:
        """Recompute the slots of an offer from the field technicians on record now.

        Done when the offer has no slot ahead (:meth:`needs_slots`; a reschedule proposes
        always, in :meth:`move`); otherwise the ticket is returned as it is. The quote's reasons are
        recomputed with the slots (a "no field technician" reason goes once one covers
        the city). The ticket keeps its state; its history notes the new proposal.

        Raises:
            TicketError: nothing can be proposed (CityNotKnown: the customer's city is not
                in the coverage data) or the ticket changed meanwhile; nothing is changed.
        """
        info = await self.get(ticket_id)
        if not self.needs_slots(info, now):
            return info
        values, note, count = await self._new_proposal(info, why=why, now=now)
        async with self.store._tx(write=True) as conn:
            done = await conn.execute(sa.update(tickets).where(
                tickets.c.ticket_id == ticket_id, tickets.c.state == info.state.value,
            ).values(updated_at=now, **values))
            if done.rowcount != 1:
                raise TicketError(f"ticket {ticket_id} changed meanwhile; look at it again")
            await conn.execute(sa.insert(ticket_events).values(
                ticket_id=ticket_id, state=info.state.value, at=now, actor=actor, note=note))
        await self._audit_proposal(info, count, note, actor=actor, now=now)
        return await self.get(ticket_id)

    async def _new_proposal(self, info: m.TicketInfo, *, why: str, now: datetime,
                            releasing: bool = False) -> tuple[dict[str, Any], str, int]:
        """The ticket's new slots and quote, computed before anything is written: the
        column values, the history note and the number of slots. ``releasing``: its
        booking is being released in the same write (a reschedule)."""
        case = await self.store.get_case(info.case)
        if case is None:
            raise NotFound(f"the case {info.case} of ticket {info.ticket} is gone")
        own = info.ticket if releasing else None
        ctx = await self._context(case, now, releasing=own)  # CityNotKnown: nothing written
        slots, probe, quote_json = await self._proposal(ctx, info.service, now, releasing=own)
        note = (f"{why}: {len(slots)} slot{'s' if len(slots) != 1 else ''} proposed from the "
                "field technicians on record" if slots else
                f"{why}: no slot to propose ({'; '.join(quote_json['reasons'][-1:])})")
        values: dict[str, Any] = dict(
            slots=msgspec.json.encode(slots).decode(),
            quote=json.dumps(quote_json, ensure_ascii=False), provisional=probe.provisional,
            free_visit=probe.free_visit, covered=probe.covered)
        if probe.price is not None:
            values["total"] = probe.price.total
        return values, note, len(slots)

    async def _audit_proposal(self, info: m.TicketInfo, count: int, note: str, *, actor: str,
                              now: datetime) -> None:
        await self.store.append_audit(event="ticket.proposed-again", actor=actor,
                                      subject=info.ticket, now=now,
                                      detail={"case": info.case, "slots": count,
                                              "note": note[:300]})

    async def propose_waiting(self, *, actor: str, now: datetime) -> list[m.TicketInfo]:
        """Propose again every offer with no slot ahead (after a field technician is
        added); returns those that have slots now."""
        async with self.store._tx(write=False) as conn:
            ids = (await conn.execute(sa.select(tickets.c.ticket_id).where(
                tickets.c.state.in_([s.value for s in BOOKABLE]), tickets.c.eligible.is_(True)
            ).order_by(tickets.c.created_at))).scalars().all()
        out = []
        for ticket_id in ids:
            info = await self.get(ticket_id)
            if not self.needs_slots(info, now):
                continue
            try:
                again = await self.propose_again(ticket_id, actor=actor, now=now,
                                                 why="a field technician was added")
            except (TicketError, NotFound):
                continue  # changed meanwhile or no longer quotable: left as it is
            if again.slots:
                out.append(again)
        return out

    def _first_standard(self, ctx: Context, now: datetime) -> datetime:
        tz = self.policy.hours.tz
        tier = self.policy.tier(ctx.city.tier)
        day = self.calendar.add_working_days(now.astimezone(tz).date(),
                                             tier.lead_working_days if tier.covered else 0)
        return max(datetime.combine(day, self.policy.dispatch.slot_times[0], tz), now)

    async def _insert(self, values: dict[str, Any], actor: str, now: datetime
                      ) -> m.TicketInfo:
        day = now.astimezone(self.policy.hours.tz).strftime("%Y%m%d")
        for _attempt in range(MAX_BOOKING_ATTEMPTS):
            try:
                async with self.store._tx(write=True) as conn:
                    count = (await conn.execute(sa.select(sa.func.count()).select_from(
                        tickets).where(tickets.c.ticket_id.like(f"TK-{day}-%")))).scalar_one()
                    ticket_id = ticket_number(day, int(count) + 1)
                    await conn.execute(sa.insert(tickets).values(ticket_id=ticket_id, **values))
                    await conn.execute(sa.insert(ticket_events).values(
                        ticket_id=ticket_id, state=values["state"], at=now, actor=actor,
                        note=values["reason"]))
                break
            except IntegrityError:
                continue  # another node took the number; count again
        else:
            raise TicketError("could not allocate a ticket number; retry")
        await self.store.append_audit(
            event=f"ticket.{values['state']}", actor=actor, subject=ticket_id, now=now,
            detail={"case": values["case_number"], "reason": values["reason"][:300],
                    "service": values["service"], "city": values["city"]})
        return await self.get(ticket_id)

    async def _evidence(self, case_number: str) -> tuple[list[m.Finding], list[str]]:
        findings: dict[str, m.Finding] = {}
        fixes: list[str] = []
        for r in await self.store.list_results(case_number):
            if not r.ok or not r.payload:
                continue
            if r.action == m.Action.DIAG.value:
                for report in _reports.decode(r.payload):
                    for f in report.findings:
                        if f.severity is not m.Severity.INFO:
                            findings[f.code] = f  # the newest reading of each code wins
            elif r.action == m.Action.FIX.value:
                fx = _fix.decode(r.payload)
                name = fx.plan.fixer if fx.plan else "?"
                fixes.append(f"{r.received_at:%Y-%m-%d %H:%M} {name}: {fx.decision.value}"
                             + (f", applied, {'verified' if fx.verified else 'NOT verified'}"
                                if fx.applied else "")
                             + (f" ({fx.outcome[:200]})" if fx.outcome else ""))
        hardware = sorted(findings.values(), key=lambda f: (f.category is not
                                                            m.Category.HARDWARE, f.code))
        return hardware[:64], fixes[-64:]

    # -- slots -------------------------------------------------------------------------

    async def _occupancy(self, now: datetime, *, releasing: str | None = None
                         ) -> tuple[set[tuple[str, datetime]], dict[tuple[str, date], int],
                                    dict[str, int], list[FieldTech]]:
        """Busy technician-hours, day visits and load; ``releasing``: without that
        ticket's own booking (it is being released in the same write)."""
        hours = sa.select(tech_hours).where(tech_hours.c.hour_start >= now - timedelta(days=1))
        # days from today on: the capacity to check, and the load that dispatch weighs
        day_visits = sa.select(
            tech_day_visits.c.technician, tech_day_visits.c.day, sa.func.count()).where(
            tech_day_visits.c.day >= now.astimezone(self.policy.hours.tz).date()
            - timedelta(days=1))
        if releasing is not None:
            hours = hours.where(tech_hours.c.ticket_id != releasing)
            day_visits = day_visits.where(tech_day_visits.c.ticket_id != releasing)
        async with self.store._tx(write=False) as conn:
            busy = {(r.technician, r.hour_start) for r in (await conn.execute(hours)).all()}
            day_rows = (await conn.execute(day_visits.group_by(
                tech_day_visits.c.technician, tech_day_visits.c.day))).all()
        days = {(t, d): int(n) for t, d, n in day_rows}
        load: dict[str, int] = {}
        for (t, _d), n in days.items():
            load[t] = load.get(t, 0) + n
        return busy, days, load, await self.field_techs()

    def _propose(self, ctx: Context, service: str, now: datetime, occ: Any
                 ) -> tuple[list[m.SlotOffer], Quote | None]:
        """Up to three slots on different working days from the earliest standard date,
        each with a free technician and its own price."""
        busy, days, load, techs = occ
        tz = self.policy.hours.tz
        svc = self.policy.service(service)
        start_day = self._first_standard(ctx, now).date()
        offers: list[m.SlotOffer] = []
        first: Quote | None = None
        day, looked = start_day, 0
        while len(offers) < 3 and looked < self.policy.dispatch.search_working_days:
            if self.calendar.is_working_day(day):
                looked += 1
                for t in self.policy.dispatch.slot_times:
                    start = datetime.combine(day, t, tz)
                    if start < now:
                        continue
                    end = visit_end(start, svc.hours)
                    if not rank(techs, city=ctx.city, service=service, start=start, end=end,
                                local_day=day, busy=busy, day_visits=days, load=load,
                                max_distance_km=self.policy.dispatch.max_distance_km):
                        continue
                    q = self._quote(ctx, service, start, now)
                    if not q.eligible or q.price is None:
                        return [], q
                    first = first or q
                    offers.append(m.SlotOffer(start=start, end=end, total=q.price.total,
                                              urgent=q.slot.urgent, overtime=q.slot.overtime))
                    break
            day += timedelta(days=1)
        return offers, first

    # -- booking -----------------------------------------------------------------------

    async def book(self, ticket_id: str, *, start: datetime, accepted_by: str, actor: str,
                   now: datetime, acceptance: m.SignedVisit | None = None,
                   expected_total: int | None = None) -> m.TicketInfo:
        """Book ``start`` for the ticket with the best free technician, once.

        Raises:
            TicketError: the ticket is not bookable (state, eligibility) or the price
                changed since the customer accepted it; SlotTaken: nobody is free then.
        """
        if start.tzinfo is None:
            raise TicketError("the slot needs a time zone, e.g. 2026-12-02T10:00+08:00")
        if start < now:
            raise TicketError(f"the slot {start.isoformat()} is in the past; pick a later one")
        last_reason = "no field technician is free for that slot"
        for _attempt in range(MAX_BOOKING_ATTEMPTS):
            info = await self.get(ticket_id)
            if info.state not in BOOKABLE:
                raise TicketError(f"ticket {ticket_id} is {info.state.value}; only a proposed "
                                  "or rescheduled ticket can be booked")
            if not info.eligible:
                raise TicketError(f"ticket {ticket_id} is not eligible for on-site service")
            case = await self.store.get_case(info.case)
            assert case is not None
            ctx = await self._context(case, now)
            svc = self.policy.service(info.service)
            q = self._quote(ctx, info.service, start, now)
            if not q.eligible or q.price is None:
                raise TicketError(f"the slot cannot be quoted: {'; '.join(q.reasons)}")
            if expected_total is not None and q.price.total != expected_total:
                raise TicketError(f"the price of this slot is now {q.price.total} "
                                  f"{self.policy.currency}, not the {expected_total} accepted; "
                                  "look at the offer again (`hw-agent visit show`)")
            end = visit_end(start, svc.hours)
            busy, days, load, techs = await self._occupancy(now)
            local_day = start.astimezone(self.policy.hours.tz).date()
            ranked = rank(techs, city=ctx.city, service=info.service, start=start, end=end,
                          local_day=local_day, busy=busy, day_visits=days, load=load,
                          max_distance_km=self.policy.dispatch.max_distance_km)
            if not ranked:
                raise SlotTaken(f"{last_reason} ({start.isoformat()}); choose another slot "
                                f"of ticket {ticket_id} or ask for new ones")
            cand = ranked[0]
            try:
                async with self.store._tx(write=True) as conn:
                    await self._claim(conn, ticket_id, cand.tech, start, end, local_day,
                                      ctx, q)
                    done = await conn.execute(sa.update(tickets).where(
                        tickets.c.ticket_id == ticket_id,
                        tickets.c.state.in_([s.value for s in BOOKABLE])).values(
                        state=S.BOOKED.value, booked_start=start, booked_end=end,
                        technician=cand.tech.name, accepted_by=accepted_by,
                        acceptance=acceptance.payload if acceptance else None,
                        acceptance_sig=acceptance.signature if acceptance else None,
                        total=q.price.total, free_visit=q.free_visit,
                        quote=json.dumps(_quote_json(q), ensure_ascii=False),
                        provisional=q.provisional, updated_at=now))
                    if done.rowcount != 1:
                        raise TicketError(f"ticket {ticket_id} was booked or changed "
                                          "meanwhile; look at it again")
                    note = (f"{start.astimezone(self.policy.hours.tz):%Y-%m-%d %H:%M} with "
                            f"{cand.tech.name} ({cand.distance_km:.0f} km), accepted by "
                            f"{accepted_by}, {q.price.total} {self.policy.currency}")
                    await conn.execute(sa.insert(ticket_events).values(
                        ticket_id=ticket_id, state=S.BOOKED.value, at=now, actor=actor,
                        note=note))
            except IntegrityError:
                last_reason = "the slot was taken by a concurrent booking"
                continue  # lost a race for an hour, a day slot or a free visit: look again
            await self.store.append_audit(
                event="ticket.booked", actor=actor, subject=ticket_id, now=now,
                detail={"case": info.case, "start": start.isoformat(),
                        "technician": cand.tech.name, "accepted_by": accepted_by,
                        "total": q.price.total, "signed": acceptance is not None})
            return await self.get(ticket_id)
        raise SlotTaken(f"{last_reason}; retry or choose another slot")

    async def _claim(self, conn: AsyncConnection, ticket_id: str, tech: FieldTech,
                     start: datetime, end: datetime, local_day: date, ctx: Context,
                     q: Quote) -> None:
        """Insert the rows that make this booking exclusive (IntegrityError: lost a race)."""
        for hour in occupied_hours(start, end):
            await conn.execute(sa.insert(tech_hours).values(
                technician=tech.name, hour_start=hour, ticket_id=ticket_id))
        taken = {int(n) for n in (await conn.execute(sa.select(tech_day_visits.c.visit_no)
                                                     .where(tech_day_visits.c.technician
                                                            == tech.name,
                                                            tech_day_visits.c.day
                                                            == local_day))).scalars()}
        free = [n for n in range(1, tech.daily_capacity + 1) if n not in taken]
        if not free:
            raise IntegrityError("daily capacity reached", None, Exception("capacity"))
        await conn.execute(sa.insert(tech_day_visits).values(
            technician=tech.name, day=local_day, visit_no=free[0], ticket_id=ticket_id))
        if q.free_visit and ctx.contract_id is not None and ctx.contract is not None:
            used = {int(n) for n in (await conn.execute(sa.select(contract_visits.c.visit_no)
                                                        .where(contract_visits.c.contract_id
                                                               == ctx.contract_id))).scalars()}
            left = [n for n in range(1, ctx.contract.free_visits + 1) if n not in used]
            if not left:
                raise IntegrityError("free visits used up", None, Exception("contract"))
            await conn.execute(sa.insert(contract_visits).values(
                contract_id=ctx.contract_id, visit_no=left[0], ticket_id=ticket_id,
                used_at=start))

    async def _release(self, conn: AsyncConnection, ticket_id: str) -> None:
        for table in (tech_hours, tech_day_visits, contract_visits):
            await conn.execute(sa.delete(table).where(table.c.ticket_id == ticket_id))

    # -- transitions -------------------------------------------------------------------

    async def move(self, ticket_id: str, to: m.TicketState, *, actor: str, now: datetime,
                   note: str = "", resolved: bool | None = None,
                   root_cause: m.RootCause | None = None,
                   satisfaction: int | None = None) -> m.TicketInfo:
        """A technician moves the ticket (prepare, arrive, sign off, follow up, close,
        reschedule, cancel). Refused moves change nothing."""
        info = await self.get(ticket_id)
        allowed = MOVES.get(info.state, ())
        if to not in allowed:
            nexts = ", ".join(s.value for s in allowed) or "nothing (it is finished)"
            raise TicketError(f"ticket {ticket_id} is {info.state.value}; it can move to "
                              f"{nexts}, not {to.value}")
        values: dict[str, Any] = {"state": to.value, "updated_at": now}
        event_note = note
        case_state: tuple[str, str] | None = None
        if info.state is S.ON_SITE:  # sign-off
            if resolved is None or root_cause is None:
                raise TicketError("sign-off needs the outcome (--resolved yes|no) and the root "
                                  "cause (--root-cause product-defect|service-failure|"
                                  "customer-device|third-party)")
            if info.confirmed:
                raise TicketError(f"ticket {ticket_id} is already confirmed by the customer")
            fee = self.settle(info, resolved=resolved, root_cause=root_cause)
            due = self.calendar.add_working_days(now.astimezone(self.policy.hours.tz).date(),
                                                 self.policy.followup_working_days)
            values.update(resolved=resolved, root_cause=root_cause.value, signoff_note=note,
                          signoff_at=now, fee=fee, followup_due=due)
            event_note = (f"signed off: {'resolved' if resolved else 'unresolved'}, root cause "
                          f"{root_cause.value}, fee {fee} {info.currency}; follow-up call due "
                          f"{due}" + (f"; {note}" if note else ""))
        elif to is S.FOLLOWED_UP:
            if resolved is None or satisfaction is None:
                raise TicketError("the follow-up call records --resolved yes|no and "
                                  "--satisfaction 1-5")
            values.update(followup_resolved=resolved, satisfaction=satisfaction,
                          followup_at=now)
            event_note = (f"follow-up: {'resolved' if resolved else 'NOT resolved'}, "
                          f"satisfaction {satisfaction}/5" + (f"; {note}" if note else ""))
            case_state = ((CASE_MOVES[CaseEvent.FOLLOWUP_RESOLVED].value,
                           "on-site visit confirmed resolved at follow-up")
                          if resolved and info.resolved else
                          (CASE_MOVES[CaseEvent.FOLLOWUP_NOT_RESOLVED].value,
                           f"follow-up of {ticket_id}: not resolved; reopened"))
        elif to in (S.RESCHEDULED, S.CANCELLED):
            if not note:
                raise TicketError(f"say why the ticket is {to.value} (--note)")
        proposal: tuple[dict[str, Any], str, int] | None = None
        if to is S.RESCHEDULED and info.eligible:
            # new slots from the field technicians on record now, computed before anything
            # is written (CityNotKnown refuses the move) and written with the state change
            proposal = await self._new_proposal(info, why="rescheduled", now=now,
                                                releasing=True)
            values.update(proposal[0])
        async with self.store._tx(write=True) as conn:
            if to in (S.RESCHEDULED, S.CANCELLED):
                await self._release(conn, ticket_id)
                values.update(booked_start=None, booked_end=None, technician=None,
                              accepted_by=None, acceptance=None, acceptance_sig=None)
            done = await conn.execute(sa.update(tickets).where(
                tickets.c.ticket_id == ticket_id, tickets.c.state == info.state.value
            ).values(**values))
            if done.rowcount != 1:
                raise TicketError(f"ticket {ticket_id} changed meanwhile; look at it again")
            await conn.execute(sa.insert(ticket_events).values(
                ticket_id=ticket_id, state=to.value, at=now, actor=actor, note=event_note))
            if proposal is not None:
                await conn.execute(sa.insert(ticket_events).values(
                    ticket_id=ticket_id, state=to.value, at=now, actor=actor,
                    note=proposal[1]))
        if case_state is not None:
            await self.store.set_case_state(info.case, case_state[0], actor=actor, now=now,
                                            note=case_state[1])
        await self.store.append_audit(
            event=f"ticket.{'signed-off' if info.state is S.ON_SITE else to.value}",
            actor=actor, subject=ticket_id, now=now,
            detail={"case": info.case, "from": info.state.value, "note": event_note[:300]})
        if proposal is not None:
            await self._audit_proposal(info, proposal[2], proposal[1], actor=actor, now=now)
        return await self.get(ticket_id)

    def settle(self, info: m.TicketInfo, *, resolved: bool, root_cause: m.RootCause) -> int:
        """The fee at sign-off (seed: 产品缺陷或服务失误导致的问题未解决,不收费;
        因用户设备或第三方原因未解决的,只收取基本上门费)."""
        total = info.total or 0
        if resolved:
            return total
        if root_cause in (m.RootCause.PRODUCT_DEFECT, m.RootCause.SERVICE_FAILURE):
            return 0
        return min(total, self.policy.service(info.service).base_fee)

    # -- the customer's signed decisions ------------------------------------------------

    async def customer_decision(self, decision: m.VisitDecision, signed: m.SignedVisit, *,
                                agent_id: str, now: datetime) -> tuple[m.TicketInfo, str]:
        """Apply a decision the agent signed (verified by the caller with the agent's key)."""
        info = await self.get(decision.ticket)
        if info.agent_id != agent_id or info.case != decision.case:
            raise NotFound(f"no ticket {decision.ticket} for this computer")
        actor = f"agent:{agent_id}"
        kind = decision.decision
        if kind is m.VisitDecisionKind.ACCEPT:
            if decision.start is None:
                raise TicketError("an acceptance names the slot")
            offered = {s.start for s in info.slots}
            if decision.start not in offered:
                raise TicketError("that slot was not offered for this ticket; choose one of "
                                  "`hw-agent visit show`")
            booked = await self.book(decision.ticket, start=decision.start,
                                     accepted_by="customer (signed on the agent)", actor=actor,
                                     now=now, acceptance=signed,
                                     expected_total=decision.total)
            return booked, (f"booked {human_time(booked.booked_start, self.policy.hours.tz)} "
                            f"with {booked.technician}")
        if kind is m.VisitDecisionKind.DECLINE:
            if info.state not in BOOKABLE:
                raise TicketError(f"ticket {info.ticket} is {info.state.value}; only an offer "
                                  "can be declined")
            return (await self.move(info.ticket, S.CANCELLED, actor=actor, now=now,
                                    note=f"the customer declined: {decision.note or '-'}"),
                    "declined; nothing is booked")
        # confirm
        if info.state is not S.ON_SITE or info.resolved is None:
            raise TicketError(f"ticket {info.ticket} has no sign-off to confirm yet (state "
                              f"{info.state.value})")
        if (decision.resolved, decision.root_cause, decision.fee) != (
                info.resolved, info.root_cause, info.fee):
            raise TicketError("the confirmation does not match the sign-off on record; look "
                              "at it again (`hw-agent visit show`)")
        due = info.followup_due
        async with self.store._tx(write=True) as conn:
            done = await conn.execute(sa.update(tickets).where(
                tickets.c.ticket_id == info.ticket, tickets.c.state == S.ON_SITE.value,
                tickets.c.confirmation.is_(None)).values(
                state=S.CONFIRMED.value, confirmation=signed.payload,
                confirmation_sig=signed.signature, confirmed_at=now, updated_at=now))
            if done.rowcount != 1:
                raise TicketError(f"ticket {info.ticket} changed meanwhile; look at it again")
            await conn.execute(sa.insert(ticket_events).values(
                ticket_id=info.ticket, state=S.CONFIRMED.value, at=now, actor=actor,
                note=f"service confirmation signed by the customer; follow-up call due {due}"))
        await self.store.append_audit(event="ticket.confirmed", actor=actor,
                                      subject=info.ticket, now=now,
                                      detail={"case": info.case, "fee": info.fee,
                                              "followup_due": str(due)})
        return await self.get(info.ticket), f"confirmed; follow-up call due {due}"

    async def confirmation(self, ticket_id: str) -> tuple[bytes, bytes] | None:
        """The customer's signed confirmation (payload, signature), to verify later."""
        async with self.store._tx(write=False) as conn:
            row = (await conn.execute(sa.select(tickets.c.confirmation,
                                                tickets.c.confirmation_sig).where(
                tickets.c.ticket_id == ticket_id))).one_or_none()
        if row is None:
            raise NotFound(f"no ticket {ticket_id}")
        if row.confirmation is None:
            return None
        return bytes(row.confirmation), bytes(row.confirmation_sig)

    # -- report ------------------------------------------------------------------------

    async def report(self) -> dict[str, Any]:
        """First-time-fix rate, mean time to resolution, visits by tier, free visits used,
        revenue, mean satisfaction (see ``docs/operations.md#on-site-report``)."""
        async with self.store._tx(write=False) as conn:
            rows = (await conn.execute(sa.select(tickets))).all()
            free_used = int((await conn.execute(sa.select(sa.func.count()).select_from(
                contract_visits))).scalar_one())
        signed = [r for r in rows if r.signoff_at is not None]
        first_fix = [r for r in signed if r.resolved and r.followup_resolved is not False]
        hours = [(r.signoff_at - r.case_opened_at).total_seconds() / 3600 for r in signed]
        by_tier: dict[str, int] = {}
        for r in signed:
            by_tier[r.tier] = by_tier.get(r.tier, 0) + 1
        states: dict[str, int] = {}
        for r in rows:
            states[r.state] = states.get(r.state, 0) + 1
        sats = [int(r.satisfaction) for r in rows if r.satisfaction is not None]
        return {
            "tickets": len(rows),
            "by_state": dict(sorted(states.items())),
            "visits": len(signed),
            "first_time_fix_rate": (round(len(first_fix) / len(signed), 4) if signed
                                    else None),
            "mean_time_to_resolution_hours": (round(sum(hours) / len(hours), 2) if hours
                                              else None),
            "visits_by_tier": dict(sorted(by_tier.items())),
            "free_visits_used": free_used,
            "revenue": sum(int(r.fee or 0) for r in signed),
            "currency": self.policy.currency,
            "mean_satisfaction": round(sum(sats) / len(sats), 2) if sats else None,
            "satisfaction_answers": len(sats),
        }


def _local(at: datetime | None, policy: OnsitePolicy) -> datetime | None:
    """Appointments travel in the policy's time zone (China time), offset included."""
    return None if at is None else at.astimezone(policy.hours.tz)


def _quote_json(q: Quote) -> dict[str, Any]:
    j = q.as_json()
    return {"reasons": j["reasons"], "alternatives": j["alternatives"],
            "items": (j["price"] or {}).get("items", []), "distance_km": j["distance_km"],
            "earliest_standard": j["earliest_standard"], "contract": j["contract"]}


def appointment_ics(info: m.TicketInfo) -> str:
    """The booked appointment as an iCalendar file (RFC 5545), for customer and technician."""
    from icalendar import Calendar, Event

    cal = Calendar()
    cal.add("prodid", "-//HelloWord Remote Support//on-site//EN")
    cal.add("version", "2.0")
    ev = Event()
    ev.add("uid", f"{info.ticket}@helloword")
    ev.add("dtstamp", info.updated_at)
    assert info.booked_start is not None and info.booked_end is not None
    ev.add("dtstart", info.booked_start)
    ev.add("dtend", info.booked_end)
    ev.add("summary", f"HelloWord on-site visit {info.ticket} ({info.service})")
    ev.add("location", info.city)
    lines = [f"Case {info.case}, ticket {info.ticket}",
             f"Technician: {info.technician}",
             f"Price: {info.total} {info.currency}" + (" (free visit)" if info.free_visit
                                                        else ""),
             "Before the visit / 上门前请准备:"] + [f"- {c}" for c in info.checklist]
    ev.add("description", "\n".join(lines))
    cal.add_component(ev)
    return str(cal.to_ical().decode())[:16384]

