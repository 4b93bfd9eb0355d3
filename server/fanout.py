"""Fan-out: one signed command to every online agent of an audience (``docs/protocol.md#fan-out``).

The technician signs one :class:`~proto.command.FanoutCommand` (audience ``all`` or
``customer:NAME``, action ``ping``). The server checks it once, audits it once, and sends the
same signed bytes to each online agent of the audience as a :class:`~proto.messages.Ping`;
each agent checks the signature, the certificate, the audience and the nonce itself and
answers :class:`~proto.messages.Pong`. The answers are counted in memory: a ping reads
nothing from the customer's machine, so there is no per-agent result to store, and the
outcome (how many answered, who did not and why) is audited once when the fan-out ends.

With several nodes, the technician's node forwards the fan-out over the bus to every node
that holds agents (:mod:`server.bus`); each node pings its own agents and answers with its
counts, which the first node adds up.

:class:`Fanouts` counts the answers of the fan-outs running on this node; :class:`FanoutService`
serves a technician's :class:`~proto.messages.Fanout` (check, audit, every node's part, the
sum) and this node's part of one another node forwards.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

import msgspec
from websockets.asyncio.server import ServerConnection, broadcast

from proto import codec
from proto import messages as m
from proto.command import (
    CommandRefused,
    RefusalReason,
    ReplayCache,
    audience_matches,
    verify_fanout,
)
from proto.session import ServerSession, State, speaks

from .bus import Forward, Forwarded
from .errors import BusError, FanoutBusy
from .node import Node
from .pki import now_utc

__all__ = ["GONE", "MAX_RUNNING", "MISSES_LISTED_BYTES", "NODE_BUSY", "NODE_UNREACHABLE",
           "NO_ANSWER", "UNSUPPORTED", "FanoutBusy", "FanoutService", "Fanouts", "Target",
           "combine", "unreachable"]

log = logging.getLogger("hw.server.fanout")

#: Fan-outs one node runs at once; more are refused with a clear message.
MAX_RUNNING = 4

NO_ANSWER = "no_answer"
GONE = "gone"
UNSUPPORTED = "unsupported"
NODE_UNREACHABLE = "node_unreachable"
NODE_BUSY = "node_busy"


class Target(Protocol):
    """What a fan-out needs of a live agent link (:class:`server.node.AgentLink`)."""

    agent_id: str
    customer: str
    ws: ServerConnection
    session: ServerSession


class _Run:
    """One fan-out in flight on this node: who has yet to answer, and the answers."""

    def __init__(self, targets: Iterable[str]) -> None:
        self.waiting: set[str] = set(targets)
        self.sent = len(self.waiting)
        self.ok = 0
        self.misses: dict[str, str] = {}
        self.done = asyncio.Event()
        if not self.waiting:
            self.done.set()

    def settle(self, agent_id: str, reason: str | None) -> None:
        """Record ``agent_id``'s outcome (``None``: ok), once; later answers are ignored."""
        if agent_id not in self.waiting:
            return
        self.waiting.discard(agent_id)
        if reason is None:
            self.ok += 1
        else:
            self.misses[agent_id] = reason
        if not self.waiting:
            self.done.set()


#: Encoded bytes of the misses an answer lists by agent; the others are only counted
#: (``FanoutDone.counts``, ``unlisted``), so an answer always fits one frame and one bus
#: message, even when a whole node of 20k agents is unreachable.
MISSES_LISTED_BYTES = 512 * 1024


def _listed(misses: Iterable[tuple[str, str]]) -> tuple[list[m.FanoutMiss], int]:
    """The misses (sorted by agent) that fit :data:`MISSES_LISTED_BYTES`, and how many did
    not."""
    listed: list[m.FanoutMiss] = []
    size = unlisted = 0
    for agent_id, reason in sorted(misses):
        size += len(agent_id) + len(reason) + 32  # {"agent_id":"","reason":""},
        if size > MISSES_LISTED_BYTES:
            unlisted += 1
        else:
            listed.append(m.FanoutMiss(agent_id=agent_id, reason=reason))
    return listed, unlisted


def _counts(reasons: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return counts


class Fanouts:
    """The fan-outs running on this node, fed by the agents' :class:`~proto.messages.Pong`.

    A fan-out is reserved with :meth:`reserve` (synchronously, so two requests cannot both
    take the last place) before anything is audited or sent, then :meth:`run_local` runs and
    releases it. Fan-out ids are the server's own (``fo-`` + random), never a client's.
    """

    def __init__(self) -> None:
        self._runs: dict[str, _Run | None] = {}

    def reserve(self, fanout_id: str) -> None:
        """Take a place for ``fanout_id``.

        Raises:
            FanoutBusy: :data:`MAX_RUNNING` fan-outs are running (or the id is in use).
        """
        if len(self._runs) >= MAX_RUNNING or fanout_id in self._runs:
            raise FanoutBusy(f"{MAX_RUNNING} fan-outs are running on this server already; "
                             "retry when one has finished")
        self._runs[fanout_id] = None

    def release(self, fanout_id: str) -> None:
        self._runs.pop(fanout_id, None)

    def answer(self, agent_id: str, pong: m.Pong) -> None:
        """An agent's answer; one for an unknown or finished fan-out is dropped."""
        run = self._runs.get(pong.re)
        if run is not None:
            run.settle(agent_id, None if pong.ok else (pong.reason or "refused"))

    def gone(self, agent_id: str) -> None:
        """The agent's connection ended: it will not answer any running fan-out."""
        for run in self._runs.values():
            if run is not None:
                run.settle(agent_id, GONE)

    async def run_local(self, fanout_id: str, command: m.SignedCommand, audience: str,
                        links: Mapping[str, Target], wait: float) -> m.FanoutDone:
        """Ping every agent in ``links`` (the live links: one replaced or dropped meanwhile
        counts ``gone``) that belongs to ``audience``; wait for the answers or ``wait``
        seconds. ``fanout_id`` must be reserved with :meth:`reserve`; it is released here."""
        try:
            targets = {aid: link for aid, link in links.items()
                       if audience_matches(audience, link.customer)}
            run = _Run(targets)
            self._runs[fanout_id] = run
            started = time.monotonic()
            # The same frame for every agent, encoded once and written to each connection
            # without a coroutine per agent (websockets' broadcast). It has no backpressure:
            # at most MAX_RUNNING frames per agent are queued, each under 10 KiB (a checked
            # fan-out command is under 1 KiB, its certificate at most 8 KiB). A connection
            # that is not open or not READY never gets it and is counted ``gone``.
            frame = codec.encode(m.Ping(id=fanout_id, command=command))
            ready = []
            for agent_id, link in targets.items():
                if link.session.state is not State.READY:
                    run.settle(agent_id, GONE)
                elif not speaks(link.session.version, m.Ping):
                    run.settle(agent_id, UNSUPPORTED)  # an agent from before fan-out
                else:
                    ready.append(link.ws)
            broadcast(ready, frame, text=True)
            try:
                async with asyncio.timeout(max(0.0, wait - (time.monotonic() - started))):
                    await run.done.wait()
            except TimeoutError:
                pass
            for agent_id in list(run.waiting):
                run.settle(agent_id, NO_ANSWER if links.get(agent_id) is targets[agent_id]
                           else GONE)
        finally:
            self.release(fanout_id)
        listed, unlisted = _listed(run.misses.items())
        return m.FanoutDone(
            re=fanout_id, audience=audience, sent=run.sent, ok=run.ok,
            seconds=round(time.monotonic() - started, 3), misses=listed,
            counts=_counts(run.misses.values()), unlisted=unlisted)


def unreachable(fanout_id: str, agent_ids: Iterable[str], wait: float,
                reason: str = NODE_UNREACHABLE) -> m.FanoutDone:
    """A node's part when that node did not take part: its agents were not reached."""
    ids = set(agent_ids)
    listed, unlisted = _listed((aid, reason) for aid in ids)
    return m.FanoutDone(re=fanout_id, audience="", sent=len(ids), ok=0, seconds=wait,
                        misses=listed, counts={reason: len(ids)} if ids else {},
                        unlisted=unlisted)


def combine(fanout_id: str, audience: str, parts: list[m.FanoutDone]) -> m.FanoutDone:
    """Add up the nodes' outcomes of one fan-out."""
    listed, unlisted = _listed((miss.agent_id, miss.reason)
                               for part in parts for miss in part.misses)
    counts: dict[str, int] = {}
    for part in parts:
        for reason, n in part.counts.items():
            counts[reason] = counts.get(reason, 0) + n
    return m.FanoutDone(
        re=fanout_id, audience=audience, sent=sum(p.sent for p in parts),
        ok=sum(p.ok for p in parts), seconds=max((p.seconds for p in parts), default=0.0),
        misses=listed, counts=counts, unlisted=unlisted + sum(p.unlisted for p in parts))


#: Nonces of fan-outs one node remembers (a replayed one is refused before any agent).
REPLAY_ENTRIES = 10_000


class FanoutService:
    """Serves fan-outs on this node: a technician's, and this node's part of another's."""

    def __init__(self, node: Node, fanouts: Fanouts) -> None:
        self.node = node
        self.fanouts = fanouts
        #: nonces of fan-outs accepted here (a replayed one is refused before any agent)
        self._replay = ReplayCache(max_entries=REPLAY_ENTRIES)

    async def run(self, tech: str, key: str, msg: m.Fanout) -> m.AnyMessage:
        """Check a fan-out once, audit it once, ping the audience on every node, add up."""
        node = self.node
        now = now_utc()
        try:
            verified = verify_fanout(msg.command, org_pub=node.org_pub, now=now, customer=None,
                                     revoked=node.revoked)
            if verified.command.tech != tech or verified.cert.fingerprint != key:
                raise CommandRefused(RefusalReason.WRONG_TECHNICIAN,
                                     "the command is not signed with the key the connected "
                                     f"technician {tech} logged in with")
            fanout_id = "fo-" + secrets.token_hex(8)
            self.fanouts.reserve(fanout_id)  # before the nonce is used up: busy is no refusal
            try:  # only now, once it is the technician's own and will run, use up the nonce
                self._replay.check_and_add(verified.command.nonce,
                                           expires_at=verified.command.expires_at, now=now)
            except CommandRefused:
                self.fanouts.release(fanout_id)
                raise
        except FanoutBusy as exc:
            return m.Error(re=msg.id, code=m.ErrorCode.REFUSED, message=str(exc))
        except CommandRefused as exc:
            await node.audit(event="fanout", actor=f"tech:{tech}", subject="fanout", now=now,
                             detail={"request": msg.id, "verdict": "refused",
                                     "reason": exc.reason.value})
            return m.Error(re=msg.id, code=m.ErrorCode.REFUSED,
                           message=f"{exc.reason.value}: {exc.message}")
        audience = verified.command.audience
        run = m.Fanout(id=fanout_id, command=msg.command, timeout=msg.timeout)
        try:
            await node.audit(event="fanout", actor=f"tech:{tech}", subject=audience, now=now,
                             detail={"fanout": fanout_id, "request": msg.id,
                                     "verdict": "relayed", "action": verified.command.action})
            others = (await node.presence.nodes(now) - {node.node_id}
                      if node.presence is not None else set())
        except BaseException:
            self.fanouts.release(fanout_id)
            raise
        parts = await asyncio.gather(
            self.fanouts.run_local(fanout_id, msg.command, audience, node.links, msg.timeout),
            *(self._there(where, run, audience) for where in sorted(others)))
        done = msgspec.structs.replace(combine(fanout_id, audience, list(parts)), re=msg.id)
        await node.audit(event="fanout.done", actor=f"tech:{tech}", subject=audience,
                         now=now_utc(), detail={"fanout": fanout_id, "sent": done.sent,
                                                "ok": done.ok, "misses": done.counts,
                                                "nodes": 1 + len(others)})
        log.info("fan-out %s to %s by %s: %d sent, %d ok in %.3fs", fanout_id, audience, tech,
                 done.sent, done.ok, done.seconds)
        return done

    async def serve_forward(self, msg: m.Fanout) -> Forwarded:
        """This node's part of a fan-out another node checked, audited and numbered. Checked
        again here (not the nonce: every node sees the same one) before any agent sees it."""
        node = self.node
        try:
            verified = verify_fanout(msg.command, org_pub=node.org_pub, now=now_utc(),
                                     customer=None, revoked=node.revoked)
            self.fanouts.reserve(msg.id)
        except CommandRefused as exc:
            return Forwarded(error=f"refused: {exc.reason.value}")
        except FanoutBusy:
            return Forwarded(error="busy")
        return Forwarded(fanout=await self.fanouts.run_local(
            msg.id, msg.command, verified.command.audience, node.links, msg.timeout))

    async def _there(self, where: str, msg: m.Fanout, audience: str) -> m.FanoutDone:
        """Node ``where``'s part. If that node does not take part, its agents of the
        audience (by their presence leases) are reported ``node_unreachable`` (or
        ``node_busy``), not left out."""
        node = self.node
        try:
            answer = await node.bus.request(where, Forward(fanout=msg), wait=msg.timeout + 5)
            if answer.fanout is not None:
                return answer.fanout
            why = answer.error
        except (TimeoutError, BusError) as exc:
            why = type(exc).__name__
        log.warning("fan-out %s: node %s did not take part (%s)", msg.id, where, why)
        assert node.presence is not None
        held = await node.presence.agents_on(where, now_utc())
        if audience != "all":
            held &= {a.agent_id for a in await node.store.list_agents(
                customer=audience.removeprefix("customer:"))}
        return unreachable(msg.id, held, msg.timeout,
                           NODE_BUSY if why == "busy" else NODE_UNREACHABLE)
