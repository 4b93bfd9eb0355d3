"""Session recordings as they arrive from agents: believed only for a brokered tunnel,
bounded per agent, validated, and sealed at rest to the recording key.

An agent's :class:`~proto.messages.Recording` is kept only if, in this order:

1. it names a tunnel this server brokered (table ``tunnels``, :mod:`server.tunnel`) to this
   agent on this case — or, from an agent that does not name it (protocol v2), exactly one
   such tunnel of the named technician was open when the recording started (strict match,
   :data:`MATCH_SLACK` for the agent's clock); the technician, key, case and agent stored
   are the tunnel's, never the message's, and a message naming another technician is
   refused;
2. its tunnel holds fewer than ``recordings_per_tunnel`` recordings (a tunnel's channels);
3. the agent stored fewer than ``recordings_per_minute`` in the last minute and at most
   ``recording_bytes_per_hour`` bytes in the last hour, this one included;
4. it is well-formed (:mod:`proto.asciicast`);
5. the server has a recording public key (``recording.pub`` in its home) to seal it to
   (:mod:`proto.sealed`); without one the recording is *not* refused: the answer is an
   ``internal`` error, so the agent keeps it in its outbox and sends it again after its next
   reconnect, and the operator log says to install the key. A damaged or unreadable
   ``recording.pub`` is treated the same (logged once, not per recording; the agent's
   connection stays up). No recording is stored unsealed.

One recording of an agent at a time on each node, from the resend check to the store (a
per-agent :class:`asyncio.Lock`), so concurrent connections of one agent cannot pass a quota
together; agents connected to several nodes at once can, by a recording per extra node.

A refusal is an :class:`~proto.messages.Error` ``refused`` naming the recording, which the
agent's outbox takes as final (it does not resend), audited ``recording.refused`` with the
reason (quota refusals: one audit entry per agent, quota and minute, counting the others,
so a flood cannot grow the audit log as it could the store). A resend of a stored recording is
acknowledged without any check.

What sealing protects and what not: a copy of the database (a backup, a stolen disk, a
read-only SQL injection) reveals no session; a live compromised server still sees every
recording as it arrives (it seals them). The private half (``recording.key``) belongs to
the auditors and supervisors, off the server; ``hw-server init`` in the simple layout writes
it to ``HOME/offline/`` with a notice to move it away.

Also here: ``hw-server recording-key`` (install a public key or make a new pair) and the
key step of ``hw-server init`` (:func:`init_recording_key`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from proto import messages as m
from proto import sealed
from proto.asciicast import RecordingInvalid, validate

from .cliargs import _home
from .config import ServerConfig
from .errors import ServerError
from .files import replace_file
from .pki import now_utc
from .store import NotFound, Store
from .store.records import TunnelRecord

log = logging.getLogger("hw.server.recordings")

#: The server's recording public key, in its home.
PUB_NAME = "recording.pub"
#: Where ``hw-server init`` (simple layout) puts the private half: not read at runtime.
OFFLINE_DIR = "offline"
KEY_NAME = "recording.key"
#: How far a v2 agent's ``started_at`` may lie outside its tunnel's open..close (its clock).
MATCH_SLACK = timedelta(minutes=5)
#: Quota refusals are audited at most once per agent and quota in this many seconds.
QUOTA_AUDIT_EVERY = 60.0


class Refused(Exception):
    """A recording refused for good; ``reason`` is the audit code, the text says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_public_key(home: Path) -> X25519PublicKey | None:
    """``home/recording.pub``, or ``None`` when the home has none.

    Raises:
        ServerError: the file exists but is not an X25519 public key.
    """
    path = home / PUB_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ServerError(f"cannot read {path} ({exc.strerror}); fix its permissions") from None
    try:
        return sealed.load_public(data)
    except sealed.SealError as exc:
        raise ServerError(f"{path}: {exc}; install the right one with `hw-server "
                          f"recording-key --home {home} --pub FILE --replace`") from None


@dataclass
class _QuotaAudit:
    last: float = 0.0
    suppressed: int = 0


@dataclass
class _AgentLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass
class RecordingDesk:
    """Receives agents' recordings for one server node."""

    store: Store
    cfg: ServerConfig
    _key: X25519PublicKey | None = None
    #: why ``recording.pub`` cannot be used (logged once), ``None``: usable or absent
    _key_error: str | None = None
    _quota_audits: dict[str, _QuotaAudit] = field(default_factory=dict)
    _locks: dict[str, _AgentLock] = field(default_factory=dict)

    def public_key(self) -> X25519PublicKey | None:
        """The recording public key (read until found, then kept); ``None`` while there is
        none or it cannot be used (damaged, unreadable: logged once, see ``_key_error``)."""
        if self._key is None:
            try:
                self._key = load_public_key(self.cfg.home)
            except ServerError as exc:
                if str(exc) != self._key_error:
                    log.error("cannot use the recording key: %s; until then recordings are "
                              "held back in the agents' outboxes (sent again after their "
                              "next reconnect)", exc)
                self._key_error = str(exc)
                return None
            self._key_error = None
        return self._key

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, agent_id: str) -> AsyncIterator[None]:
        """One recording of ``agent_id`` at a time on this node, from check to store, so
        concurrent connections of one agent cannot pass a quota together."""
        entry = self._locks.setdefault(agent_id, _AgentLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._locks[agent_id]

    async def receive(self, agent_id: str, msg: m.Recording) -> m.AnyMessage:
        """Store ``msg`` from the authenticated agent ``agent_id``, or say why not."""
        async with self._one_at_a_time(agent_id):
            return await self._receive(agent_id, msg)

    async def _receive(self, agent_id: str, msg: m.Recording) -> m.AnyMessage:
        store = self.store
        if await store.recording_exists(msg.id):
            return m.Ack(re=msg.id)  # a resend: stored already (by the earlier copy)
        now = now_utc()
        tunnel: TunnelRecord | None = None
        try:
            tunnel = await self._tunnel(agent_id, msg)
            await self._quota(agent_id, tunnel, msg, now)
            key = self.public_key()
            if key is None:
                if self._key_error is not None:  # logged once by public_key()
                    return m.Error(re=msg.id, code=m.ErrorCode.INTERNAL, message=(
                        "the server cannot use its recording key and keeps no recording "
                        "unsealed; the recording stays in the agent's outbox and is sent "
                        "again after the next reconnect"))
                log.warning("recording %s of agent %s is held back: this server has no "
                            "recording key (%s); install one with `hw-server recording-key "
                            "--home %s`", msg.id, agent_id, PUB_NAME, self.cfg.home)
                return m.Error(re=msg.id, code=m.ErrorCode.INTERNAL, message=(
                    "the server has no recording key yet and keeps no recording unsealed; "
                    "the recording stays in the agent's outbox and is sent again after the "
                    "next reconnect"))
            blob = await asyncio.to_thread(self._check_and_seal, key, agent_id, msg)
        except Refused as exc:
            return await self._refuse(agent_id, msg, tunnel, exc, now)
        try:
            await store.store_recording(
                recording_id=msg.id, agent_id=agent_id, case=tunnel.case, tech=tunnel.tech,
                kind=msg.kind.value, started_at=msg.started_at, ended_at=msg.ended_at,
                data=blob, now=now, tunnel_id=tunnel.tunnel_id,
                key_fingerprint=tunnel.key_fingerprint, sealed=True, size=len(msg.data),
                sha256=hashlib.sha256(msg.data).digest())
        except NotFound as exc:  # the case is not this agent's (the tunnel says it is)
            return await self._refuse(agent_id, msg, tunnel,
                                      Refused("not_this_agents_case", str(exc)), now)
        return m.Ack(re=msg.id)

    @staticmethod
    def _check_and_seal(key: X25519PublicKey, agent_id: str, msg: m.Recording) -> bytes:
        try:
            validate(msg.kind.value, msg.data)
        except RecordingInvalid as exc:
            raise Refused("malformed", f"recording {msg.id} is not a well-formed "
                          f"{msg.kind.value} recording: {exc}") from None
        return sealed.seal(key, msg.data, sealed.associated_data(agent_id, msg.case, msg.id),
                           ephemeral=X25519PrivateKey.generate(), nonce=os.urandom(12))

    async def _tunnel(self, agent_id: str, msg: m.Recording) -> TunnelRecord:
        """The brokered tunnel ``msg`` was recorded in (:class:`Refused` if none)."""
        if msg.tunnel is not None:
            tunnel = await self.store.get_tunnel(msg.tunnel)
            if tunnel is None or tunnel.agent_id != agent_id or tunnel.case != msg.case:
                raise Refused("no_such_tunnel", (
                    f"recording {msg.id} names tunnel {msg.tunnel}, which this server did not "
                    f"broker to this agent on case {msg.case}; it is not kept"))
        else:
            found = await self.store.find_tunnels(agent_id=agent_id, case=msg.case,
                                                  tech=msg.tech, started=msg.started_at,
                                                  slack=MATCH_SLACK)
            if not found:
                raise Refused("no_such_tunnel", (
                    f"recording {msg.id} names no tunnel and this server brokered no tunnel "
                    f"of that technician to this agent on case {msg.case} at that time; it "
                    "is not kept"))
            if len(found) > 1:
                raise Refused("ambiguous_tunnel", (
                    f"recording {msg.id} names no tunnel and {len(found)} tunnels on case "
                    f"{msg.case} match it; it is not kept (an agent speaking protocol 3 "
                    "names the tunnel)"))
            tunnel = found[0]
        if msg.tech != tunnel.tech:
            raise Refused("wrong_technician", (
                f"recording {msg.id} is attributed to another technician than the one the "
                f"server brokered tunnel {tunnel.tunnel_id} for; it is not kept"))
        return tunnel

    async def _quota(self, agent_id: str, tunnel: TunnelRecord, msg: m.Recording,
                     now: datetime) -> None:
        cfg = self.cfg
        if await self.store.count_tunnel_recordings(tunnel.tunnel_id) >= \
                cfg.recordings_per_tunnel:
            raise Refused("quota_tunnel", (
                f"tunnel {tunnel.tunnel_id} already has {cfg.recordings_per_tunnel} "
                "recordings, the most one tunnel keeps (recordings_per_tunnel); this one is "
                "not kept"))
        usage = await self.store.recording_usage(agent_id, now)
        if usage.count_last_minute >= cfg.recordings_per_minute:
            raise Refused("quota_rate", (
                f"this agent sent {usage.count_last_minute} recordings in the last minute, "
                f"the most the server keeps (recordings_per_minute = "
                f"{cfg.recordings_per_minute}); recording {msg.id} is not kept"))
        if usage.bytes_last_hour + len(msg.data) > cfg.recording_bytes_per_hour:
            raise Refused("quota_bytes", (
                f"this agent's recordings of the last hour hold {usage.bytes_last_hour} bytes;"
                f" with {len(msg.data)} more it would pass recording_bytes_per_hour = "
                f"{cfg.recording_bytes_per_hour}; recording {msg.id} is not kept"))

    async def _refuse(self, agent_id: str, msg: m.Recording, tunnel: TunnelRecord | None,
                      exc: Refused, now: datetime) -> m.AnyMessage:
        log.info("recording %s of agent %s refused (%s)", msg.id, agent_id, exc.reason)
        detail: dict[str, Any] = {"recording": msg.id, "reason": exc.reason,
                                  "kind": msg.kind.value, "size": len(msg.data),
                                  "claimed_tech": msg.tech, "tunnel": msg.tunnel}
        if tunnel is not None:
            detail["tech"] = tunnel.tech
        audit = True
        if exc.reason.startswith("quota_"):
            state = self._quota_audits.setdefault(f"{agent_id} {exc.reason}", _QuotaAudit())
            clock = asyncio.get_running_loop().time()
            if state.last and clock - state.last < QUOTA_AUDIT_EVERY:
                state.suppressed += 1
                audit = False
            else:
                detail["refused_unaudited_before"] = state.suppressed
                state.last, state.suppressed = clock, 0
        if audit:
            await self.store.append_audit(event="recording.refused", actor=f"agent:{agent_id}",
                                          subject=msg.case, now=now, detail=detail)
        return m.Error(re=msg.id, code=m.ErrorCode.REFUSED, message=str(exc)[:4000])


# -- what the technician's session is sent ------------------------------------------------


def for_version(msg: m.RecordingData, version: int | None) -> m.AnyMessage:
    """``msg`` as a technician session at ``version`` may receive it: before v3 without
    the v3 fields, and a sealed recording's data refused (that hw-tech cannot open it)."""
    if version is not None and version >= 3:
        return msg
    if msg.info is not None and msg.info.sealed:
        return m.Error(re=msg.re, code=m.ErrorCode.BAD_REQUEST, message=(
            f"recording {msg.info.id} is sealed at rest and this hw-tech (protocol version "
            f"{version}) cannot open it; upgrade hw-tech"))

    def old(info: m.RecordingInfo) -> m.RecordingInfo:
        return msgspec.structs.replace(info, sealed=False, agent=None, tunnel=None)

    return msgspec.structs.replace(
        msg, recordings=[old(i) for i in msg.recordings],
        info=None if msg.info is None else old(msg.info))


# -- keys: hw-server init and hw-server recording-key -------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _install_public(home: Path, key: X25519PublicKey) -> None:
    """Write ``home/recording.pub`` in one step: a temporary file in the home, then
    :func:`os.replace`, so a reader sees the old key or the new one, never none."""
    replace_file(home / PUB_NAME, sealed.public_pem(key))


def make_key_pair(home: Path) -> Path:
    """A new recording key pair: the private half in ``home/offline/recording.key``
    (0600), then ``recording.pub`` in ``home`` replaced in one step; returns the private
    key's path. Nothing is changed when it fails.

    Raises:
        ServerError: ``offline/recording.key`` exists already (never overwritten), or a file
            cannot be written.
    """
    priv = X25519PrivateKey.generate()
    path = home / OFFLINE_DIR / KEY_NAME
    pub = home / PUB_NAME
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ServerError(f"cannot make the directory {path.parent} ({exc.strerror}); remove "
                          f"what is in its place and retry; {pub} is unchanged") from None
    try:
        _write_private(path, sealed.private_pem(priv))
    except FileExistsError:
        raise ServerError(
            f"{path} exists already (the private half of the current recording key, or of an "
            "earlier one); move it off this server to the auditors first (it opens every "
            f"recording sealed to it), then retry; {pub} is unchanged") from None
    except OSError as exc:
        raise ServerError(f"cannot write {path} ({exc.strerror}); fix the permissions of "
                          f"{path.parent} and retry; {pub} is unchanged") from None
    try:
        _install_public(home, priv.public_key())
    except OSError as exc:
        path.unlink(missing_ok=True)  # nothing is sealed to it yet
        raise ServerError(f"cannot write {pub} ({exc.strerror}); fix the permissions of "
                          f"{home} and retry; {pub} is unchanged") from None
    return path


def init_recording_key(home: Path) -> list[str]:
    """The recording-key step of ``hw-server init`` (simple layout): make the pair and
    return the lines to print."""
    path = make_key_pair(home)
    return [f"  recording key {home / PUB_NAME} (recordings are sealed to it at rest)",
            f"  !! its private half is {path}: move it OFF this server to the auditors "
            "(hw-tech reads recording.key in the technician home or --key FILE); the server "
            "never reads it"]


def cmd_recording_key(args: argparse.Namespace) -> int:
    home = _home(args)
    ServerConfig.load(home)  # a server home, or a clear error
    pub = home / PUB_NAME
    if pub.exists() and not args.replace:
        raise ServerError(f"{pub} exists already; add --replace to seal new recordings to "
                          "another key (recordings sealed before stay sealed to the old one)")
    if args.pub:
        try:
            key = sealed.load_public(Path(args.pub).read_bytes())
        except OSError as exc:
            raise ServerError(f"cannot read {args.pub} ({exc.strerror})") from None
        except sealed.SealError as exc:
            raise ServerError(f"{args.pub}: {exc}") from None
        try:
            _install_public(home, key)
        except OSError as exc:
            raise ServerError(f"cannot write {pub} ({exc.strerror}); fix the permissions of "
                              f"{home} and retry; {pub} is unchanged") from None
        print(f"recording key {sealed.key_id(key)} installed as {pub}; restart "
              "`hw-server run` so it seals new recordings to it")
        return 0
    path = make_key_pair(home)  # recording.pub is replaced only once the pair is made
    made = load_public_key(home)
    assert made is not None
    print(f"recording key {sealed.key_id(made)} made: {pub}")
    print(f"!! its private half is {path}: move it OFF this server to the auditors; restart "
          "`hw-server run` so it seals new recordings to it")
    return 0


def add_recording_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser(
        "recording-key", parents=[common],
        help="the key session recordings are sealed to at rest: install one (--pub FILE) or "
             "make a new pair (private half to HOME/offline/)",
        description="Recordings are sealed on arrival to recording.pub in the server home; "
                    "only recording.key opens them (hw-tech recording --key). Make the pair "
                    "offline, e.g. `openssl genpkey -algorithm X25519 -out recording.key; "
                    "openssl pkey -in recording.key -pubout -out recording.pub`, and install "
                    "the public half with --pub; without --pub a pair is made here, its "
                    "private half in HOME/offline/recording.key to be moved away.")
    s.add_argument("--pub", metavar="FILE", help="install this X25519 public key (PEM)")
    s.add_argument("--replace", action="store_true",
                   help="replace the key in place (older recordings stay sealed to the old); "
                        "without --pub, move the old HOME/offline/recording.key away first")
    s.set_defaults(func=cmd_recording_key)
