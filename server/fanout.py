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
from collections.abc import Awaitable, Callable, Iterable
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


class Target(Protocol):
    """What a fan-out needs of a live agent link (server.app.AgentLink)."""

    agent_id: str
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


class Fanouts:
    """The fan-outs running on this node, fed by the agents' :class:`~proto.messages.Pong`."""

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}

    def busy(self) -> str:
        """Why no fan-out can start now ("" when one can)."""
        if len(self._runs) >= MAX_RUNNING:
            return (f"{MAX_RUNNING} fan-outs are running on this server already; retry when "
                    "one has finished")
        return ""

    def answer(self, agent_id: str, pong: m.Pong) -> None:
        """An agent's answer; one for an unknown or finished fan-out is dropped."""
        run = self._runs.get(pong.re)
        if run is not None:
            run.settle(agent_id, None if pong.ok else (pong.reason or "refused"))

    async def run_local(self, fanout_id: str, command: m.SignedCommand, audience: str,
                        links: dict[str, Target],
                        customer_of: Callable[[], Awaitable[dict[str, str]]],
                        wait: float) -> m.FanoutDone:
        """Ping every agent in ``links`` that belongs to ``audience``; wait for the answers
        or ``wait`` seconds. ``customer_of`` is asked (once) only for a customer audience.

        Raises:
            FanoutBusy: :data:`MAX_RUNNING` fan-outs are running already.
        """
        if self.busy():
            raise FanoutBusy(self.busy())
        if audience == "all":
            targets = dict(links)
        else:
            customers = await customer_of()
            targets = {aid: link for aid, link in links.items()
                       if audience_matches(audience, customers.get(aid, ""))}
        run = _Run(targets)
        self._runs[fanout_id] = run
        started = time.monotonic()
        try:
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
            del self._runs[fanout_id]
        return m.FanoutDone(
            re=fanout_id, audience=audience, sent=run.sent, ok=run.ok,
            seconds=round(time.monotonic() - started, 3),
            misses=[m.FanoutMiss(agent_id=aid, reason=why)
                    for aid, why in sorted(run.misses.items())])


def unreachable(fanout_id: str, agent_ids: Iterable[str], wait: float) -> m.FanoutDone:
    """A node's part when that node did not answer: its agents were not reached."""
    ids = sorted(agent_ids)
    return m.FanoutDone(re=fanout_id, audience="", sent=len(ids), ok=0, seconds=wait,
                        misses=[m.FanoutMiss(agent_id=aid, reason=NODE_UNREACHABLE)
                                for aid in ids])


def combine(fanout_id: str, audience: str, parts: list[m.FanoutDone]) -> m.FanoutDone:
    """Add up the nodes' outcomes of one fan-out."""
    misses = sorted((miss for part in parts for miss in part.misses),
                    key=lambda miss: miss.agent_id)
    return m.FanoutDone(
        re=fanout_id, audience=audience, sent=sum(p.sent for p in parts),
        ok=sum(p.ok for p in parts), seconds=max((p.seconds for p in parts), default=0.0),
        misses=misses[:m.MAX_FANOUT])
