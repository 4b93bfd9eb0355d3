"""The roles matrix, sans-I/O: every role against every technician request and every signed
action, as the server's table says and as the agent checks a signed command
(docs/security.md#roles)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proto import messages as m
from proto.certs import verify_user_certificate
from proto.command import Command, sign_command, verify_command
from proto.errors import RefusalReason
from proto.gate import role_refusal
from proto.roles import (
    ACTIONS,
    LEGACY_ROLES,
    REQUESTS,
    ROLES_EXTENSION,
    Role,
    allowed,
    consent_scopes_allowed,
    format_roles,
)
from proto.session import TECH_SENDS

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
CASE = "HW-20261206-0001"
R, D, F, S, A = Role.REMOTE, Role.DESK, Role.FIELD, Role.SUPERVISOR, Role.AUDITOR

#: The matrix as docs/security.md#roles states it: request or action -> roles allowed.
EXPECTED: dict[str, set[Role]] = {
    "list_agents": {R, D, S, A}, "list_cases": {R, D, S, A}, "get_case": {R, D, S, A},
    "claim_case": {R, S}, "assign_case": {R, S},
    "run_diag": {R}, "run_fix": {R}, "list_plugins": {R}, "open_tunnel": {R},
    "ask_consent": {R, D}, "fanout": {R, S}, "get_recording": {R, S, A},
    "escalate_case": {R, D, S}, "list_tickets": {R, D, F, S, A}, "get_ticket": {R, D, F, S, A},
    "offer_visit": {R, D}, "book_visit": {D, S}, "update_ticket": {D, F, S},
    # signed actions, checked by the agent
    "diag": {R}, "fix": {R}, "plugins": {R}, "tunnel": {R}, "consent": {R, D},
    "book-visit": {R, D}, "ping": {R, S},
}


def test_every_request_and_action_has_a_row() -> None:
    requests = {str(cls.__struct_config__.tag) for cls in TECH_SENDS if cls is not m.Bye}
    assert set(REQUESTS) == requests
    assert set(ACTIONS) == {a.value for a in m.Action} | {"ping"}
    assert set(EXPECTED) == set(REQUESTS) | set(ACTIONS)


@pytest.mark.parametrize("role", list(Role), ids=str)
@pytest.mark.parametrize("what", sorted(EXPECTED))
def test_each_role_against_each_request_and_action(role: Role, what: str) -> None:
    why = allowed({role}, what)
    if role in EXPECTED[what]:
        assert why is None
        return
    assert why is not None and why.startswith(f"{what} needs the ")
    assert f"certificate has {role.value}" in why
    for needed in EXPECTED[what]:
        assert f"the {needed.value} role" in why, "the refusal names every role that would do"
    assert "--role " in why, "and says how to get one"


def test_roles_add_up_and_unknown_things_are_refused() -> None:
    assert allowed({D, F}, "update_ticket") is None
    assert allowed({F, A}, "run_diag") is not None
    assert allowed(set(), "list_cases") is not None
    assert allowed(set(Role), "no_such_request") is not None
    assert LEGACY_ROLES == {R}


def test_the_desk_asks_for_book_visit_only() -> None:
    assert consent_scopes_allowed({D}, ["book-visit"]) is None
    refusal = consent_scopes_allowed({D}, ["book-visit", "diagnostics"])
    assert refusal is not None and "diagnostics" in refusal
    assert consent_scopes_allowed({R}, ["shell", "files"]) is None
    assert consent_scopes_allowed({A}, ["book-visit"]) is not None


# -- the agent's side: roles from a signed command's certificate -----------------------


def _certificate(org: Ed25519PrivateKey, user: Ed25519PrivateKey, roles: bytes | None,
                 name: str = "alice") -> str:
    builder = (serialization.SSHCertificateBuilder().public_key(user.public_key()).serial(1)
               .type(serialization.SSHCertificateType.USER)
               .key_id(f"helloword-tech:{name}".encode()).valid_principals([name.encode()])
               .valid_after(int((NOW - timedelta(hours=1)).timestamp()))
               .valid_before(int((NOW + timedelta(days=1)).timestamp()))
               .add_extension(b"permit-pty", b""))
    if roles is not None:
        builder = builder.add_extension(ROLES_EXTENSION.encode(), roles)
    return builder.sign(org).public_bytes().decode()


def _signed(org: Ed25519PrivateKey, roles: bytes | None, action: str,
            args: dict[str, object] | None = None) -> m.SignedCommand:
    user = Ed25519PrivateKey.generate()
    command = Command(agent_id="ag-1", case=CASE, action=action, tech="alice",
                      nonce=secrets.token_bytes(16), issued_at=NOW,
                      expires_at=NOW + timedelta(minutes=5), args=args or {})
    return sign_command(command, certificate=_certificate(org, user, roles), key=user)


ORG = Ed25519PrivateKey.generate()
ORG_PUB = ORG.public_key().public_bytes_raw()


@pytest.mark.parametrize("role", list(Role), ids=str)
@pytest.mark.parametrize("action", [a.value for a in m.Action])
def test_the_agent_checks_the_signers_roles(role: Role, action: str) -> None:
    """What the agent runs after verify_command: a certificate without the role is refused
    `wrong_role`, whatever the server forwarded."""
    args: dict[str, object] = {"scopes": ["book-visit"]} if action == "consent" else {}
    verified = verify_command(_signed(ORG, role.value.encode(), action, args),
                              org_pub=ORG_PUB, now=NOW, agent_id="ag-1", case=CASE,
                              action=action)
    assert verified.cert.roles == {role}
    refusal = role_refusal(verified.cert.roles, action, verified.command.args)
    if role in EXPECTED[action]:
        assert refusal is None
    else:
        assert refusal is not None
        assert refusal.text.startswith(f"{RefusalReason.WRONG_ROLE.value}: {action} needs")


def test_the_agent_refuses_a_desk_consent_request_for_other_scopes() -> None:
    verified = verify_command(_signed(ORG, b"desk", "consent", {"scopes": ["shell"]}),
                              org_pub=ORG_PUB, now=NOW, agent_id="ag-1")
    refusal = role_refusal(verified.cert.roles, "consent", verified.command.args)
    assert refusal is not None and "shell" in refusal.message


def test_a_certificate_without_the_extension_is_remote_only() -> None:
    """Certificates issued before roles keep working as what they were used for."""
    user = Ed25519PrivateKey.generate()
    info = verify_user_certificate(_certificate(ORG, user, None), org_pub=ORG_PUB,
                                   principal="alice", now=NOW)
    assert info.roles == LEGACY_ROLES
    assert role_refusal(info.roles, "diag") is None
    assert role_refusal(info.roles, "ping") is None


def test_several_roles_in_one_certificate_round_trip() -> None:
    user = Ed25519PrivateKey.generate()
    value = format_roles({S, D, R}).encode()
    assert value == b"desk,remote,supervisor"
    info = verify_user_certificate(_certificate(ORG, user, value), org_pub=ORG_PUB,
                                   principal="alice", now=NOW)
    assert info.roles == {S, D, R}
