"""Both session state machines, driven against each other with real Ed25519 keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proto import MAX_VERSION, MIN_VERSION
from proto import messages as m
from proto.codec import encode
from proto.errors import (
    AuthenticationFailed,
    CloseCode,
    DecodeError,
    FrameTooLarge,
    LocalProtocolError,
    ProtocolError,
    UnexpectedMessage,
    VersionMismatch,
)
from proto.session import (
    AGENT_SENDS,
    SERVER_TO_AGENT,
    SERVER_TO_TECH,
    SINCE_VERSION,
    TECH_SENDS,
    ClientSession,
    ServerSession,
    State,
    negotiate,
    proof_payload,
)

NOW = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
NONCE = bytes(range(32))
AGENT_ID = "ag-0123456789abcdef0123"
TECH = "alice"
CERT = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29t alice"
CASE = "HW-20250314-0042"

REQUEST = m.Request(id="req-1", case=CASE, action=m.Action.DIAG, tech=TECH)
RESULT = m.Result(id="res-1", re="req-1", case=CASE, action=m.Action.DIAG, ok=True)
STORED = m.StoredResult(msg_id="res-1", request_id="req-1", action=m.Action.DIAG, ok=True,
                        received_at=NOW)
WELCOME_AGENT = m.Welcome(session_id="s-1", identity=AGENT_ID, server_time=NOW)
WELCOME_TECH = m.Welcome(session_id="s-2", identity=TECH, server_time=NOW)


@dataclass
class Pair:
    server: ServerSession
    client: ClientSession
    key: Ed25519PrivateKey



SIGNED = m.SignedCommand(payload=b"{}", certificate="cert", signature=b"\x01" * 64)

def _client(role: m.Role, **kw: object) -> ClientSession:
    identity = AGENT_ID if role is m.Role.AGENT else TECH
    return ClientSession(role=role, identity=identity, **kw)  # type: ignore[arg-type]


def _hello(client: ClientSession, mode: m.Mode = m.Mode.RUN) -> bytes:
    if client.role is m.Role.AGENT:
        return client.hello(software="hw-agent/0.1", mode=mode)
    return client.hello(software="hw-tech/0.1", certificate=CERT)


def to_challenge(role: m.Role, client_versions: tuple[int, int] | None = None) -> Pair:
    """Hello -> Challenge delivered: both sides in CHALLENGE."""
    client = _client(role) if client_versions is None else _client(
        role, versions=client_versions)
    server, key = ServerSession(), Ed25519PrivateKey.generate()
    assert isinstance(server.receive(_hello(client)), m.Hello)
    assert isinstance(client.receive(server.challenge(NONCE, NOW)), m.Challenge)
    return Pair(server, client, key)


def to_ready(role: m.Role, client_versions: tuple[int, int] | None = None) -> Pair:
    """The full handshake: both sides READY."""
    pair = to_challenge(role, client_versions)
    proof = pair.server.receive(pair.client.prove(pair.key.sign(pair.client.proof_payload())))
    assert isinstance(proof, m.Proof)
    pair.server.verify(proof, pair.key.public_key())
    welcome = WELCOME_AGENT if role is m.Role.AGENT else WELCOME_TECH
    pair.client.receive(pair.server.send(welcome))
    return pair


# -- happy paths ---------------------------------------------------------------------------


def test_agent_happy_path() -> None:
    server, client, key = ServerSession(), _client(m.Role.AGENT), Ed25519PrivateKey.generate()
    assert server.state is client.state is State.HELLO
    assert server.role is None

    hello = server.receive(_hello(client))
    assert isinstance(hello, m.Hello)
    assert (hello.role, hello.agent_id, hello.mode) == (m.Role.AGENT, AGENT_ID, m.Mode.RUN)
    assert server.state is State.HELLO
    assert server.role is m.Role.AGENT and server.identity == AGENT_ID
    assert server.version == MAX_VERSION

    challenge = client.receive(server.challenge(NONCE, NOW))
    assert challenge == m.Challenge(version=MAX_VERSION, nonce=NONCE, server_time=NOW)
    assert server.state is client.state is State.CHALLENGE
    assert client.version == MAX_VERSION and client.nonce == NONCE

    payload = client.proof_payload()
    assert payload == proof_payload(role=m.Role.AGENT, identity=AGENT_ID, version=MAX_VERSION,
                                    nonce=NONCE)
    proof = server.receive(client.prove(key.sign(payload)))
    assert client.state is State.AUTHENTICATED
    assert isinstance(proof, m.Proof) and server.state is State.CHALLENGE
    server.verify(proof, key.public_key())
    assert server.state is State.AUTHENTICATED

    assert client.receive(server.send(WELCOME_AGENT)) == WELCOME_AGENT
    assert server.state is client.state is State.READY
    assert client.welcome == WELCOME_AGENT
    assert server.error is None and client.error is None

    # The agent session: a request, its durable result, the ack; and a case opened.
    assert client.receive(server.send(REQUEST)) == REQUEST
    assert server.receive(client.send(RESULT)) == RESULT
    assert client.receive(server.send(m.Ack(re=RESULT.id))) == m.Ack(re="res-1")
    open_case = m.OpenCase(id="oc-1", description="slow")
    assert server.receive(client.send(open_case)) == open_case
    opened = m.CaseOpened(re="oc-1", case=CASE, opened_at=NOW)
    assert client.receive(server.send(opened)) == opened
    refusal = m.Error(re="req-1", code=m.ErrorCode.REFUSED, message="no consent")
    assert server.receive(client.send(refusal)) == refusal
    assert server.state is client.state is State.READY


def test_agent_call_mode_handshake() -> None:
    server, client, key = ServerSession(), _client(m.Role.AGENT), Ed25519PrivateKey.generate()
    hello = server.receive(_hello(client, mode=m.Mode.CALL))
    assert isinstance(hello, m.Hello) and hello.mode is m.Mode.CALL
    client.receive(server.challenge(NONCE, NOW))
    server.verify(server.receive(client.prove(key.sign(client.proof_payload()))),  # type: ignore[arg-type]
                  key.public_key())
    client.receive(server.send(WELCOME_AGENT))
    assert client.state is State.READY


def test_technician_happy_path() -> None:
    pair = to_challenge(m.Role.TECH)
    server, client, key = pair.server, pair.client, pair.key
    assert server.hello is not None and server.hello.certificate == CERT
    assert server.role is m.Role.TECH and server.identity == TECH
    assert client.proof_payload() == (
        b"helloword-auth-v1\x00tech\x00alice\x00" + str(MAX_VERSION).encode() + b"\x00" + NONCE)
    proof = server.receive(client.prove(key.sign(client.proof_payload())))
    server.verify(proof, key.public_key())  # type: ignore[arg-type]
    client.receive(server.send(WELCOME_TECH))
    assert server.state is client.state is State.READY

    for request, reply in [
        (m.ListAgents(id="1"), m.AgentList(re="1", agents=[])),
        (m.ListCases(id="2", state="open"), m.CaseList(re="2", cases=[])),
        (m.RunDiag(id="3", case=CASE, command=SIGNED),
         m.DiagDone(re="3", case=CASE, result=STORED)),
        (m.RunDiag(id="4", case=CASE, command=SIGNED),
         m.Error(re="4", code=m.ErrorCode.AGENT_OFFLINE, message="the agent is not connected")),
    ]:
        assert server.receive(client.send(request)) == request
        assert client.receive(server.send(reply)) == reply
    assert server.state is client.state is State.READY


def test_proof_payload_layout() -> None:
    """docs/protocol.md#handshake documents these exact bytes."""
    assert proof_payload(role=m.Role.AGENT, identity="ag-1", version=12, nonce=b"N" * 32) == (
        b"helloword-auth-v1\x00agent\x00ag-1\x0012\x00" + b"N" * 32)


def test_enrollment_path() -> None:
    key = Ed25519PrivateKey.generate()
    server, client = ServerSession(), _client(m.Role.AGENT)
    enroll = m.Enroll(min_version=MIN_VERSION, max_version=MAX_VERSION, software="hw-agent/0.1",
                      secret=b"s" * 32, public_key=key.public_key().public_bytes_raw(),
                      hostname="pc-1", os="Linux")
    got = server.receive(client.enroll(enroll))
    assert got == enroll
    assert server.enroll == enroll
    assert server.state is client.state is State.ENROLLING
    assert server.role is m.Role.AGENT and server.version == MAX_VERSION
    with pytest.raises(LocalProtocolError):
        server.challenge(NONCE, NOW)  # enrollment has no challenge
    enrolled = m.Enrolled(version=MAX_VERSION, agent_id=AGENT_ID, customer="Acme")
    assert client.receive(server.send(enrolled)) == enrolled
    assert server.state is client.state is State.CLOSING
    with pytest.raises(LocalProtocolError):
        server.receive(encode(m.Bye()))


def test_enrollment_refused() -> None:
    server, client = ServerSession(), _client(m.Role.AGENT)
    server.receive(client.enroll(m.Enroll(
        min_version=1, max_version=MAX_VERSION, software="hw-agent/0.1", secret=b"s" * 16,
        public_key=b"\x00" * 32, hostname="pc-1", os="Linux")))
    refusal = m.Error(re=None, code=m.ErrorCode.REFUSED, message="token already used")
    assert client.receive(server.send(refusal)) == refusal
    assert server.state is client.state is State.CLOSING


# -- authentication failures ----------------------------------------------------------------


def test_wrong_key_fails_authentication() -> None:
    pair = to_challenge(m.Role.AGENT)
    proof = pair.server.receive(pair.client.prove(
        Ed25519PrivateKey.generate().sign(pair.client.proof_payload())))
    with pytest.raises(AuthenticationFailed) as info:
        pair.server.verify(proof, pair.key.public_key())  # type: ignore[arg-type]
    assert info.value.close_code is CloseCode.AUTH_FAILED
    assert pair.server.state is State.CLOSING
    assert pair.server.error is info.value
    assert AGENT_ID in info.value.reason


def test_garbage_signature_fails_authentication() -> None:
    pair = to_challenge(m.Role.TECH)
    proof = pair.server.receive(pair.client.prove(b"\x00" * 64))
    with pytest.raises(AuthenticationFailed):
        pair.server.verify(proof, pair.key.public_key())  # type: ignore[arg-type]
    assert pair.server.state is State.CLOSING


SIGNED_FOR_SOMETHING_ELSE: list[tuple[str, m.Role, dict[str, object]]] = [
    ("other nonce", m.Role.AGENT, {"nonce": b"\x01" * 32}),
    ("other role", m.Role.AGENT, {"role": m.Role.TECH}),
    ("other identity", m.Role.AGENT, {"identity": "ag-someone-else"}),
    ("other version", m.Role.AGENT, {"version": MAX_VERSION + 1}),
    ("tech: other nonce", m.Role.TECH, {"nonce": NONCE[::-1]}),
    ("tech: other role", m.Role.TECH, {"role": m.Role.AGENT}),
    ("tech: other identity", m.Role.TECH, {"identity": "mallory"}),
]


@pytest.mark.parametrize(("what", "role", "change"), SIGNED_FOR_SOMETHING_ELSE,
                         ids=[w for w, _, _ in SIGNED_FOR_SOMETHING_ELSE])
def test_proof_for_something_else_fails(what: str, role: m.Role,
                                        change: dict[str, object]) -> None:
    pair = to_challenge(role)
    fields: dict[str, object] = {"role": role, "identity": pair.client.identity,
                                 "version": pair.client.version, "nonce": NONCE}
    fields.update(change)
    signature = pair.key.sign(proof_payload(**fields))  # type: ignore[arg-type]
    proof = pair.server.receive(pair.client.prove(signature))
    with pytest.raises(AuthenticationFailed) as info:
        pair.server.verify(proof, pair.key.public_key())  # type: ignore[arg-type]
    assert info.value.close_code == 4003
    assert pair.server.state is State.CLOSING


def test_caller_rejection_closes() -> None:
    """The I/O layer refuses an unknown agent or a revoked certificate with reject()."""
    pair = to_challenge(m.Role.TECH)
    exc = pair.server.reject(AuthenticationFailed("certificate revoked"))
    assert isinstance(exc, AuthenticationFailed)
    assert pair.server.state is State.CLOSING and pair.server.error is exc
    with pytest.raises(LocalProtocolError):
        pair.server.receive(encode(m.Proof(signature=b"\x00" * 64)))


# -- versions ------------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "client", "server", "upgrade"), [
    (m.Role.AGENT, (2, 3), (1, 1), "upgrade the server"),
    (m.Role.TECH, (5, 9), (1, 4), "upgrade the server"),
    (m.Role.AGENT, (1, 1), (2, 3), "upgrade the agent"),
    (m.Role.TECH, (1, 1), (2, 2), "upgrade the tech"),
], ids=["agent newer", "tech newer", "agent older", "tech older"])
def test_version_mismatch_names_the_side_to_upgrade(
        role: m.Role, client: tuple[int, int], server: tuple[int, int], upgrade: str) -> None:
    srv, cli = ServerSession(versions=server), _client(role, versions=client)
    with pytest.raises(VersionMismatch) as info:
        srv.receive(_hello(cli))
    assert upgrade in info.value.reason
    assert info.value.close_code is CloseCode.UNSUPPORTED_VERSION
    assert len(info.value.reason.encode()) <= 123  # fits a websocket close reason
    assert srv.state is State.CLOSING and srv.error is info.value
    with pytest.raises(LocalProtocolError):
        srv.challenge(NONCE, NOW)


def test_enroll_version_mismatch() -> None:
    srv = ServerSession(versions=(1, 1))
    with pytest.raises(VersionMismatch, match="upgrade the server"):
        srv.receive(encode(m.Enroll(min_version=2, max_version=2, software="a",
                                    secret=b"s" * 16, public_key=b"\x00" * 32,
                                    hostname="h", os="o")))


@pytest.mark.parametrize(("peer", "ours", "chosen"), [
    ((1, 1), (1, 1), 1),
    ((1, 5), (2, 3), 3),
    ((2, 3), (1, 5), 3),
    ((3, 9), (1, 3), 3),
    ((1, 2), (2, 7), 2),
])
def test_negotiate_picks_the_highest_common(peer: tuple[int, int], ours: tuple[int, int],
                                            chosen: int) -> None:
    assert negotiate(*peer, ours=ours) == chosen


def test_negotiate_empty_range() -> None:
    with pytest.raises(VersionMismatch, match="empty version range"):
        negotiate(3, 2)


def test_agreed_version_is_signed_and_used() -> None:
    server = ServerSession(versions=(1, 3))
    client = _client(m.Role.AGENT, versions=(2, 5))
    key = Ed25519PrivateKey.generate()
    server.receive(_hello(client))
    assert server.version == 3
    client.receive(server.challenge(NONCE, NOW))
    assert client.version == 3
    assert b"\x003\x00" in client.proof_payload()
    server.verify(server.receive(client.prove(key.sign(client.proof_payload()))),  # type: ignore[arg-type]
                  key.public_key())
    assert server.state is State.AUTHENTICATED


def test_client_refuses_a_version_it_did_not_offer() -> None:
    client = _client(m.Role.AGENT, versions=(1, 2))
    _hello(client)
    with pytest.raises(VersionMismatch) as info:
        client.receive(encode(m.Challenge(version=7, nonce=NONCE, server_time=NOW)))
    assert info.value.close_code == 4001
    assert client.state is State.CLOSING


# -- messages not allowed in a state (the peer's fault) --------------------------------------

Setup = Callable[[], ServerSession | ClientSession]


def _server_in(role: m.Role, state: State) -> ServerSession:
    if state is State.HELLO:
        return ServerSession()
    if state is State.CHALLENGE:
        return to_challenge(role).server
    if state is State.READY:
        return to_ready(role).server
    raise AssertionError(state)


SERVER_UNEXPECTED: list[tuple[str, m.Role, State, m.AnyMessage]] = [
    ("Result before ready", m.Role.AGENT, State.HELLO, RESULT),
    ("Proof in HELLO", m.Role.AGENT, State.HELLO, m.Proof(signature=b"\x00" * 64)),
    ("Result in CHALLENGE", m.Role.AGENT, State.CHALLENGE, RESULT),
    ("Hello in CHALLENGE", m.Role.AGENT, State.CHALLENGE,
     m.Hello(role=m.Role.AGENT, min_version=1, max_version=1, software="x", agent_id="a")),
    ("RunDiag before ready", m.Role.TECH, State.CHALLENGE,
     m.RunDiag(id="1", case=CASE, command=SIGNED)),
    ("tech sends Result", m.Role.TECH, State.READY, RESULT),
    ("tech sends OpenCase", m.Role.TECH, State.READY, m.OpenCase(id="1", description="x")),
    ("tech sends Error", m.Role.TECH, State.READY,
     m.Error(re=None, code=m.ErrorCode.INTERNAL, message="x")),
    ("agent sends RunDiag", m.Role.AGENT, State.READY,
     m.RunDiag(id="1", case=CASE, command=SIGNED)),
    ("agent sends ListAgents", m.Role.AGENT, State.READY, m.ListAgents(id="1")),
    ("Hello when ready", m.Role.AGENT, State.READY,
     m.Hello(role=m.Role.AGENT, min_version=1, max_version=1, software="x", agent_id="a")),
    ("Proof when ready", m.Role.TECH, State.READY, m.Proof(signature=b"\x00" * 64)),
    ("client sends Welcome", m.Role.AGENT, State.READY, WELCOME_AGENT),
    ("client sends Request", m.Role.AGENT, State.READY, REQUEST),
    ("client sends Ack", m.Role.AGENT, State.READY, m.Ack(re="x")),
    ("client sends Challenge", m.Role.AGENT, State.HELLO,
     m.Challenge(version=1, nonce=NONCE, server_time=NOW)),
]


@pytest.mark.parametrize(("what", "role", "state", "msg"), SERVER_UNEXPECTED,
                         ids=[w for w, *_ in SERVER_UNEXPECTED])
def test_server_rejects_unexpected(what: str, role: m.Role, state: State,
                                   msg: m.AnyMessage) -> None:
    server = _server_in(role, state)
    assert server.state is state
    with pytest.raises(UnexpectedMessage) as info:
        server.receive(encode(msg))
    assert info.value.close_code is CloseCode.PROTOCOL_VIOLATION
    assert type(msg).__name__ in info.value.reason and state.value in info.value.reason
    assert server.state is State.CLOSING and server.error is info.value
    with pytest.raises(LocalProtocolError):
        server.receive(encode(m.Bye()))


@pytest.mark.parametrize("hello", [
    m.Hello(role=m.Role.AGENT, min_version=1, max_version=1, software="x"),
    m.Hello(role=m.Role.TECH, min_version=1, max_version=1, software="x", name="alice"),
    m.Hello(role=m.Role.TECH, min_version=1, max_version=1, software="x", certificate=CERT),
], ids=["agent without agent_id", "tech without certificate", "tech without name"])
def test_incomplete_hello_is_unexpected(hello: m.Hello) -> None:
    server = ServerSession()
    with pytest.raises(UnexpectedMessage):
        server.receive(encode(hello))
    assert server.state is State.CLOSING


def _client_in(role: m.Role, state: State) -> ClientSession:
    if state is State.HELLO:
        client = _client(role)
        _hello(client)
        return client
    if state is State.CHALLENGE:
        return to_challenge(role).client
    if state is State.AUTHENTICATED:
        pair = to_challenge(role)
        pair.client.prove(pair.key.sign(pair.client.proof_payload()))
        return pair.client
    if state is State.READY:
        return to_ready(role).client
    if state is State.ENROLLING:
        client = _client(role)
        client.enroll(m.Enroll(min_version=1, max_version=1, software="x", secret=b"s" * 16,
                               public_key=b"\x00" * 32, hostname="h", os="o"))
        return client
    raise AssertionError(state)


CLIENT_UNEXPECTED: list[tuple[str, m.Role, State, m.AnyMessage]] = [
    ("Request before ready", m.Role.AGENT, State.HELLO, REQUEST),
    ("Welcome before proof", m.Role.AGENT, State.CHALLENGE, WELCOME_AGENT),
    ("second Challenge", m.Role.AGENT, State.CHALLENGE,
     m.Challenge(version=1, nonce=NONCE, server_time=NOW)),
    ("Request while authenticating", m.Role.AGENT, State.AUTHENTICATED, REQUEST),
    ("Enrolled to a hello", m.Role.AGENT, State.HELLO,
     m.Enrolled(version=1, agent_id=AGENT_ID, customer="x")),
    ("Welcome to an enroll", m.Role.AGENT, State.ENROLLING, WELCOME_AGENT),
    ("Challenge to an enroll", m.Role.AGENT, State.ENROLLING,
     m.Challenge(version=1, nonce=NONCE, server_time=NOW)),
    ("agent receives DiagDone", m.Role.AGENT, State.READY,
     m.DiagDone(re="1", case=CASE, result=STORED)),
    ("tech receives Request", m.Role.TECH, State.READY, REQUEST),
    ("tech receives Ack", m.Role.TECH, State.READY, m.Ack(re="1")),
    ("second Welcome", m.Role.TECH, State.READY, WELCOME_TECH),
    ("server sends Hello", m.Role.TECH, State.READY,
     m.Hello(role=m.Role.TECH, min_version=1, max_version=1, software="x")),
]


@pytest.mark.parametrize(("what", "role", "state", "msg"), CLIENT_UNEXPECTED,
                         ids=[w for w, *_ in CLIENT_UNEXPECTED])
def test_client_rejects_unexpected(what: str, role: m.Role, state: State,
                                   msg: m.AnyMessage) -> None:
    client = _client_in(role, state)
    assert client.state is state
    with pytest.raises(UnexpectedMessage):
        client.receive(encode(msg))
    assert client.state is State.CLOSING
    assert isinstance(client.error, UnexpectedMessage)
    with pytest.raises(LocalProtocolError):
        client.receive(encode(m.Bye()))


def test_client_rejects_a_challenge_before_its_hello() -> None:
    client = _client(m.Role.AGENT)
    with pytest.raises(UnexpectedMessage):
        client.receive(encode(m.Challenge(version=1, nonce=NONCE, server_time=NOW)))


@pytest.mark.parametrize("second", [
    m.Hello(role=m.Role.TECH, min_version=1, max_version=1, software="x", name="mallory",
            certificate=CERT),
    m.Enroll(min_version=1, max_version=1, software="x", secret=b"s" * 16,
             public_key=b"\x00" * 32, hostname="h", os="o"),
], ids=["Hello", "Enroll"])
def test_second_first_message_is_unexpected(second: m.AnyMessage) -> None:
    server, client = ServerSession(), _client(m.Role.AGENT)
    server.receive(_hello(client))
    with pytest.raises(UnexpectedMessage):
        server.receive(encode(second))


TICKET = m.TicketInfo(ticket="TK-20261126-0001", case=CASE, agent_id=AGENT_ID, customer="c",
                      state=m.TicketState.PROPOSED, created_at=NOW, updated_at=NOW, reason="r",
                      service="hardware-repair", city="成都", tier="new-1", eligible=True,
                      covered=True, provisional=False, currency="CNY")
SIGNED_VISIT = m.SignedVisit(payload=b"{}", signature=b"\x00" * 64)
TICKET_EXAMPLES: list[m.AnyMessage] = [
    m.EscalateCase(id="t1", case=CASE, reason="fan"), m.ListTickets(id="t2"),
    m.GetTicket(id="t3", ticket=TICKET.ticket),
    m.OfferVisit(id="t4", ticket=TICKET.ticket, case=CASE, command=SIGNED),
    m.BookVisit(id="t5", ticket=TICKET.ticket, start=NOW, accepted_by="phone"),
    m.UpdateTicket(id="t6", ticket=TICKET.ticket, to=m.TicketState.PREPARED),
    m.TicketList(re="t2", tickets=[TICKET]), m.TicketDetail(re="t3", ticket=TICKET),
    m.GetVisits(id="v1"), m.VisitUpdate(id="v2", signed=SIGNED_VISIT),
    m.VisitList(re="v1", visits=[TICKET]),
]

REC_INFO = m.RecordingInfo(id="rec-1", case=CASE, tech="alice", kind=m.RecordingKind.SHELL,
                           started_at=NOW, ended_at=NOW, size=2, sha256="00" * 32)
TUNNEL_EXAMPLES: list[m.AnyMessage] = [
    m.OpenTunnel(id="o1", case=CASE, command=SIGNED),
    m.TunnelOpen(re="o1", case=CASE, tunnel="tn-1", host_key="ssh-ed25519 AAAA"),
    m.Recording(id="rec-1", case=CASE, tech="alice", kind=m.RecordingKind.SFTP,
                started_at=NOW, ended_at=NOW, data=b"{}\n"),
    m.GetRecording(id="g1", case=CASE),
    m.RecordingData(re="g1", case=CASE, recordings=[REC_INFO], info=REC_INFO, data=b"{}"),
]

EXAMPLES_BY_TYPE: dict[type, m.AnyMessage] = {type(x): x for x in [
    m.Hello(role=m.Role.AGENT, min_version=1, max_version=1, software="x", agent_id="a"),
    m.Enroll(min_version=1, max_version=1, software="x", secret=b"s" * 16,
             public_key=b"\x00" * 32, hostname="h", os="o"),
    m.Challenge(version=1, nonce=NONCE, server_time=NOW),
    m.Proof(signature=b"\x00" * 64),
    WELCOME_AGENT,
    m.Enrolled(version=1, agent_id=AGENT_ID, customer="x"),
    m.OpenCase(id="oc", description="x"),
    m.CaseOpened(re="oc", case=CASE, opened_at=NOW),
    REQUEST, RESULT, m.Ack(re="res-1"),
    m.ListAgents(id="1"), m.ListCases(id="2"), m.GetCase(id="3", case=CASE),
    m.ClaimCase(id="cc", case=CASE), m.AssignCase(id="ac", case=CASE, to="bob"),
    m.CaseOwner(re="cc", case=m.CaseInfo(number=CASE, agent_id=AGENT_ID, customer="c",
                                         description="d", state="open", opened_at=NOW,
                                         updated_at=NOW, owner="bob")),
    m.RunDiag(id="4", case=CASE, command=SIGNED),
    m.AgentList(re="1", agents=[]), m.CaseList(re="2", cases=[]),
    m.CaseDetail(re="3", case=m.CaseInfo(number=CASE, agent_id=AGENT_ID, customer="c",
                                         description="d", state="open", opened_at=NOW,
                                         updated_at=NOW), history=[], results=[STORED]),
    m.DiagDone(re="4", case=CASE, result=STORED),
    m.AskConsent(id="5", case=CASE, command=SIGNED),
    m.RunFix(id="6", case=CASE, command=SIGNED),
    m.ListPlugins(id="7", case=CASE, command=SIGNED),
    m.PluginList(re="7", case=CASE, plugins=[]),
    m.FixDone(re="6", case=CASE, result=STORED),
    m.ConsentAnswer(re="5", case=CASE, granted=False, message="declined"),
    m.ConsentUpdate(id="cg-1", receipt=m.SignedReceipt(payload=b"{}", signature=b"\x00" * 64)),
    m.Revocations(fingerprints=[]), m.SignedRevocations(payload=b"{}", signature=b"\x01" * 64),
    *TICKET_EXAMPLES,
    *TUNNEL_EXAMPLES,
    m.Fanout(id="f1", command=SIGNED), m.Ping(id="f1", command=SIGNED),
    m.Pong(re="f1", ok=True), m.FanoutDone(re="f1", audience="all", sent=1, ok=1, seconds=0.1),
    m.Error(re=None, code=m.ErrorCode.INTERNAL, message="x"),
    m.Bye(),
]}


# -- the transition tables match ---------------------------------------------------------------


@pytest.mark.parametrize("role", list(m.Role))
def test_version_2_messages_never_cross_a_version_1_session(role: m.Role) -> None:
    """A peer that negotiated version 1 neither gets nor may send a fan-out message."""
    client_sends = AGENT_SENDS if role is m.Role.AGENT else TECH_SENDS
    server_sends = SERVER_TO_AGENT if role is m.Role.AGENT else SERVER_TO_TECH
    for cls in [c for c, v in SINCE_VERSION.items() if v == 2]:
        msg = EXAMPLES_BY_TYPE[cls]
        old, new = to_ready(role, (1, 1)), to_ready(role)
        assert (old.client.version, new.client.version) == (1, MAX_VERSION)
        if cls in client_sends:
            with pytest.raises(LocalProtocolError):
                old.client.send(msg)
            with pytest.raises(UnexpectedMessage):  # a v1 server never accepts it either
                old.server.receive(new.client.send(msg))
        if cls in server_sends:
            with pytest.raises(LocalProtocolError):
                old.server.send(msg)
            with pytest.raises(UnexpectedMessage):
                old.client.receive(new.server.send(msg))


def test_tables_only_hold_messages() -> None:
    for table in (AGENT_SENDS, SERVER_TO_AGENT, TECH_SENDS, SERVER_TO_TECH):
        assert table <= set(m.ALL_MESSAGES)
        assert m.Bye in table
    handshake = {m.Hello, m.Enroll, m.Challenge, m.Proof, m.Welcome, m.Enrolled}
    used = AGENT_SENDS | SERVER_TO_AGENT | TECH_SENDS | SERVER_TO_TECH | handshake
    assert used == set(m.ALL_MESSAGES), "a message no state machine ever allows"


@pytest.mark.parametrize("role", list(m.Role))
def test_ready_tables_are_enforced_both_ways(role: m.Role) -> None:
    """Whatever one side may send once READY, the other side accepts, and nothing else."""
    client_sends = AGENT_SENDS if role is m.Role.AGENT else TECH_SENDS
    server_sends = SERVER_TO_AGENT if role is m.Role.AGENT else SERVER_TO_TECH
    for cls in m.ALL_MESSAGES:
        msg = EXAMPLES_BY_TYPE[cls]
        pair = to_ready(role)
        if cls in client_sends:
            assert pair.server.receive(pair.client.send(msg)) == msg
        else:
            with pytest.raises(LocalProtocolError):
                pair.client.send(msg)
            assert pair.client.state is State.READY
        pair = to_ready(role)
        if cls in server_sends:
            assert pair.client.receive(pair.server.send(msg)) == msg
        else:
            with pytest.raises(LocalProtocolError):
                pair.server.send(msg)
            assert pair.server.state is State.READY


# -- local misuse (our bug) -------------------------------------------------------------------

LOCAL_MISUSE: list[tuple[str, Callable[[], object]]] = [
    ("Request to a tech session", lambda: to_ready(m.Role.TECH).server.send(REQUEST)),
    ("Ack to a tech session", lambda: to_ready(m.Role.TECH).server.send(m.Ack(re="1"))),
    ("DiagDone to an agent session",
     lambda: to_ready(m.Role.AGENT).server.send(m.DiagDone(re="1", case=CASE, result=STORED))),
    ("Request before ready", lambda: to_challenge(m.Role.AGENT).server.send(REQUEST)),
    ("Welcome before verify", lambda: to_challenge(m.Role.AGENT).server.send(WELCOME_AGENT)),
    ("Welcome twice", lambda: to_ready(m.Role.AGENT).server.send(WELCOME_AGENT)),
    ("Error during the handshake", lambda: to_challenge(m.Role.TECH).server.send(
        m.Error(re=None, code=m.ErrorCode.INTERNAL, message="x"))),
    ("challenge twice", lambda: to_challenge(m.Role.AGENT).server.challenge(NONCE, NOW)),
    ("challenge before hello", lambda: ServerSession().challenge(NONCE, NOW)),
    ("verify before challenge", lambda: ServerSession().verify(
        m.Proof(signature=b"\x00" * 64), Ed25519PrivateKey.generate().public_key())),
    ("identity before hello", lambda: ServerSession().identity),
    ("client Result before ready", lambda: _client_in(m.Role.AGENT, State.CHALLENGE).send(RESULT)),
    ("tech client sends Result", lambda: to_ready(m.Role.TECH).client.send(RESULT)),
    ("agent client sends RunDiag",
     lambda: to_ready(m.Role.AGENT).client.send(m.RunDiag(id="1", case=CASE, command=SIGNED))),
    ("hello twice", lambda: _hello(_client_in(m.Role.AGENT, State.HELLO))),
    ("enroll after hello", lambda: _client_in(m.Role.AGENT, State.HELLO).enroll(m.Enroll(
        min_version=1, max_version=1, software="x", secret=b"s" * 16,
        public_key=b"\x00" * 32, hostname="h", os="o"))),
    ("prove before challenge", lambda: _client_in(m.Role.AGENT, State.HELLO).prove(b"\0" * 64)),
    ("prove twice", lambda: _client_in(m.Role.AGENT, State.AUTHENTICATED).prove(b"\0" * 64)),
    ("proof_payload before challenge",
     lambda: _client_in(m.Role.TECH, State.HELLO).proof_payload()),
]


@pytest.mark.parametrize(("what", "action"), LOCAL_MISUSE, ids=[w for w, _ in LOCAL_MISUSE])
def test_local_misuse(what: str, action: Callable[[], object]) -> None:
    with pytest.raises(LocalProtocolError) as info:
        action()
    assert info.value.close_code is CloseCode.INTERNAL_ERROR


def test_local_misuse_leaves_the_session_usable() -> None:
    pair = to_ready(m.Role.TECH)
    with pytest.raises(LocalProtocolError):
        pair.server.send(REQUEST)
    assert pair.server.state is State.READY and pair.server.error is None
    reply = m.AgentList(re="1", agents=[])
    assert pair.client.receive(pair.server.send(reply)) == reply


# -- errors close the session -------------------------------------------------------------------


@pytest.mark.parametrize(("data", "exc"), [
    (b"garbage", DecodeError),
    (b'{"type":"hello"', DecodeError),
    (b" " * 2048, FrameTooLarge),
])
def test_decode_errors_close_the_session(data: bytes, exc: type[ProtocolError]) -> None:
    server = ServerSession(max_frame=1024)
    with pytest.raises(exc) as info:
        server.receive(data)
    assert server.state is State.CLOSING and server.error is info.value
    with pytest.raises(LocalProtocolError, match="closing"):
        server.receive(encode(m.Bye()))

    client = _client_in(m.Role.AGENT, State.READY)
    client.max_frame = 1024
    with pytest.raises(exc):
        client.receive(data)
    assert client.state is State.CLOSING
    with pytest.raises(LocalProtocolError):
        client.receive(encode(REQUEST))


def test_after_an_error_receive_raises_local_error() -> None:
    pair = to_ready(m.Role.AGENT)
    with pytest.raises(UnexpectedMessage):
        pair.server.receive(encode(m.RunDiag(id="1", case=CASE, command=SIGNED)))
    with pytest.raises(LocalProtocolError):
        pair.server.receive(pair.client.send(RESULT))
    with pytest.raises(LocalProtocolError):
        pair.server.send(REQUEST)  # only Bye may still be sent
    assert pair.server.send(m.Bye(reason="protocol violation")) == encode(
        m.Bye(reason="protocol violation"))


# -- Bye ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(m.Role))
def test_bye_from_the_client(role: m.Role) -> None:
    pair = to_ready(role)
    assert pair.server.receive(pair.client.send(m.Bye(reason="done"))) == m.Bye(reason="done")
    assert pair.client.state is pair.server.state is State.CLOSING
    with pytest.raises(LocalProtocolError):
        pair.client.send(m.OpenCase(id="1", description="x"))


@pytest.mark.parametrize("role", list(m.Role))
def test_bye_from_the_server(role: m.Role) -> None:
    pair = to_ready(role)
    assert pair.client.receive(pair.server.send(m.Bye(reason="restart"))) == m.Bye(
        reason="restart")
    assert pair.client.state is pair.server.state is State.CLOSING
    with pytest.raises(LocalProtocolError):
        pair.client.receive(encode(REQUEST))


@pytest.mark.parametrize("state", [State.HELLO, State.CHALLENGE])
def test_bye_during_the_handshake(state: State) -> None:
    server = _server_in(m.Role.AGENT, state)
    assert server.receive(encode(m.Bye())) == m.Bye()
    assert server.state is State.CLOSING


def test_client_bye_before_hello() -> None:
    client = _client(m.Role.AGENT)
    client.send(m.Bye())
    assert client.state is State.CLOSING
    with pytest.raises(LocalProtocolError):
        client.hello(software="x")


# -- tunnels (docs/protocol.md#tunnels) ------------------------------------------------------


def test_agent_tunnel_connection_is_a_relay_after_welcome() -> None:
    server, client, key = ServerSession(), _client(m.Role.AGENT), Ed25519PrivateKey.generate()
    hello = server.receive(client.hello(software="hw-agent/0.1", mode=m.Mode.TUNNEL,
                                        tunnel="tn-1"))
    assert isinstance(hello, m.Hello) and hello.tunnel == "tn-1"
    client.receive(server.challenge(NONCE, NOW))
    proof = server.receive(client.prove(key.sign(client.proof_payload())))
    assert isinstance(proof, m.Proof)
    server.verify(proof, key.public_key())
    client.receive(server.send(WELCOME_AGENT))
    assert server.state is client.state is State.RELAY
    with pytest.raises(LocalProtocolError):
        server.receive(encode(m.Bye()))
    with pytest.raises(LocalProtocolError):
        server.send(m.Ack(re="x"))


def test_tech_connection_is_a_relay_after_tunnel_open() -> None:
    pair = to_ready(m.Role.TECH)
    assert isinstance(pair.server.receive(pair.client.send(TUNNEL_EXAMPLES[0])), m.OpenTunnel)
    assert pair.server.state is State.READY
    assert isinstance(pair.client.receive(pair.server.send(TUNNEL_EXAMPLES[1])), m.TunnelOpen)
    assert pair.server.state is pair.client.state is State.RELAY
    with pytest.raises(LocalProtocolError):
        pair.client.receive(encode(m.Bye()))


def test_tunnel_id_only_with_agent_tunnel_mode() -> None:
    with pytest.raises(LocalProtocolError):
        _client(m.Role.AGENT).hello(software="x", mode=m.Mode.TUNNEL)
    with pytest.raises(LocalProtocolError):
        _client(m.Role.AGENT).hello(software="x", tunnel="tn-1")
    for bad in (m.Hello(role=m.Role.AGENT, min_version=1, max_version=1, software="x",
                        agent_id=AGENT_ID, mode=m.Mode.TUNNEL),
                m.Hello(role=m.Role.AGENT, min_version=1, max_version=1, software="x",
                        agent_id=AGENT_ID, tunnel="tn-1")):
        server = ServerSession()
        with pytest.raises(UnexpectedMessage):
            server.receive(encode(bad))
        assert server.state is State.CLOSING
