"""SSH tunnels through the server: pair two websockets and relay opaque bytes.

A technician sends :class:`~proto.messages.OpenTunnel` on a fresh ``/tech`` connection; the
server checks the signed command (to fail fast; the agent checks again), asks the agent on
its ``run`` link with a ``tunnel`` :class:`~proto.messages.Request`, and waits for the agent
to dial a second ``/agent`` connection in mode ``tunnel`` naming the request id. It then
answers :class:`~proto.messages.TunnelOpen` (with the agent's enrolled key as the SSH host
key) and relays binary frames both ways until either side closes. The SSH session inside is
end to end between the technician's client and the agent: the server sees ciphertext only.

Backpressure: a frame is read from one side only once the previous one was written to the
other (``send`` waits while the peer's TCP buffer is full) and each connection queues at
most ``max_queue`` received frames, so a side that stops reading stalls its peer instead of
growing the server's memory. See ``docs/protocol.md#tunnels``.

Revocation: the technician's key is checked against the store before the tunnel is asked
for, and while it relays, a revocation of that key closes both ends
(:class:`server.sessions.TechSessions`); the audit's ``tunnel.closed`` then says
``ended_by: revocation``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from proto import messages as m
from proto.command import refusal_message, verify_command
from proto.errors import CloseCode, CommandRefused, RefusalReason, UnexpectedMessage

from .sessions import TechSessions
from .store import NotFound, RecordingRecord, Store, StoreError

log = logging.getLogger("hw.server.tunnel")

#: How long a technician's ``open_tunnel`` waits for the agent's tunnel connection at most.
AGENT_DIAL_TIMEOUT = 30.0
#: Write-buffer high-water mark of websocket connections (bytes): ``send`` returns once the
#: buffer is below it. Large enough for a tunnel to keep a 256 KiB frame in flight, small
#: enough that a peer that stops reading costs at most this much per connection.
TUNNEL_WRITE_LIMIT = 512 * 1024
#: Recordings listed per case at most (newest first).
RECORDINGS_LIMIT = 200


def now_utc() -> datetime:
    return datetime.now(UTC)


def openssh_host_key(public_key: bytes) -> str:
    """The agent's enrolled raw Ed25519 key as an OpenSSH public key line."""
    key = Ed25519PublicKey.from_public_bytes(public_key)
    return key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode("ascii")


@dataclass
class _Waiter:
    agent_id: str
    future: asyncio.Future[tuple[ServerConnection, asyncio.Event]]


@dataclass
class RelayStats:
    """Bytes relayed each way, for the audit log."""

    to_agent: int = 0
    to_tech: int = 0
    ended_by: str = ""
    started: float = field(default_factory=lambda: asyncio.get_running_loop().time())


class TunnelBroker:
    """Tunnels waiting for their agent connection, and the relays running."""

    def __init__(self) -> None:
        self._waiting: dict[str, _Waiter] = {}
        self.active = 0

    def expect(self, tunnel_id: str, agent_id: str
               ) -> asyncio.Future[tuple[ServerConnection, asyncio.Event]]:
        """Register a tunnel id the agent ``agent_id`` is about to dial in for."""
        future: asyncio.Future[tuple[ServerConnection, asyncio.Event]] = \
            asyncio.get_running_loop().create_future()
        self._waiting[tunnel_id] = _Waiter(agent_id, future)
        return future

    def forget(self, tunnel_id: str) -> None:
        self._waiting.pop(tunnel_id, None)

    async def agent_arrived(self, tunnel_id: str, agent_id: str, ws: ServerConnection) -> None:
        """An authenticated agent connection in mode ``tunnel``: hand it to the waiting
        technician and hold it open until the relay is over.

        Raises:
            UnexpectedMessage: no tunnel with that id waits for this agent (closes 4002).
        """
        waiter = self._waiting.pop(tunnel_id, None)
        if waiter is None or waiter.agent_id != agent_id or waiter.future.done():
            raise UnexpectedMessage("no tunnel with this id is waiting for this agent; the "
                                    "technician gave up or it was already connected")
        done = asyncio.Event()
        waiter.future.set_result((ws, done))
        await done.wait()


async def _pump(src: ServerConnection, dst: ServerConnection, stats: RelayStats,
                to_agent: bool) -> None:
    """Copy binary frames from ``src`` to ``dst`` until ``src`` closes."""
    try:
        while True:
            frame = await src.recv(decode=False)
            if not isinstance(frame, bytes):  # pragma: no cover - recv(decode=False) is bytes
                return
            await dst.send(frame, text=False)
            if to_agent:
                stats.to_agent += len(frame)
            else:
                stats.to_tech += len(frame)
    except ConnectionClosed:
        return


async def relay(tech: ServerConnection, agent: ServerConnection) -> RelayStats:
    """Relay binary frames both ways; when either side goes, close the other."""
    stats = RelayStats()
    up = asyncio.create_task(_pump(tech, agent, stats, True))
    down = asyncio.create_task(_pump(agent, tech, stats, False))
    try:
        done, _pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        stats.ended_by = "technician" if up in done else "agent"
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
        reason = f"tunnel closed by the {stats.ended_by or 'server'}"
        await asyncio.gather(tech.close(int(CloseCode.NORMAL), reason),
                             agent.close(int(CloseCode.NORMAL), reason),
                             return_exceptions=True)
    return stats


# -- the technician's open_tunnel ---------------------------------------------------------

@dataclass
class TunnelContext:
    """The server's parts a tunnel needs (callables, so this module never imports app)."""

    store: Store
    broker: TunnelBroker
    org_pub: bytes
    revoked: Callable[[], list[str]]
    agent_of: Callable[[str], Awaitable[str]]
    send_request: Callable[[str, m.Request], Awaitable[None]]
    pending_result: Callable[[str, str, str], asyncio.Future[tuple[m.Result, datetime]] | None]
    drop_pending: Callable[[str], None]
    sessions: TechSessions


async def open_tunnel(ctx: TunnelContext, *, tech: str, key: str, msg: m.OpenTunnel,
                      ws: ServerConnection, reply: Callable[[m.AnyMessage], Awaitable[None]]
                      ) -> bool:
    """Serve one ``open_tunnel``: verify, ask the agent, pair, relay until either side goes.

    Returns whether the connection became a tunnel (it is closed then). Every refusal is an
    :class:`~proto.messages.Error` reply on the technician's connection, which stays a
    normal session (it may retry), and ``False``.
    """
    try:
        refused = await ctx.sessions.refusal(tech, key, msg)
        if refused is not None:
            await reply(refused)
            return False
        agent_id = await ctx.agent_of(msg.case)
    except NotFound as exc:
        await reply(m.Error(re=msg.id, code=m.ErrorCode.NOT_FOUND, message=str(exc)))
        return False
    except StoreError as exc:
        await reply(m.Error(re=msg.id, code=m.ErrorCode.INTERNAL, message=str(exc)))
        return False
    now = now_utc()
    try:
        verified = verify_command(msg.command, org_pub=ctx.org_pub, now=now, agent_id=agent_id,
                                  case=msg.case, action=m.Action.TUNNEL.value,
                                  revoked=ctx.revoked())
        if verified.command.tech != tech or verified.cert.fingerprint != key:
            raise CommandRefused(RefusalReason.WRONG_TECHNICIAN,
                                 "the command is not signed with the key the connected "
                                 f"technician {tech} logged in with")
    except CommandRefused as exc:
        await ctx.store.append_audit(
            event="command", actor=f"tech:{tech}", subject=msg.case, now=now,
            detail={"action": "tunnel", "agent": agent_id, "verdict": "refused",
                    "reason": exc.reason.value})
        text = refusal_message(exc, msg.command, org_pub=ctx.org_pub, now=now)
        await reply(m.Error(re=msg.id, code=m.ErrorCode.REFUSED,
                            message=f"{exc.reason.value}: {text}"))
        return False
    agent = await ctx.store.get_agent(agent_id)
    assert agent is not None  # the case names it
    tunnel_id = "tn-" + secrets.token_hex(8)
    arrived = ctx.broker.expect(tunnel_id, agent_id)
    result = ctx.pending_result(tunnel_id, agent_id, msg.case)
    if result is None:
        ctx.broker.forget(tunnel_id)
        await reply(m.Error(re=msg.id, code=m.ErrorCode.AGENT_OFFLINE,
                            message=f"agent {agent_id} of case {msg.case} is offline; ask the "
                                    "customer to start `hw-agent run`, then retry"))
        return False
    await ctx.store.append_audit(
        event="command", actor=f"tech:{tech}", subject=msg.case, now=now,
        detail={"action": "tunnel", "agent": agent_id, "verdict": "relayed",
                "request": tunnel_id, "args": verified.command.args})
    try:
        async with asyncio.timeout(min(msg.timeout, AGENT_DIAL_TIMEOUT)):
            await ctx.send_request(agent_id, m.Request(
                id=tunnel_id, case=msg.case, action=m.Action.TUNNEL, tech=tech,
                timeout=msg.timeout, command=msg.command))
            either: set[asyncio.Future[Any]] = {arrived, result}
            done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        await reply(m.Error(re=msg.id, code=m.ErrorCode.TIMEOUT,
                            message="the agent did not open the tunnel in time; retry, and "
                                    "check that `hw-agent run` is connected"))
        return False
    except ConnectionClosed:
        await reply(m.Error(re=msg.id, code=m.ErrorCode.AGENT_OFFLINE,
                            message=f"agent {agent_id} went offline; retry when it is back"))
        return False
    finally:
        ctx.broker.forget(tunnel_id)
        ctx.drop_pending(tunnel_id)
    if arrived not in done:
        try:
            answer, _at = result.result()
        except Exception:  # the agent's run link went away
            await reply(m.Error(re=msg.id, code=m.ErrorCode.AGENT_OFFLINE,
                                message=f"agent {agent_id} went offline; retry when it is "
                                        "back"))
            return False
        await reply(m.Error(re=msg.id, code=m.ErrorCode.REFUSED,
                            message=f"the agent refused: {answer.error or 'no reason given'}"))
        return False
    agent_ws, released = arrived.result()
    try:
        # Durably, before any byte flows: a recording is kept only for a tunnel on record
        # (server/recordings.py), attributed from this row. No record, no tunnel.
        await ctx.store.tunnel_opened(tunnel_id=tunnel_id, agent_id=agent_id, case=msg.case,
                                      tech=tech, key_fingerprint=key, now=now_utc())
    except Exception:
        released.set()
        log.exception("tunnel %s not opened: it could not be recorded", tunnel_id)
        await reply(m.Error(re=msg.id, code=m.ErrorCode.INTERNAL,
                            message="the server could not record the tunnel, so it did not "
                                    "open it; retry, and tell an operator if it persists"))
        return False
    try:
        await reply(m.TunnelOpen(re=msg.id, case=msg.case, tunnel=tunnel_id,
                                 host_key=openssh_host_key(agent.public_key)))
        log.info("tunnel %s open: technician %s <-> agent %s (case %s)", tunnel_id, tech,
                 agent_id, msg.case)
        ctx.broker.active += 1
        try:
            with ctx.sessions.tunnel(ws, agent_ws) as held:  # a revocation closes both ends
                stats = await relay(ws, agent_ws)
            if held is not None and held.revoked:
                stats.ended_by = "revocation"
        finally:
            ctx.broker.active -= 1
        took = asyncio.get_running_loop().time() - stats.started
        log.info("tunnel %s closed by the %s after %.1fs (%d bytes to the agent, %d to the "
                 "technician)", tunnel_id, stats.ended_by, took, stats.to_agent, stats.to_tech)
        await ctx.store.append_audit(
            event="tunnel.closed", actor=f"tech:{tech}", subject=msg.case, now=now_utc(),
            detail={"tunnel": tunnel_id, "agent": agent_id, "ended_by": stats.ended_by,
                    "seconds": round(took, 1), "bytes_to_agent": stats.to_agent,
                    "bytes_to_tech": stats.to_tech})
    finally:
        released.set()
        try:
            await ctx.store.tunnel_closed(tunnel_id, now_utc())
        except Exception:  # the row stays open-ended; recordings still match it
            log.exception("could not record that tunnel %s closed", tunnel_id)
    return True


# -- recordings (arrival: server/recordings.py) ------------------------------------------


def recording_info(rec: RecordingRecord) -> m.RecordingInfo:
    return m.RecordingInfo(id=rec.recording_id, case=rec.case, tech=rec.tech,
                           kind=m.RecordingKind(rec.kind), started_at=rec.started_at,
                           ended_at=rec.ended_at, size=rec.size, sha256=rec.sha256.hex(),
                           sealed=rec.sealed, agent=rec.agent_id, tunnel=rec.tunnel_id)


async def get_recording(store: Store, msg: m.GetRecording) -> m.AnyMessage:
    """The case's recordings, newest first, with the data of the one asked for (sealed to
    the recording key as stored; the technician's ``hw-tech`` opens it and checks the
    plaintext's SHA-256, which the server cannot)."""
    recs = await store.list_recordings(msg.case)
    infos = [recording_info(r) for r in recs[:RECORDINGS_LIMIT]]
    wanted = msg.recording or (recs[0].recording_id if recs else None)
    if wanted is None:
        return m.RecordingData(re=msg.id, case=msg.case, recordings=[])
    data = await store.get_recording(wanted)
    if data is None or data.case != msg.case:
        return m.Error(re=msg.id, code=m.ErrorCode.NOT_FOUND,
                       message=f"no recording {wanted} on case {msg.case}; list them with "
                               f"`hw-tech recording {msg.case} --list`")
    if not data.sealed and hashlib.sha256(data.data).digest() != data.sha256:
        return m.Error(re=msg.id, code=m.ErrorCode.INTERNAL,
                       message=f"recording {wanted} does not match its stored hash; tell an "
                               "operator (the store may be damaged)")
    return m.RecordingData(re=msg.id, case=msg.case, recordings=infos,
                           info=recording_info(data), data=data.data)
