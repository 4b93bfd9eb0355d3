"""Session state machines for both ends of a connection (``docs/protocol.md#states``).

Sans-I/O, like h11: feed received frames to :meth:`receive`, get typed messages back;
pass outgoing messages through :meth:`send` to get the bytes to write. Each side keeps one
transition table; anything not in it raises :class:`~proto.errors.UnexpectedMessage`
(peer's fault) or :class:`~proto.errors.LocalProtocolError` (ours). After an error the
session is ``CLOSING`` and the caller closes the websocket with ``error.close_code``.

States::

    HELLO ──Hello──▶ CHALLENGE ──Proof ok──▶ AUTHENTICATED ──Welcome──▶ READY ──▶ CLOSING
      └──Enroll──▶ ENROLLING ──Enrolled──▶ CLOSING
    READY ──TunnelOpen──▶ RELAY          (technician: the connection now carries SSH bytes)
    AUTHENTICATED ──Welcome──▶ RELAY     (agent hello with mode ``tunnel``)

In ``RELAY`` no message is decoded or encoded: the I/O layer pumps binary frames
(``docs/protocol.md#tunnels``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import MAX_FRAME_SIZE, MAX_VERSION, MIN_VERSION
from . import messages as m
from .codec import decode, encode
from .errors import (
    AuthenticationFailed,
    LocalProtocolError,
    ProtocolError,
    UnexpectedMessage,
    VersionMismatch,
)


class State(StrEnum):
    HELLO = "hello"
    CHALLENGE = "challenge"
    AUTHENTICATED = "authenticated"
    READY = "ready"
    ENROLLING = "enrolling"
    RELAY = "relay"
    CLOSING = "closing"


#: What each role may send once READY. Replies go the other way.
AGENT_SENDS: frozenset[type] = frozenset(
    {m.OpenCase, m.Result, m.ConsentUpdate, m.Recording, m.GetVisits, m.VisitUpdate, m.Pong,
     m.Error, m.Bye})
SERVER_TO_AGENT: frozenset[type] = frozenset(
    {m.CaseOpened, m.Request, m.Revocations, m.SignedRevocations, m.Ack, m.VisitList, m.Ping,
     m.Error, m.Bye})
TECH_SENDS: frozenset[type] = frozenset(
    {m.ListAgents, m.ListCases, m.GetCase, m.RunDiag, m.RunFix, m.ListPlugins, m.AskConsent,
     m.EscalateCase, m.ListTickets, m.GetTicket, m.OfferVisit, m.BookVisit, m.UpdateTicket,
     m.OpenTunnel, m.GetRecording, m.Fanout, m.ClaimCase, m.AssignCase, m.Bye})
SERVER_TO_TECH: frozenset[type] = frozenset(
    {m.AgentList, m.CaseList, m.CaseDetail, m.DiagDone, m.FixDone, m.PluginList,
     m.ConsentAnswer, m.TicketList, m.TicketDetail, m.TunnelOpen, m.RecordingData,
     m.FanoutDone, m.CaseOwner, m.Error, m.Bye}
)

#: Messages a session may carry only from this protocol version on (the rest: from 1).
SINCE_VERSION: dict[type, int] = {m.Fanout: 2, m.Ping: 2, m.Pong: 2, m.FanoutDone: 2,
                                  m.ClaimCase: 3, m.AssignCase: 3, m.CaseOwner: 3,
                                  m.SignedRevocations: 3}
#: The version whose ``list_cases`` has ``customer``, ``offset`` and ``limit`` and whose
#: ``case_list`` has ``next_offset`` (fields of existing messages, so not in the table above:
#: the server sends ``next_offset`` only to a session at this version or later).
CASE_PAGES_VERSION = 3


def speaks(version: int | None, cls: type) -> bool:
    """Whether a session at ``version`` may carry messages of type ``cls``."""
    return version is not None and version >= SINCE_VERSION.get(cls, 1)


PROOF_CONTEXT = b"helloword-auth-v1"


def proof_payload(*, role: m.Role, identity: str, version: int, nonce: bytes) -> bytes:
    """The bytes a client signs to prove its key: bound to role, identity, version, nonce."""
    return b"\0".join(
        (PROOF_CONTEXT, role.value.encode(), identity.encode(), str(version).encode(), nonce)
    )


def negotiate(
    peer_min: int, peer_max: int, *, ours: tuple[int, int] = (MIN_VERSION, MAX_VERSION),
    peer: str = "client",
) -> int:
    """Pick the highest version both sides speak.

    Raises:
        VersionMismatch: with a reason naming the side that must upgrade.
    """
    lo, hi = max(peer_min, ours[0]), min(peer_max, ours[1])
    if peer_min > peer_max:
        raise VersionMismatch(f"{peer} offered an empty version range {peer_min}..{peer_max}")
    if lo > hi:
        older = "server" if peer_min > ours[1] else peer
        raise VersionMismatch(
            f"no common protocol version: {peer} speaks {peer_min}..{peer_max}, "
            f"server speaks {ours[0]}..{ours[1]}; upgrade the {older}"
        )
    return hi


class _Session:
    """Shared bookkeeping: state, negotiated version, error handling."""

    def __init__(self, *, max_frame: int = MAX_FRAME_SIZE) -> None:
        self.state = State.HELLO
        self.version: int | None = None
        self.max_frame = max_frame
        self.error: ProtocolError | None = None

    def _fail(self, exc: ProtocolError) -> ProtocolError:
        self.state = State.CLOSING
        self.error = exc
        return exc

    def _decode(self, data: bytes | str) -> m.AnyMessage:
        if self.state is State.CLOSING:
            raise LocalProtocolError("session is closing; no more frames are processed")
        if self.state is State.RELAY:
            raise LocalProtocolError("the connection is a tunnel now; its frames are raw bytes")
        try:
            return decode(data, max_size=self.max_frame)
        except ProtocolError as exc:
            raise self._fail(exc) from None

    def _unexpected(self, msg: m.AnyMessage) -> ProtocolError:
        return self._fail(UnexpectedMessage(
            f"message {type(msg).__name__} is not allowed in state {self.state.value}"))

    def _local(self, msg: m.AnyMessage) -> LocalProtocolError:
        return LocalProtocolError(
            f"cannot send {type(msg).__name__} in state {self.state.value}")


class ServerSession(_Session):
    """The server's end of one connection, agent or technician."""

    def __init__(self, *, max_frame: int = MAX_FRAME_SIZE,
                 versions: tuple[int, int] = (MIN_VERSION, MAX_VERSION)) -> None:
        super().__init__(max_frame=max_frame)
        self.versions = versions
        self.hello: m.Hello | None = None
        self.enroll: m.Enroll | None = None
        self._nonce: bytes | None = None

    @property
    def role(self) -> m.Role | None:
        if self.hello is not None:
            return self.hello.role
        return m.Role.AGENT if self.enroll is not None else None

    def receive(self, data: bytes | str) -> m.AnyMessage:
        """Decode and check one frame from the client."""
        msg = self._decode(data)
        if isinstance(msg, m.Bye):
            self.state = State.CLOSING
            return msg
        if (self.state is State.HELLO and self.hello is None and self.enroll is None
                and isinstance(msg, m.Hello | m.Enroll)):
            peer = "agent" if isinstance(msg, m.Enroll) else msg.role.value
            try:
                self.version = negotiate(msg.min_version, msg.max_version, ours=self.versions,
                                         peer=peer)
            except VersionMismatch as exc:
                raise self._fail(exc) from None
            if isinstance(msg, m.Enroll):
                self.enroll, self.state = msg, State.ENROLLING
                return msg
            if msg.role is m.Role.AGENT and msg.agent_id is None:
                raise self._fail(UnexpectedMessage("agent hello without agent_id"))
            if msg.role is m.Role.TECH and (msg.name is None or msg.certificate is None):
                raise self._fail(UnexpectedMessage("technician hello without name/certificate"))
            if (msg.role is m.Role.AGENT and msg.mode is m.Mode.TUNNEL) != (
                    msg.tunnel is not None):
                raise self._fail(UnexpectedMessage(
                    "a tunnel id goes with, and only with, an agent hello in mode tunnel"))
            self.hello = msg
            return msg
        if self.state is State.CHALLENGE and isinstance(msg, m.Proof):
            return msg
        if self.state is State.READY:
            allowed = AGENT_SENDS if self.role is m.Role.AGENT else TECH_SENDS
            if type(msg) in allowed and speaks(self.version, type(msg)):
                return msg
        raise self._unexpected(msg)

    def challenge(self, nonce: bytes, now: datetime) -> bytes:
        """Answer the hello with a challenge carrying ``nonce`` (caller draws it)."""
        if self.state is not State.HELLO or self.hello is None or self.version is None:
            raise LocalProtocolError(f"cannot challenge in state {self.state.value}")
        self._nonce = nonce
        self.state = State.CHALLENGE
        return encode(m.Challenge(version=self.version, nonce=nonce, server_time=now))

    @property
    def identity(self) -> str:
        """The identity the client claimed in its hello (agent id or technician name)."""
        if self.hello is None:
            raise LocalProtocolError("no hello received yet")
        ident = self.hello.agent_id if self.hello.role is m.Role.AGENT else self.hello.name
        assert ident is not None  # checked in receive()
        return ident

    def verify(self, proof: m.Proof, public_key: Ed25519PublicKey) -> None:
        """Check the proof against the key the caller looked up for the claimed identity.

        Raises:
            AuthenticationFailed: the signature does not verify (session is then closing).
        """
        if self.state is not State.CHALLENGE or self._nonce is None or self.hello is None:
            raise LocalProtocolError(f"cannot verify a proof in state {self.state.value}")
        assert self.version is not None
        payload = proof_payload(role=self.hello.role, identity=self.identity,
                                version=self.version, nonce=self._nonce)
        try:
            public_key.verify(proof.signature, payload)
        except InvalidSignature:
            raise self._fail(AuthenticationFailed(
                f"{self.hello.role.value} {self.identity!r} failed to prove its key")) from None
        self._nonce = None
        self.state = State.AUTHENTICATED

    def reject(self, exc: ProtocolError) -> ProtocolError:
        """Record a refusal decided by the caller (unknown agent, revoked cert...)."""
        return self._fail(exc)

    def send(self, msg: m.AnyMessage) -> bytes:
        """Encode an outgoing message, checking the transition table."""
        if isinstance(msg, m.Bye):
            after = State.CLOSING
        elif self.state is State.AUTHENTICATED and isinstance(msg, m.Welcome):
            tunnel = self.hello is not None and self.hello.mode is m.Mode.TUNNEL \
                and self.hello.role is m.Role.AGENT
            after = State.RELAY if tunnel else State.READY
        elif self.state is State.ENROLLING and isinstance(msg, m.Enrolled | m.Error):
            after = State.CLOSING
        elif self.state is State.READY:
            allowed = SERVER_TO_AGENT if self.role is m.Role.AGENT else SERVER_TO_TECH
            if type(msg) not in allowed or not speaks(self.version, type(msg)):
                raise self._local(msg)
            after = State.RELAY if isinstance(msg, m.TunnelOpen) else State.READY
        else:
            raise self._local(msg)
        data = encode(msg)  # may raise; the state moves only once the frame exists
        self.state = after
        return data


class ClientSession(_Session):
    """The client's end: an agent or a technician connecting to the server."""

    def __init__(self, *, role: m.Role, identity: str, max_frame: int = MAX_FRAME_SIZE,
                 versions: tuple[int, int] = (MIN_VERSION, MAX_VERSION)) -> None:
        super().__init__(max_frame=max_frame)
        self.role = role
        self.identity = identity
        self.versions = versions
        self.nonce: bytes | None = None
        self.welcome: m.Welcome | None = None
        self.mode = m.Mode.RUN
        self._hello_sent = False

    def hello(self, *, software: str, mode: m.Mode = m.Mode.RUN,
              certificate: str | None = None, tunnel: str | None = None) -> bytes:
        """The first frame: who we are and which versions we speak (``tunnel``: the id of
        the tunnel an agent's ``tunnel``-mode connection is for)."""
        if self.state is not State.HELLO or self._hello_sent:
            raise LocalProtocolError("hello already sent")
        agent = self.role is m.Role.AGENT
        if (agent and mode is m.Mode.TUNNEL) != (tunnel is not None):
            raise LocalProtocolError("an agent tunnel connection needs a tunnel id, and only "
                                     "it has one")
        self._hello_sent = True
        self.mode = mode
        return encode(m.Hello(
            role=self.role, min_version=self.versions[0], max_version=self.versions[1],
            software=software, mode=mode,
            agent_id=self.identity if agent else None,
            name=None if agent else self.identity,
            certificate=None if agent else certificate,
            tunnel=tunnel,
        ))

    def enroll(self, msg: m.Enroll) -> bytes:
        """The first frame of an enrollment, instead of :meth:`hello`."""
        if self.state is not State.HELLO or self._hello_sent:
            raise LocalProtocolError("hello already sent")
        self._hello_sent = True
        self.state = State.ENROLLING
        return encode(msg)

    def receive(self, data: bytes | str) -> m.AnyMessage:
        """Decode and check one frame from the server."""
        msg = self._decode(data)
        if isinstance(msg, m.Bye):
            self.state = State.CLOSING
            return msg
        if self.state is State.HELLO and self._hello_sent and isinstance(msg, m.Challenge):
            self._check_version(msg.version)
            self.version, self.nonce = msg.version, msg.nonce
            self.state = State.CHALLENGE
            return msg
        if self.state is State.ENROLLING and isinstance(msg, m.Enrolled | m.Error):
            if isinstance(msg, m.Enrolled):
                self._check_version(msg.version)
            self.state = State.CLOSING
            return msg
        if self.state is State.AUTHENTICATED and isinstance(msg, m.Welcome):
            tunnel = self.role is m.Role.AGENT and self.mode is m.Mode.TUNNEL
            self.welcome, self.state = msg, State.RELAY if tunnel else State.READY
            return msg
        if self.state is State.READY:
            allowed = SERVER_TO_AGENT if self.role is m.Role.AGENT else SERVER_TO_TECH
            if type(msg) in allowed and speaks(self.version, type(msg)):
                if isinstance(msg, m.TunnelOpen):
                    self.state = State.RELAY
                return msg
        raise self._unexpected(msg)

    def _check_version(self, version: int) -> None:
        lo, hi = self.versions
        if not lo <= version <= hi:
            side = "the server" if version < lo else f"this {self.role.value}"
            raise self._fail(VersionMismatch(
                f"server chose protocol {version}, this {self.role.value} speaks {lo}..{hi}; "
                f"upgrade {side}"))

    def proof_payload(self) -> bytes:
        """The bytes to sign for the pending challenge."""
        if self.state is not State.CHALLENGE or self.nonce is None or self.version is None:
            raise LocalProtocolError(f"no challenge pending in state {self.state.value}")
        return proof_payload(role=self.role, identity=self.identity, version=self.version,
                             nonce=self.nonce)

    def prove(self, signature: bytes) -> bytes:
        """Send the signature over :meth:`proof_payload`."""
        if self.state is not State.CHALLENGE:
            raise LocalProtocolError(f"cannot prove in state {self.state.value}")
        self.state = State.AUTHENTICATED
        return encode(m.Proof(signature=signature))

    def send(self, msg: m.AnyMessage) -> bytes:
        """Encode an outgoing message once ready."""
        if isinstance(msg, m.Bye):
            self.state = State.CLOSING
            return encode(msg)
        allowed = AGENT_SENDS if self.role is m.Role.AGENT else TECH_SENDS
        if (self.state is not State.READY or type(msg) not in allowed
                or not speaks(self.version, type(msg))):
            raise self._local(msg)
        return encode(msg)
