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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Protocol

from websockets.asyncio.server import ServerConnection, broadcast

from proto import codec
from proto import messages as m
from proto.command import audience_matches
from proto.session import ServerSession, State, speaks

log = logging.getLogger("hw.server.fanout")

#: Fan-outs one node runs at once; more are refused with a clear message.
MAX_RUNNING = 4

NO_ANSWER = "no_answer"
GONE = "gone"
UNSUPPORTED = "unsupported"
NODE_UNREACHABLE = "node_unreachable"
NODE_BUSY = "node_busy"


class Target(Protocol):
    """What a fan-out needs of a live agent link (server.app.AgentLink)."""

    agent_id: str
    customer: str
    ws: ServerConnection
    session: ServerSession


class FanoutBusy(Exception):
    """Too many fan-outs are running on this node."""


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
                        links: dict[str, Target], wait: float) -> m.FanoutDone:
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
