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
    act_refusal,
    claims,
    read_refusal,
    recording_refusal,
    sees_ticket,
    ticket_refusal,
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
    assert sees_ticket(finn, ticket("finn"))
    assert not sees_ticket(finn, ticket("wang"))
    assert not sees_ticket(finn, ticket(None))
    why = ticket_refusal(finn, ticket("wang"))
    assert why is not None and "own visits" in why
    assert sees_ticket(caller("dana", Role.DESK), ticket("wang"))
