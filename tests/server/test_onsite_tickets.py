"""On-site tickets on a real store: escalation, slots, booking (also concurrent), the visit,
sign-off and fee settlement, confirmation, follow-up, cancellation, the report.

SQLite always; PostgreSQL too where it runs (tests/postgres.py says why it is skipped).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from proto import messages as m
from proto.receipt import sign_visit
from server.onsite.policy import load_policy
from server.onsite.tickets import OnsiteDesk, SlotTaken, TicketError
from server.store import NotFound, Store
from tests import postgres

CN = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=CN)  # Thursday
S = m.TicketState


def fan_stalled_report() -> bytes:
    finding = m.Finding(code="thermal.fan_stalled", severity=m.Severity.CRITICAL,
                        category=m.Category.HARDWARE, summary="Fan cpu_fan stands still",
                        evidence={"fan": "cpu_fan", "rpm": 0, "simulated": True})
    report = m.ProbeReport(probe="thermal", version="1", status=m.ProbeStatus.OK,
                           findings=[finding])
    return msgspec.json.encode([report])


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
        try:
            yield s
        finally:
            await s.close()
        return
    reason = await postgres.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with postgres.scratch_database() as url:
        s = await Store.open(url)
        try:
            yield s
        finally:
            await s.close()


async def new_case(store: Store, *, agent: str = "ag-1", customer: str = "Li Wei",
                   kind: str = "individual", city: str = "成都",
                   key: Ed25519PrivateKey | None = None, diag: bool = True) -> str:
    secret = agent.encode().ljust(32, b"\0")
    await store.add_enroll_token(secret_hash=secret, customer=customer, kind=kind, city=city,
                                 expires_at=NOW + timedelta(days=1), now=NOW)
    pub = (key or Ed25519PrivateKey.generate()).public_key().public_bytes(Encoding.Raw,
                                                                          PublicFormat.Raw)
    await store.redeem_enroll_token(secret_hash=secret, now=NOW, agent_id=agent,
                                    public_key=pub, hostname="pc", os="Linux",
                                    software="hw-agent test")
    case, _new = await store.open_case(agent_id=agent, description="laptop shuts down hot",
                                       request_id=f"oc-{agent}", now=NOW)
    if diag:
        await store.store_result(msg_id=f"rs-{agent}", request_id="rq-1", case=case.number,
                                 agent_id=agent, action="diag", ok=True,
                                 payload=fan_stalled_report(), error="", now=NOW,
                                 case_state="needs-onsite")
    return case.number


@pytest.fixture
def desk(store: Store) -> OnsiteDesk:
    return OnsiteDesk(store, load_policy())


async def add_techs(desk: OnsiteDesk, n: int = 1, *, capacity: int = 3,
                    base: str = "成都") -> None:
    for i in range(n):
        await desk.add_field_tech(name=f"tech{i + 1}", base=base, skills=["hardware-repair"],
                                  capacity=capacity, now=NOW)


async def test_escalation_carries_evidence_preparation_checklist_and_slots(
        desk: OnsiteDesk, store: Store) -> None:
    await add_techs(desk)
    case = await new_case(store)
    t, created = await desk.escalate(case, reason="fan broken", actor="server", now=NOW)
    assert created and t.state is S.PROPOSED and t.eligible and t.covered
    assert [f.code for f in t.findings] == ["thermal.fan_stalled"]
    assert any("fan assembly" in p for p in t.preparation)
    assert any("购买凭证" in c for c in t.checklist)
    # Chengdu is tier new-1: 3 working days lead; 2026-11-26 (Thu) -> Tue 2026-12-01
    assert t.slots[0].start == datetime(2026, 12, 1, 10, 0, tzinfo=CN)
    assert len(t.slots) == 3 and len({s.start.date() for s in t.slots}) == 3
    assert all(s.total == t.slots[0].total and not s.urgent for s in t.slots)
    assert t.total is not None and 300 <= t.total <= 800  # an individual's visit
    again, created2 = await desk.escalate(case, reason="again", actor="tech:ann", now=NOW)
    assert not created2 and again.ticket == t.ticket  # one open ticket per case


async def test_individual_before_a_remote_attempt_is_not_eligible(
        desk: OnsiteDesk, store: Store) -> None:
    await add_techs(desk)
    case = await new_case(store, diag=False)  # case still "open": no remote attempt failed
    t, _ = await desk.escalate(case, reason="wants a visit", actor="tech:ann", now=NOW)
    assert t.state is S.NOT_ELIGIBLE and not t.eligible and not t.slots
    assert t.alternatives and any("remote" in r for r in t.reasons)
    with pytest.raises(TicketError, match="not-eligible"):
        await desk.book(t.ticket, start=NOW + timedelta(days=5), accepted_by="phone",
                        actor="tech:ann", now=NOW)


async def test_uncovered_city_offers_remote_alternatives(desk: OnsiteDesk,
                                                         store: Store) -> None:
    await add_techs(desk)
    case = await new_case(store, city="拉萨")  # not covered by the default policy
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    assert t.state is S.NOT_ELIGIBLE and not t.covered and t.alternatives and not t.slots


async def test_unknown_city_is_stated_not_guessed(desk: OnsiteDesk, store: Store) -> None:
    case = await new_case(store, city="Atlantis")
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    assert t.state is S.NOT_ELIGIBLE and "not known" in t.reasons[0]


async def test_full_lifecycle_with_signed_confirmation(desk: OnsiteDesk, store: Store) -> None:
    await add_techs(desk)
    key = Ed25519PrivateKey.generate()
    case = await new_case(store, key=key)
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    slot = t.slots[1]
    accept = m.VisitDecision(ticket=t.ticket, case=case, agent_id="ag-1",
                             decision=m.VisitDecisionKind.ACCEPT, at=NOW, start=slot.start,
                             total=slot.total)
    booked, _msg = await desk.customer_decision(accept, sign_visit(accept, key),
                                                agent_id="ag-1", now=NOW)
    assert booked.state is S.BOOKED and booked.technician == "tech1"
    assert booked.booked_start == slot.start and booked.total == slot.total
    assert "BEGIN:VEVENT" in booked.ics and t.ticket in booked.ics
    with pytest.raises(TicketError, match="on-site"):  # cannot skip preparation
        await desk.move(t.ticket, S.ON_SITE, actor="tech:ann", now=NOW)
    await desk.move(t.ticket, S.PREPARED, actor="tech:ann", now=NOW)
    await desk.move(t.ticket, S.ON_SITE, actor="tech:ann", now=NOW)
    with pytest.raises(TicketError, match="root cause"):
        await desk.move(t.ticket, S.ON_SITE, actor="tech:ann", now=NOW, resolved=True)
    signed_off = await desk.move(t.ticket, S.ON_SITE, actor="tech:ann", now=NOW,
                                 resolved=True, root_cause=m.RootCause.PRODUCT_DEFECT,
                                 note="fan replaced")
    assert signed_off.fee == slot.total  # resolved: the quoted total
    wrong = m.VisitDecision(ticket=t.ticket, case=case, agent_id="ag-1",
                            decision=m.VisitDecisionKind.CONFIRM, at=NOW, resolved=True,
                            root_cause=m.RootCause.PRODUCT_DEFECT, fee=1)
    with pytest.raises(TicketError, match="does not match"):
        await desk.customer_decision(wrong, sign_visit(wrong, key), agent_id="ag-1", now=NOW)
    confirm = msgspec.structs.replace(wrong, fee=signed_off.fee)
    confirmed, _ = await desk.customer_decision(confirm, sign_visit(confirm, key),
                                                agent_id="ag-1", now=NOW)
    assert confirmed.state is S.CONFIRMED and confirmed.confirmed
    assert confirmed.followup_due == date(2026, 11, 30)  # 2 working days after Thu
    stored = await desk.confirmation(t.ticket)
    assert stored is not None and json.loads(stored[0])["fee"] == signed_off.fee
    done = await desk.move(t.ticket, S.FOLLOWED_UP, actor="tech:ann", now=NOW, resolved=True,
                           satisfaction=5)
    assert done.followup_resolved is True and done.satisfaction == 5
    closed = await desk.move(t.ticket, S.CLOSED, actor="tech:ann", now=NOW)
    assert [h.state for h in closed.history] == ["proposed", "booked", "prepared", "on-site",
                                                 "on-site", "confirmed", "followed-up",
                                                 "closed"]
    assert (await store.get_case(case)).state == "closed"  # type: ignore[union-attr]
    report = await desk.report()
    assert report["first_time_fix_rate"] == 1.0 and report["revenue"] == slot.total
    assert report["visits_by_tier"] == {"new-1": 1}
    audit = [e.event for e in await store.list_audit(subject=t.ticket)]
    assert audit[:2] == ["ticket.proposed", "ticket.booked"] and "ticket.confirmed" in audit


@pytest.mark.parametrize(("resolved", "cause", "fee"), [
    (False, m.RootCause.PRODUCT_DEFECT, "none"),
    (False, m.RootCause.SERVICE_FAILURE, "none"),
    (False, m.RootCause.CUSTOMER_DEVICE, "base"),
    (False, m.RootCause.THIRD_PARTY, "base"),
    (True, m.RootCause.CUSTOMER_DEVICE, "total"),
])
async def test_fee_settled_by_root_cause(desk: OnsiteDesk, store: Store, resolved: bool,
                                         cause: m.RootCause, fee: str) -> None:
    await add_techs(desk)
    case = await new_case(store)
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    await desk.book(t.ticket, start=t.slots[0].start, accepted_by="phone", actor="tech:ann",
                    now=NOW)
    await desk.move(t.ticket, S.PREPARED, actor="tech:ann", now=NOW)
    await desk.move(t.ticket, S.ON_SITE, actor="tech:ann", now=NOW)
    done = await desk.move(t.ticket, S.ON_SITE, actor="tech:ann", now=NOW, resolved=resolved,
                           root_cause=cause)
    base = desk.policy.service("hardware-repair").base_fee
    expected = {"none": 0, "base": min(base, t.slots[0].total), "total": t.slots[0].total}[fee]
    assert done.fee == expected


async def test_followup_no_reopens_the_case_and_counts_against_first_time_fix(
        desk: OnsiteDesk, store: Store) -> None:
    await add_techs(desk)
    key = Ed25519PrivateKey.generate()
    case = await new_case(store, key=key)
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    await desk.book(t.ticket, start=t.slots[0].start, accepted_by="phone", actor="tech:ann",
                    now=NOW)
    await desk.move(t.ticket, S.PREPARED, actor="tech:ann", now=NOW)
    await desk.move(t.ticket, S.ON_SITE, actor="tech:ann", now=NOW)
    off = await desk.move(t.ticket, S.ON_SITE, actor="tech:ann", now=NOW, resolved=True,
                          root_cause=m.RootCause.CUSTOMER_DEVICE)
    c = m.VisitDecision(ticket=t.ticket, case=case, agent_id="ag-1",
                        decision=m.VisitDecisionKind.CONFIRM, at=NOW, resolved=True,
                        root_cause=m.RootCause.CUSTOMER_DEVICE, fee=off.fee)
    await desk.customer_decision(c, sign_visit(c, key), agent_id="ag-1", now=NOW)
    await desk.move(t.ticket, S.FOLLOWED_UP, actor="tech:ann", now=NOW, resolved=False,
                    satisfaction=2)
    assert (await store.get_case(case)).state == "reopened"  # type: ignore[union-attr]
    assert (await desk.report())["first_time_fix_rate"] == 0.0
    # the case can be escalated again: a new ticket
    t2, created = await desk.escalate(case, reason="fan again", actor="tech:ann", now=NOW)
    assert not created and t2.ticket == t.ticket  # the old one is not closed yet
    await desk.move(t.ticket, S.CLOSED, actor="tech:ann", now=NOW)
    t3, created = await desk.escalate(case, reason="fan again", actor="tech:ann", now=NOW)
    assert created and t3.ticket != t.ticket


async def test_nothing_is_booked_without_an_offered_slot_or_a_valid_acceptance(
        desk: OnsiteDesk, store: Store) -> None:
    await add_techs(desk)
    key = Ed25519PrivateKey.generate()
    case = await new_case(store, key=key)
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    other = m.VisitDecision(ticket=t.ticket, case=case, agent_id="ag-1",
                            decision=m.VisitDecisionKind.ACCEPT, at=NOW,
                            start=t.slots[0].start + timedelta(hours=1), total=t.slots[0].total)
    with pytest.raises(TicketError, match="not offered"):
        await desk.customer_decision(other, sign_visit(other, key), agent_id="ag-1", now=NOW)
    cheaper = msgspec.structs.replace(other, start=t.slots[0].start, total=1)
    with pytest.raises(TicketError, match="price"):
        await desk.customer_decision(cheaper, sign_visit(cheaper, key), agent_id="ag-1",
                                     now=NOW)
    with pytest.raises(NotFound):  # another agent's ticket
        await desk.customer_decision(other, sign_visit(other, key), agent_id="ag-2", now=NOW)
    assert (await desk.get(t.ticket)).state is S.PROPOSED
    with pytest.raises(TicketError, match="past"):
        await desk.book(t.ticket, start=NOW - timedelta(hours=1), accepted_by="phone",
                        actor="tech:ann", now=NOW)
    decline = m.VisitDecision(ticket=t.ticket, case=case, agent_id="ag-1",
                              decision=m.VisitDecisionKind.DECLINE, at=NOW, note="too dear")
    declined, _ = await desk.customer_decision(decline, sign_visit(decline, key),
                                               agent_id="ag-1", now=NOW)
    assert declined.state is S.CANCELLED and declined.booked_start is None


async def test_phone_booking_of_an_early_slot_is_priced_urgent(desk: OnsiteDesk,
                                                               store: Store) -> None:
    await add_techs(desk)
    case = await new_case(store)
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    early = datetime(2026, 11, 27, 10, 0, tzinfo=CN)  # before the earliest standard date
    booked = await desk.book(t.ticket, start=early, accepted_by="phone (Li Wei)",
                             actor="tech:ann", now=NOW)
    assert booked.total is not None and booked.total > t.slots[0].total
    assert any("urgent" in i.name.lower() for i in booked.price_items)


async def test_reschedule_and_cancel_release_the_technician(desk: OnsiteDesk,
                                                            store: Store) -> None:
    await add_techs(desk, capacity=1)
    a = await new_case(store, agent="ag-a")
    b = await new_case(store, agent="ag-b")
    ta, _ = await desk.escalate(a, reason="fan", actor="server", now=NOW)
    tb, _ = await desk.escalate(b, reason="fan", actor="server", now=NOW)
    day1 = ta.slots[0].start
    await desk.book(ta.ticket, start=day1, accepted_by="phone", actor="tech:ann", now=NOW)
    with pytest.raises(SlotTaken):  # the only technician, capacity 1 a day
        await desk.book(tb.ticket, start=day1 + timedelta(hours=4), accepted_by="phone",
                        actor="tech:ann", now=NOW)
    with pytest.raises(TicketError, match="why"):
        await desk.move(ta.ticket, S.RESCHEDULED, actor="tech:ann", now=NOW)
    moved = await desk.move(ta.ticket, S.RESCHEDULED, actor="tech:ann", now=NOW,
                            note="customer travels")
    assert moved.state is S.RESCHEDULED and moved.technician is None and moved.slots
    booked_b = await desk.book(tb.ticket, start=day1 + timedelta(hours=4),
                               accepted_by="phone", actor="tech:ann", now=NOW)
    assert booked_b.technician == "tech1"


async def test_dispatch_prefers_the_nearest_then_least_loaded(desk: OnsiteDesk,
                                                              store: Store) -> None:
    await desk.add_field_tech(name="far", base="重庆", skills=["hardware-repair"], capacity=5,
                              now=NOW)
    await desk.add_field_tech(name="near", base="成都", skills=["hardware-repair"], capacity=5,
                              now=NOW)
    await desk.add_field_tech(name="wrong-skill", base="成都", skills=["training"],
                              capacity=5, now=NOW)
    a = await new_case(store, agent="ag-a")
    b = await new_case(store, agent="ag-b")
    ta, _ = await desk.escalate(a, reason="fan", actor="server", now=NOW)
    tb, _ = await desk.escalate(b, reason="fan", actor="server", now=NOW)
    first = await desk.book(ta.ticket, start=ta.slots[0].start, accepted_by="phone",
                            actor="x", now=NOW)
    second = await desk.book(tb.ticket, start=ta.slots[0].start, accepted_by="phone",
                             actor="x", now=NOW)
    assert (first.technician, second.technician) == ("near", "far")


async def test_concurrent_bookings_never_double_book(desk: OnsiteDesk, store: Store) -> None:
    """Many customers accept the same slot at once: as many bookings succeed as there are
    technicians, the rest are told the slot is taken, and no hour is held twice."""
    await add_techs(desk, 3)
    tickets = []
    for i in range(12):
        case = await new_case(store, agent=f"ag-{i}")
        t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
        tickets.append(t)
    start = tickets[0].slots[0].start
    second_desk = OnsiteDesk(store, desk.policy)  # as a second server node would
    results = await asyncio.gather(*(
        (desk if i % 2 else second_desk).book(t.ticket, start=start, accepted_by="phone",
                                              actor="x", now=NOW)
        for i, t in enumerate(tickets)), return_exceptions=True)
    booked = [r for r in results if isinstance(r, m.TicketInfo)]
    refused = [r for r in results if isinstance(r, SlotTaken)]
    assert len(booked) == 3 and len(refused) == 9, results
    assert sorted(b.technician or "" for b in booked) == ["tech1", "tech2", "tech3"]
    states = [(await desk.get(t.ticket)).state for t in tickets]
    assert states.count(S.BOOKED) == 3 and states.count(S.PROPOSED) == 9


async def test_concurrent_second_node_on_its_own_connection_pool(store: Store,
                                                                 tmp_path: Path) -> None:
    """Two Store objects on one database (two server processes): still no double booking."""
    desk_a = OnsiteDesk(store, load_policy())
    await add_techs(desk_a, 1)
    url = store._engine.url.render_as_string(hide_password=False)
    other = await Store.open(url)
    try:
        desk_b = OnsiteDesk(other, desk_a.policy)
        tickets = []
        for i in range(6):
            case = await new_case(store, agent=f"ag-{i}")
            tickets.append((await desk_a.escalate(case, reason="fan", actor="server",
                                                  now=NOW))[0])
        start = tickets[0].slots[0].start
        results = await asyncio.gather(*(
            (desk_a if i % 2 else desk_b).book(t.ticket, start=start, accepted_by="phone",
                                               actor="x", now=NOW)
            for i, t in enumerate(tickets)), return_exceptions=True)
        assert sum(isinstance(r, m.TicketInfo) for r in results) == 1, results
        assert all(isinstance(r, m.TicketInfo | SlotTaken) for r in results), results
    finally:
        await other.close()


async def test_contract_free_visits_are_consumed_then_the_rate_applies(
        desk: OnsiteDesk, store: Store) -> None:
    await add_techs(desk, 2, capacity=5)
    await store.add_contract(customer="Acme Ltd", free_visits=1,
                             valid_from=date(2026, 1, 1), valid_to=date(2026, 12, 31),
                             rate=450, now=NOW)
    a = await new_case(store, agent="ag-a", customer="Acme Ltd", kind="enterprise")
    b = await new_case(store, agent="ag-b", customer="Acme Ltd", kind="enterprise")
    ta, _ = await desk.escalate(a, reason="fan", actor="server", now=NOW)
    assert ta.free_visit and ta.slots[0].total == 0
    booked = await desk.book(ta.ticket, start=ta.slots[0].start, accepted_by="phone",
                             actor="x", now=NOW)
    assert booked.free_visit and booked.total == 0
    assert (await store.get_contract("CT-0001")).visits_used == 1  # type: ignore[union-attr]
    tb, _ = await desk.escalate(b, reason="fan", actor="server", now=NOW)
    assert not tb.free_visit and tb.slots[0].total == 450  # the contract rate
    await desk.move(ta.ticket, S.CANCELLED, actor="x", now=NOW, note="not needed")
    assert (await store.get_contract("CT-0001")).visits_used == 0  # type: ignore[union-attr]


async def test_add_field_tech_refuses_bad_input(desk: OnsiteDesk) -> None:
    with pytest.raises(TicketError, match=r"Atlantis"):
        await desk.add_field_tech(name="x", base="Atlantis", skills=["hardware-repair"],
                                  capacity=1, now=NOW)
    with pytest.raises(TicketError, match="skills"):
        await desk.add_field_tech(name="x", base="成都", skills=["juggling"], capacity=1,
                                  now=NOW)
    await desk.add_field_tech(name="x", base="成都", skills=["hardware-repair"], capacity=1,
                              now=NOW)
    with pytest.raises(TicketError, match="exists"):
        await desk.add_field_tech(name="x", base="成都", skills=["hardware-repair"],
                                  capacity=1, now=NOW)
    assert [t.name for t in await desk.field_techs()] == ["x"]



# -- issue 12, bug 4: proposing again recomputes slots from the field technicians now -----


async def test_a_field_technician_added_after_escalation_gets_the_offer_its_slots(
        desk: OnsiteDesk, store: Store) -> None:
    """README order: the case escalates before any field technician exists."""
    case = await new_case(store)
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    assert t.state is S.PROPOSED and t.slots == []
    assert any("no field technician" in r for r in t.reasons)
    same, created = await desk.escalate(case, reason="by hand", actor="tech:ann", now=NOW)
    assert not created and same.slots == [] and "no slot to propose" in same.history[-1].note
    await add_techs(desk)
    waiting = await desk.propose_waiting(actor="operator", now=NOW)
    assert [w.ticket for w in waiting] == [t.ticket]
    again = waiting[0]
    assert again.state is S.PROPOSED and len(again.slots) == 3
    assert again.slots[0].start == datetime(2026, 12, 1, 10, 0, tzinfo=CN)
    assert again.total == again.slots[0].total
    assert not any("no field technician" in r for r in again.reasons)
    assert "a field technician was added: 3 slots proposed" in again.history[-1].note
    assert [e.event for e in await store.list_audit(subject=t.ticket)].count(
        "ticket.proposed-again") == 2
    assert await desk.propose_waiting(actor="operator", now=NOW) == []  # nothing waits now


async def test_escalating_again_proposes_only_an_offer_without_slots_ahead(
        desk: OnsiteDesk, store: Store) -> None:
    case = await new_case(store)
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    await add_techs(desk)
    again, created = await desk.escalate(case, reason="by hand", actor="tech:ann", now=NOW)
    assert not created and again.ticket == t.ticket and len(again.slots) == 3
    # an offer with slots ahead stays as it is: the customer may be looking at it
    kept, _ = await desk.escalate(case, reason="once more", actor="tech:ann", now=NOW)
    assert kept.slots == again.slots and len(kept.history) == len(again.history)
    # once every slot has passed, escalating again proposes new ones
    later = again.slots[-1].start + timedelta(hours=1)
    fresh, _ = await desk.escalate(case, reason="slots passed", actor="tech:ann", now=later)
    assert len(fresh.slots) == 3 and all(s.start > later for s in fresh.slots)


async def test_reschedule_of_an_offer_without_slots_proposes_from_the_technicians_now(
        desk: OnsiteDesk, store: Store) -> None:
    case = await new_case(store)
    t, _ = await desk.escalate(case, reason="fan", actor="server", now=NOW)
    await add_techs(desk)
    r = await desk.move(t.ticket, S.RESCHEDULED, actor="tech:ann", now=NOW,
                        note="a technician joined")
    assert r.state is S.RESCHEDULED and len(r.slots) == 3
    assert not any("no field technician" in x for x in r.reasons)
    assert [h.state for h in r.history] == ["proposed", "rescheduled", "rescheduled"]
    assert "rescheduled: 3 slots proposed" in r.history[-1].note
