"""server/access.py: who sees and acts on which case, recording and ticket, per role
(docs/security.md#case-owners); the server's e2e tests are tests/e2e/test_case_owners.py."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proto import messages as m
from proto.command import Command, sign_command
from proto.roles import Role
from server.access import (
    Caller,
    TicketScope,
    act_refusal,
    agents_scope,
    claims,
    read_refusal,
    recording_refusal,
    ticket_needs_case,
    ticket_refusal,
    ticket_scope,
    ticket_update_refusal,
)
from server.store import CaseRecord

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
CASE = "HW-20261206-0001"


def caller(name: str, *roles: Role) -> Caller:
    return Caller(name=name, key="SHA256:x", roles=frozenset(roles), version=3)


def case(owner: str | None) -> CaseRecord:
    return CaseRecord(number=CASE, agent_id="ag-1", customer="Li Wei", description="hot",
                      state="open", opened_at=NOW, updated_at=NOW, owner=owner)


def consent(*scopes: str) -> m.AskConsent:
    key = Ed25519PrivateKey.generate()
    command = Command(agent_id="ag-1", case=CASE, action="consent", tech="dana",
                      nonce=secrets.token_bytes(16), issued_at=NOW,
                      expires_at=NOW + timedelta(minutes=5), args={"scopes": list(scopes)})
    return m.AskConsent(id="q1", case=CASE, command=sign_command(command, certificate="x",
                                                                 key=key))


def ticket(technician: str | None) -> m.TicketInfo:
    return m.TicketInfo(ticket="TK-20261206-0001", case=CASE, agent_id="ag-1",
                        customer="Li Wei", state=m.TicketState.BOOKED, created_at=NOW,
                        updated_at=NOW, reason="fan", service="hardware-repair", city="上海",
                        tier="standard", eligible=True, covered=True, provisional=False,
                        currency="CNY", technician=technician)


def test_a_remote_technician_reads_own_and_unassigned_cases_only() -> None:
    bob = caller("bob", Role.REMOTE)
    assert read_refusal(bob, case(None)) is None
    assert read_refusal(bob, case("bob")) is None
    why = read_refusal(bob, case("alice"))
    assert why is not None and "owned by alice" in why and f"assign {CASE} bob" in why
    for role in (Role.DESK, Role.SUPERVISOR, Role.AUDITOR):
        assert read_refusal(caller("x", Role.REMOTE, role), case("alice")) is None


def test_only_the_owner_or_a_supervisor_works_on_an_owned_case() -> None:
    diag = m.RunDiag(id="q", case=CASE, command=consent().command)
    assert act_refusal(caller("bob", Role.REMOTE), case("alice"), diag) is not None
    assert act_refusal(caller("bob", Role.REMOTE, Role.DESK), case("alice"), diag) is not None
    assert act_refusal(caller("sam", Role.SUPERVISOR), case("alice"), diag) is None
    assert act_refusal(caller("alice", Role.REMOTE), case("alice"), diag) is None


def test_the_desk_offers_visits_on_any_case_and_claims_nothing() -> None:
    dana = caller("dana", Role.DESK)
    assert act_refusal(dana, case("alice"), consent("book-visit")) is None
    assert act_refusal(dana, case("alice"), consent("book-visit", "shell")) is not None
    assert not claims(caller("dana", Role.DESK, Role.REMOTE), case(None), consent("book-visit"))
    assert claims(caller("bob", Role.REMOTE), case(None), consent("diagnostics"))
    assert not claims(caller("bob", Role.REMOTE), case("alice"), consent("diagnostics"))
    assert not claims(caller("sam", Role.SUPERVISOR), case(None), consent("diagnostics"))


def test_recordings_and_tickets() -> None:
    assert recording_refusal(caller("alice", Role.REMOTE), "alice", "r1") is None
    assert recording_refusal(caller("bob", Role.REMOTE), "alice", "r1") is not None
    assert recording_refusal(caller("aud", Role.AUDITOR), "alice", "r1") is None
    finn = caller("finn", Role.FIELD)
    assert ticket_refusal(finn, ticket("finn")) is None
    assert ticket_refusal(finn, ticket(None)) is not None
    why = ticket_refusal(finn, ticket("wang"))
    assert why is not None and "own visits" in why
    assert ticket_refusal(caller("dana", Role.DESK), ticket("wang")) is None


def test_a_remote_technician_sees_the_tickets_of_cases_they_may_read() -> None:
    bob = caller("bob", Role.REMOTE)
    assert ticket_scope(bob) == TicketScope(visits_of="bob", cases_of="bob")
    assert ticket_scope(caller("finn", Role.FIELD)) == TicketScope(visits_of="finn",
                                                                   cases_of=None)
    for role in (Role.DESK, Role.SUPERVISOR, Role.AUDITOR):
        assert ticket_scope(caller("x", Role.REMOTE, role)) is None
    assert ticket_needs_case(bob, ticket(None))
    assert not ticket_needs_case(caller("bob", Role.REMOTE, Role.FIELD), ticket("bob"))
    assert not ticket_needs_case(caller("finn", Role.FIELD), ticket(None))
    assert ticket_refusal(bob, ticket(None), case(None)) is None
    assert ticket_refusal(bob, ticket(None), case("bob")) is None
    why = ticket_refusal(bob, ticket("wang"), case("alice"))
    assert why is not None and f"case {CASE} is owned by alice" in why


def test_seeing_a_ticket_is_not_moving_it() -> None:
    rafa = caller("rafa", Role.REMOTE, Role.FIELD)
    assert ticket_refusal(rafa, ticket(None), case(None)) is None
    why = ticket_update_refusal(rafa, ticket(None))
    assert why is not None and "not booked for rafa" in why
    assert ticket_update_refusal(rafa, ticket("rafa")) is None
    assert ticket_update_refusal(caller("dana", Role.DESK), ticket("wang")) is None
    assert ticket_update_refusal(caller("aud", Role.AUDITOR), ticket("wang")) is not None


def test_a_remote_technician_lists_the_agents_of_their_cases() -> None:
    assert agents_scope(caller("bob", Role.REMOTE)) == "bob"
    for role in (Role.DESK, Role.SUPERVISOR, Role.AUDITOR):
        assert agents_scope(caller("x", Role.REMOTE, role)) is None
