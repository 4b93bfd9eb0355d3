"""Review of issue 12's on-site changes: the case's open ticket is one indexed query (also
for an agent with many tickets); proposing again never fails half-way (an unknown city is
a ticket error that changes nothing); the automatic escalation never breaks the result
path."""

from __future__ import annotations

import logging
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from proto import messages as m
from server.agent_gateway import AgentGateway
from server.cases import CaseState
from server.onsite.tables import tickets
from server.onsite.tickets import CityNotKnown, OnsiteDesk, TicketError
from server.store import Store
from server.store.schema import customers
from tests.server.test_onsite_tickets import NOW, S, add_techs, desk, new_case, store

__all__ = ["desk", "store"]  # fixtures shared with test_onsite_tickets


def gateway(store: Store, desk: OnsiteDesk) -> Any:
    """The agent gateway's result path over this store and desk (nothing else is used)."""
    return AgentGateway(SimpleNamespace(store=store, desk=desk),  # type: ignore[arg-type]
                        None, None, None, None)  # type: ignore[arg-type]


def verified_fix(case: str) -> m.Result:
    """A verified fix on a case with no finding left: it would resolve the case."""
    plan = m.FixPlanInfo(fixer="process.terminate", summary="s", reversible=False)
    report = m.FixReport(decision=m.FixDecision.APPROVED, plan=plan, applied=True, ok=True,
                         verified=True)
    return m.Result(id="rs-fix", re="rq-fix", case=case, action=m.Action.FIX, ok=True,
                    fix=report)


async def customer_moved_out_of_coverage(store: Store) -> None:
    """The customer's city is no longer in the coverage data (corrected by hand, say)."""
    async with store._tx(write=True) as conn:
        await conn.execute(sa.update(customers).values(city="Atlantis"))


# -- A: the case's open ticket -------------------------------------------------------------


async def test_open_ticket_is_the_cases_unfinished_ticket(desk: OnsiteDesk,
                                                          store: Store) -> None:
    case = await new_case(store)
    other = await new_case(store, agent="ag-2")
    assert await desk.open_ticket(case) is None
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    assert await desk.open_ticket(case) == t.ticket
    assert await desk.open_ticket(other) is None
    await desk.move(t.ticket, S.CANCELLED, actor="tech:ann", now=NOW, note="customer gave up")
    assert await desk.open_ticket(case) is None


async def test_a_case_with_an_open_ticket_is_not_resolved_whatever_its_agent_has_besides(
        desk: OnsiteDesk, store: Store) -> None:
    """Bug 3's guard used to read the agent's newest 500 tickets: an older open one was
    missed and a clean diagnosis resolved its case."""
    case = await new_case(store, diag=False)  # no finding: only the ticket holds the case
    await store.set_case_state(case, CaseState.NEEDS_ONSITE.value, actor="tech:ann", now=NOW)
    t, _ = await desk.escalate(case, reason="the customer asks for a visit", actor="tech:ann",
                               now=NOW)
    assert t.state is S.PROPOSED
    async with store._tx(write=True) as conn:  # 500 newer tickets of the same agent
        row = (await conn.execute(sa.select(tickets).where(
            tickets.c.ticket_id == t.ticket))).one()._asdict()
        await conn.execute(sa.insert(tickets), [
            {**row, "ticket_id": f"TK-20261127-{i:04d}", "case_number": f"HW-20261127-{i:04d}",
             "state": S.CLOSED.value, "created_at": NOW + timedelta(minutes=i + 1)}
            for i in range(1, 501)])
    link = SimpleNamespace(agent_id="ag-1")
    gw = gateway(store, desk)
    assert await gw._guarded_state(link, verified_fix(case)) is None  # held: ticket open
    await desk.move(t.ticket, S.CANCELLED, actor="tech:ann", now=NOW, note="not needed")
    assert await gw._guarded_state(link, verified_fix(case)) is CaseState.RESOLVED


# -- B: an unknown city is a ticket error; nothing is half-done -----------------------------


async def test_escalating_an_open_offer_again_with_an_unknown_city_changes_nothing(
        desk: OnsiteDesk, store: Store) -> None:
    case = await new_case(store)
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    assert t.slots == []  # no field technician yet: the offer waits for slots
    await customer_moved_out_of_coverage(store)
    with pytest.raises(TicketError, match=r"city is not known.*correct the customer's city"):
        await desk.escalate(case, reason="by hand", actor="tech:ann", now=NOW)
    assert (await desk.get(t.ticket)).history == t.history
    await add_techs(desk)
    assert await desk.propose_waiting(actor="operator", now=NOW) == []  # left as it is


async def test_a_reschedule_that_cannot_propose_is_refused_and_keeps_the_booking(
        desk: OnsiteDesk, store: Store) -> None:
    """Slots used to be computed after the state change was committed: a failure left a
    rescheduled ticket with the old slots and its technician released."""
    await add_techs(desk)
    case = await new_case(store)
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    booked = await desk.book(t.ticket, start=t.slots[0].start, accepted_by="phone",
                             actor="tech:ann", now=NOW)
    await customer_moved_out_of_coverage(store)
    with pytest.raises(CityNotKnown):
        await desk.move(t.ticket, S.RESCHEDULED, actor="tech:ann", now=NOW,
                        note="customer travels")
    after = await desk.get(t.ticket)
    assert after.state is S.BOOKED and after.technician == booked.technician
    assert after.history == booked.history
    events = [e.event for e in await store.list_audit(subject=t.ticket)]
    assert "ticket.rescheduled" not in events and "ticket.proposed-again" not in events


async def test_a_reschedule_proposes_in_the_same_write_with_its_own_hours_free(
        desk: OnsiteDesk, store: Store) -> None:
    await add_techs(desk, capacity=1)  # one technician, one visit a day
    case = await new_case(store)
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    day1 = t.slots[0].start
    await desk.book(t.ticket, start=day1, accepted_by="phone", actor="tech:ann", now=NOW)
    moved = await desk.move(t.ticket, S.RESCHEDULED, actor="tech:ann", now=NOW,
                            note="customer travels")
    assert moved.state is S.RESCHEDULED and moved.technician is None
    assert moved.slots[0].start == day1  # the released visit is free again
    assert [h.state for h in moved.history][-2:] == ["rescheduled", "rescheduled"]
    assert moved.history[-2].note == "customer travels"
    assert moved.history[-1].note == "rescheduled: 3 slots proposed from the field " \
        "technicians on record"
    events = [e.event for e in await store.list_audit(subject=t.ticket)]
    assert events.count("ticket.rescheduled") == 1 and events.count("ticket.proposed-again") == 1


async def test_the_automatic_escalation_never_breaks_the_result_path(
        desk: OnsiteDesk, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    case = await new_case(store)
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    await customer_moved_out_of_coverage(store)
    gw = gateway(store, desk)
    with caplog.at_level(logging.WARNING, logger="hw.server"):
        await gw._escalate(case)  # a ticket error: logged with what to do
    assert f"hw-tech escalate {case}" in caplog.text and "city is not known" in caplog.text
    assert (await desk.get(t.ticket)).history == t.history

    async def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("something unforeseen")

    desk.escalate = broken  # type: ignore[method-assign,assignment]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hw.server"):
        await gw._escalate(case)
    assert "could not escalate case" in caplog.text and "something unforeseen" in caplog.text
