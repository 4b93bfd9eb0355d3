"""Signed commands: a technician's request that the server can relay but not forge.

Like a JWS, a :class:`SignedCommand` (defined with the other wire structs in
:mod:`proto.messages`, re-exported here) carries the exact ``payload`` bytes (the msgspec JSON
encoding of a :class:`Command`), the technician's OpenSSH user certificate and an Ed25519
signature over ``COMMAND_CONTEXT + b"\\0" + payload``. The signature covers bytes, never a
re-encoding, so verifier and signer need not agree on JSON formatting.

The agent checks every command with :func:`verify_command` against the organisation key it
pinned at enrollment (``docs/protocol.md#signed-commands``). Every refusal has its own
:class:`RefusalReason`. Sans-I/O: callers pass ``now``, the nonce and the keys.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from msgspec import Meta

from .certs import CertInfo, verify_user_certificate
from .errors import CertificateError, CertReason, CommandRefused, RefusalReason
from .messages import CaseNumber, Id, Name, Nonce, SignedCommand, Timestamp

__all__ = [
    "CLOCK_NOISE", "CLOCK_SKEW", "COMMAND_CONTEXT", "FANOUT_CONTEXT", "MAX_LIFETIME",
    "MAX_PAYLOAD", "Command", "CommandRefused", "FanoutCommand", "RefusalReason", "ReplayCache",
    "SignedCommand", "VerifiedCommand", "VerifiedFanout", "audience_matches", "clock_advice",
    "decode_fanout", "human_offset", "refusal_message", "sign_command", "sign_fanout",
    "verify_command", "verify_fanout",
]

COMMAND_CONTEXT = b"helloword-command-v1"
"""Domain separation: a command signature can never pass for any other signature."""

FANOUT_CONTEXT = b"helloword-fanout-v1"
"""Domain separation for fan-out commands: never valid as a one-agent command, and back."""

MAX_LIFETIME = timedelta(minutes=10)
"""Longest ``expires_at - issued_at`` accepted."""

CLOCK_SKEW = timedelta(minutes=2)
"""How far in the future ``issued_at`` may be (the technician's clock runs ahead)."""

CLOCK_NOISE = timedelta(seconds=30)
"""Clock offsets below this are not blamed for a refusal (network delay, rounding)."""

MAX_PAYLOAD = 65536
"""Largest encoded :class:`Command` accepted, in bytes (as ``SignedCommand.payload``)."""

ActionName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}(?!\n)$")]


class Command(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a technician asks one agent to do, for one case, once, within a short window."""

    agent_id: Id
    case: CaseNumber
    action: ActionName
    tech: Name
    nonce: Nonce
    issued_at: Timestamp
    expires_at: Timestamp
    args: Annotated[dict[str, Any], Meta(max_length=32)] = {}


Audience = Annotated[str, Meta(min_length=3, max_length=140,
                               pattern=r"^(all|customer:[^\n]+)(?!\n)$")]
"""Who a fan-out command is for: ``all`` agents, or ``customer:NAME`` (the agent's enrolled
customer name, exactly)."""


class FanoutCommand(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One command a technician sends to many agents at once (``docs/protocol.md#fan-out``).

    Only ``ping`` exists: the agent proves it is there and checks the organisation's
    signatures, and reveals nothing the server does not already know, so it needs no
    consent grant. Anything that reads or changes the customer's machine stays a
    one-agent :class:`Command` under that customer's consent.
    """

    audience: Audience
    action: Literal["ping"]
    tech: Name
    nonce: Nonce
    issued_at: Timestamp
    expires_at: Timestamp


_FROM_CERT: dict[CertReason, RefusalReason] = {
    CertReason.MALFORMED: RefusalReason.MALFORMED,
    CertReason.NOT_USER: RefusalReason.MALFORMED,
    CertReason.NOT_ED25519: RefusalReason.MALFORMED,
    CertReason.UNTRUSTED: RefusalReason.UNTRUSTED_CERTIFICATE,
    CertReason.BAD_SIGNATURE: RefusalReason.UNTRUSTED_CERTIFICATE,
    CertReason.UNSUPPORTED_OPTION: RefusalReason.UNTRUSTED_CERTIFICATE,
    CertReason.BAD_ROLES: RefusalReason.UNTRUSTED_CERTIFICATE,
    CertReason.WRONG_PRINCIPAL: RefusalReason.WRONG_TECHNICIAN,
    CertReason.NOT_YET_VALID: RefusalReason.CERTIFICATE_EXPIRED,
    CertReason.EXPIRED: RefusalReason.CERTIFICATE_EXPIRED,
}
"""How a certificate refusal surfaces; the certificate's own, more precise message is kept."""


@dataclass(frozen=True)
class VerifiedCommand:
    """A command that passed every check, and the certificate that vouched for it."""

    command: Command
    cert: CertInfo


@dataclass(frozen=True)
class VerifiedFanout:
    """A fan-out command that passed every check, and the certificate that vouched for it."""

    command: FanoutCommand
    cert: CertInfo


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Command)
_fanout_decoder = msgspec.json.Decoder(FanoutCommand)


def _signed_bytes(payload: bytes, context: bytes = COMMAND_CONTEXT) -> bytes:
    return context + b"\0" + payload


def sign_command(command: Command, *, certificate: str, key: Ed25519PrivateKey
                 ) -> SignedCommand:
    """Encode ``command`` and sign the bytes with the technician's ``key``.

    The command is validated as the agent will decode it, so a command this side builds
    with out-of-range values fails here rather than at the agent.

    Raises:
        ValueError: ``command`` would not pass the agent's schema.
    """
    payload = _encoder.encode(command)
    try:
        _decoder.decode(payload)
    except Exception as exc:  # ValidationError, or RecursionError on absurdly deep args
        raise ValueError(f"the command does not pass the schema: {exc}") from None
    return SignedCommand(payload=payload, certificate=certificate,
                         signature=key.sign(_signed_bytes(payload)))


def sign_fanout(command: FanoutCommand, *, certificate: str, key: Ed25519PrivateKey
                ) -> SignedCommand:
    """Encode and sign a fan-out command (its own signature context, see
    :data:`FANOUT_CONTEXT`).

    Raises:
        ValueError: ``command`` would not pass the agents' schema.
    """
    payload = _encoder.encode(command)
    try:
        _fanout_decoder.decode(payload)
    except Exception as exc:
        raise ValueError(f"the fan-out command does not pass the schema: {exc}") from None
    return SignedCommand(payload=payload, certificate=certificate,
                         signature=key.sign(_signed_bytes(payload, FANOUT_CONTEXT)))


def decode_fanout(signed: SignedCommand) -> FanoutCommand:
    """The fan-out command inside ``signed``, without checking it (for a node relaying a
    fan-out another node has checked; agents always check with :func:`verify_fanout`).

    Raises:
        CommandRefused: MALFORMED.
    """
    try:
        return _fanout_decoder.decode(signed.payload)
    except Exception:
        raise CommandRefused(RefusalReason.MALFORMED) from None


def audience_matches(audience: str, customer: str) -> bool:
    """Whether an agent enrolled for ``customer`` belongs to ``audience``."""
    return audience == "all" or (bool(customer) and audience == "customer:" + customer)


def _check_signer(signed: SignedCommand, tech: str, *, org_pub: bytes, now: datetime,
                  revoked: Collection[str], context: bytes) -> CertInfo:
    """The certificate chains to ``org_pub``, names ``tech``, is valid and not revoked,
    and its key signed ``context`` + payload."""
    try:
        cert = verify_user_certificate(signed.certificate, org_pub=org_pub,
                                       principal=tech, now=now)
    except CertificateError as exc:
        raise CommandRefused(_FROM_CERT[exc.reason], exc.message) from exc
    if cert.fingerprint in revoked:
        raise CommandRefused(RefusalReason.REVOKED)
    try:
        cert.public_key.verify(signed.signature, _signed_bytes(signed.payload, context))
    except InvalidSignature:
        raise CommandRefused(RefusalReason.BAD_SIGNATURE) from None
    return cert


def _check_window(issued_at: datetime, expires_at: datetime, now: datetime) -> None:
    if expires_at <= now:
        raise CommandRefused(RefusalReason.EXPIRED)
    if issued_at > now + CLOCK_SKEW:
        raise CommandRefused(RefusalReason.NOT_YET_VALID)
    if expires_at - issued_at > MAX_LIFETIME:
        raise CommandRefused(RefusalReason.LIFETIME_TOO_LONG)


def verify_command(
    signed: SignedCommand,
    *,
    org_pub: bytes,
    now: datetime,
    agent_id: str,
    case: str | None = None,
    action: str | None = None,
    revoked: Collection[str] = (),
    replay: ReplayCache | None = None,
) -> VerifiedCommand:
    """Check a signed command before the agent acts on it.

    Args:
        signed: what arrived.
        org_pub: the raw 32-byte organisation key pinned at enrollment.
        now: the current time, timezone-aware.
        agent_id: this agent's id; the command must name it.
        case, action: when given, the command must name them (the relayed request's).
        revoked: fingerprints (``SHA256:...``) of revoked technician keys.
        replay: remembers accepted nonces; consulted last, so a refused command never
            uses up its nonce.

    Checks, in order: the payload decodes; the certificate chains to ``org_pub``, names
    ``command.tech`` and is valid now; its key is not revoked; the signature over the
    payload verifies with the certified key; agent, case and action match; the command
    is within its validity window; the nonce is new.

    Raises:
        CommandRefused: with the :class:`RefusalReason` of the first failed check.
        ValueError: ``now`` is naive (a bug in the caller).
    """
    if now.tzinfo is None:
        raise ValueError("verify_command() needs a timezone-aware `now`")
    if len(signed.payload) > MAX_PAYLOAD:  # only decoding enforces the struct's limit
        raise CommandRefused(RefusalReason.MALFORMED)
    try:
        command = _decoder.decode(signed.payload)
    except Exception:  # DecodeError, UnicodeDecodeError, RecursionError on deep nesting
        raise CommandRefused(RefusalReason.MALFORMED) from None
    cert = _check_signer(signed, command.tech, org_pub=org_pub, now=now, revoked=revoked,
                         context=COMMAND_CONTEXT)
    if command.agent_id != agent_id:
        raise CommandRefused(RefusalReason.WRONG_AGENT)
    if case is not None and command.case != case:
        raise CommandRefused(RefusalReason.WRONG_CASE)
    if action is not None and command.action != action:
        raise CommandRefused(RefusalReason.WRONG_ACTION)
    _check_window(command.issued_at, command.expires_at, now)
    if replay is not None:
        replay.check_and_add(command.nonce, expires_at=command.expires_at, now=now)
    return VerifiedCommand(command=command, cert=cert)


def verify_fanout(
    signed: SignedCommand,
    *,
    org_pub: bytes,
    now: datetime,
    customer: str | None,
    revoked: Collection[str] = (),
    replay: ReplayCache | None = None,
) -> VerifiedFanout:
    """Check a signed fan-out command (:class:`FanoutCommand`).

    The same checks as :func:`verify_command`, in the same order, with the audience in
    place of agent, case and action: when ``customer`` is given (the agent's enrolled
    customer), the audience must be ``all`` or name that customer. The server passes
    ``customer=None``: it picks the agents by the audience itself.

    Raises:
        CommandRefused: with the :class:`RefusalReason` of the first failed check.
        ValueError: ``now`` is naive (a bug in the caller).
    """
    if now.tzinfo is None:
        raise ValueError("verify_fanout() needs a timezone-aware `now`")
    if len(signed.payload) > MAX_PAYLOAD:
        raise CommandRefused(RefusalReason.MALFORMED)
    command = decode_fanout(signed)
    cert = _check_signer(signed, command.tech, org_pub=org_pub, now=now, revoked=revoked,
                         context=FANOUT_CONTEXT)
    if customer is not None and not audience_matches(command.audience, customer):
        raise CommandRefused(RefusalReason.WRONG_AUDIENCE)
    _check_window(command.issued_at, command.expires_at, now)
    if replay is not None:
        replay.check_and_add(command.nonce, expires_at=command.expires_at, now=now)
    return VerifiedFanout(command=command, cert=cert)


def human_offset(offset: timedelta) -> str:
    """``7 min 12 s``, ``2 h 5 min``, ``3 days 4 h``: the size of a clock offset."""
    total = round(abs(offset.total_seconds()))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    if minutes:
        return f"{minutes} min" + (f" {seconds} s" if seconds else "")
    return f"{seconds} s"


def _this_computer(offset: timedelta) -> str:
    where = "behind" if offset < timedelta(0) else "ahead of"
    return (f"this computer's clock is {human_offset(offset)} {where} the server's; correct "
            "the clock (Settings → Date & time)")


def _technician(offset: timedelta) -> str:
    where = "behind" if offset < timedelta(0) else "ahead of"
    return (f"the technician's clock is {human_offset(offset)} {where} the server's; the "
            "technician should correct their computer's clock and sign again")


def clock_advice(signed: SignedCommand, reason: RefusalReason, *, org_pub: bytes,
                 now: datetime, server_offset: timedelta | None, fanout: bool = False) -> str:
    """For a refusal for time reasons: which clock is off and by how much, or ``""``.

    ``server_offset`` is the server's clock minus this computer's, measured when the
    server welcomed the agent (``Welcome.server_time``); ``None`` when unknown. A command's
    ``issued_at`` is the technician's clock at signing, a moment before it arrives, so
    ``issued_at - (now + server_offset)`` is the technician's offset from the server.
    Only an offset of at least :data:`CLOCK_NOISE` in the direction that explains the
    refusal is named: this computer's (then ``Settings → Date & time``), the
    technician's, or both. Never raises.
    """
    if reason not in (RefusalReason.EXPIRED, RefusalReason.NOT_YET_VALID,
                      RefusalReason.CERTIFICATE_EXPIRED):
        return ""
    offset = server_offset or timedelta(0)
    ours = -offset  # this computer's clock minus the server's
    server_now = now + offset
    try:
        command: Command | FanoutCommand = (
            _fanout_decoder.decode(signed.payload) if fanout else _decoder.decode(signed.payload))
    except Exception:
        return ""
    if reason is RefusalReason.CERTIFICATE_EXPIRED:
        if server_offset is None or abs(ours) < CLOCK_NOISE:
            return ""
        try:  # valid by the server's clock: this computer's clock is the one off
            verify_user_certificate(signed.certificate, org_pub=org_pub, principal=command.tech,
                                    now=server_now)
        except CertificateError:
            return ""
        return _this_computer(ours)
    theirs = command.issued_at - server_now  # the technician's clock minus the server's
    late = reason is RefusalReason.EXPIRED  # explained by ours ahead or theirs behind
    sign = 1 if late else -1
    notes = []
    if server_offset is not None and sign * ours.total_seconds() >= CLOCK_NOISE.total_seconds():
        notes.append(_this_computer(ours))
    if -sign * theirs.total_seconds() >= CLOCK_NOISE.total_seconds():
        notes.append(_technician(theirs))
    return "; and ".join(notes)


def refusal_message(exc: CommandRefused, signed: SignedCommand, *, org_pub: bytes,
                    now: datetime, server_offset: timedelta | None = timedelta(0),
                    fanout: bool = False) -> str:
    """``exc``'s message, then which clock is off when one explains the refusal
    (:func:`clock_advice`). The server leaves ``server_offset`` at zero: its own clock is
    the reference, so only the technician's clock can be named there."""
    advice = clock_advice(signed, exc.reason, org_pub=org_pub, now=now,
                          server_offset=server_offset, fanout=fanout)
    return f"{exc.message}: {advice}" if advice else exc.message


class ReplayCache:
    """Nonces of accepted commands, each remembered until its command expires.

    Sans-I/O: the caller passes ``now``. Entries are pruned lazily, soonest expiry first
    (a heap). A command cannot be accepted after its expiry, so forgetting its nonce then
    is safe. When ``max_entries`` unexpired nonces are held, new commands are refused with
    :attr:`RefusalReason.BUSY` rather than forgetting a nonce that is still live.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._expiry: dict[bytes, datetime] = {}
        self._heap: list[tuple[datetime, bytes]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._expiry

    def prune(self, now: datetime) -> None:
        """Forget every nonce whose command has expired at ``now``."""
        while self._heap and self._heap[0][0] <= now:
            _, nonce = heapq.heappop(self._heap)
            del self._expiry[nonce]

    def check_and_add(self, nonce: bytes, *, expires_at: datetime, now: datetime) -> None:
        """Remember ``nonce`` until ``expires_at``, or refuse it.

        Raises:
            CommandRefused: :attr:`~RefusalReason.REPLAYED` if the nonce is held,
                :attr:`~RefusalReason.BUSY` if the cache is full of unexpired nonces,
                :attr:`~RefusalReason.EXPIRED` if ``expires_at <= now`` (nothing to keep).
        """
        self.prune(now)
        if nonce in self._expiry:
            raise CommandRefused(RefusalReason.REPLAYED)
        if expires_at <= now:
            raise CommandRefused(RefusalReason.EXPIRED)
        if len(self._expiry) >= self.max_entries:
            raise CommandRefused(RefusalReason.BUSY)
        self._expiry[nonce] = expires_at
        heapq.heappush(self._heap, (expires_at, nonce))
