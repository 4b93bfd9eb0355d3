"""The bus between server nodes: a technician's request on any node reaches the agent's node.

One node: :class:`LocalBus` (in-process, nothing to run). Several nodes: :class:`NatsBus` on
NATS (``nats-py``); each node answers request/reply on ``hw.node.<node-id>``. Which node holds
an agent is in the store (:mod:`server.presence`, with leases), so the bus only carries
requests to a named node and their answers. Payloads are the JSON of :class:`Forward` and
:class:`Forwarded` (server-internal; agents and technicians never see them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import msgspec

from proto import messages as m

from .errors import BusError, NodeUnreachable

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

__all__ = ["MAX_PAYLOAD", "SUBJECT", "Bus", "BusError", "Forward", "Forwarded", "Handler",
           "LocalBus", "NatsBus", "NodeUnreachable"]

log = logging.getLogger("hw.server.bus")

SUBJECT = "hw.node.{node}"
#: NATS refuses larger messages by default (max_payload 1 MB).
MAX_PAYLOAD = 1024 * 1024


class Forward(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A request for an agent connected to another node, or a fan-out (already checked by
    the technician's node) for that node's agents."""

    agent_id: str = ""
    request: m.Request | None = None
    fanout: m.Fanout | None = None


class Forwarded(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The agent's node's answer: the stored result, or why there is none; for a fan-out,
    that node's outcome."""

    result: m.Result | None = None
    stored_at: datetime | None = None
    error: str = ""  # "offline" | "gone" | "timeout" | "internal"
    fanout: m.FanoutDone | None = None


Handler = Callable[[Forward], Awaitable[Forwarded]]
_forward = msgspec.json.Decoder(Forward)
_forwarded = msgspec.json.Decoder(Forwarded)
_encode = msgspec.json.Encoder().encode


class Bus(Protocol):
    node_id: str
    multi: bool

    async def serve(self, handler: Handler) -> None: ...

    async def request(self, node: str, forward: Forward, wait: float) -> Forwarded: ...

    async def close(self) -> None: ...


class LocalBus:
    """Single node: there is no other node to reach."""

    multi = False

    def __init__(self, node_id: str = "local") -> None:
        self.node_id = node_id
        self._handler: Handler | None = None

    async def serve(self, handler: Handler) -> None:
        self._handler = handler

    async def request(self, node: str, forward: Forward, wait: float) -> Forwarded:
        if node != self.node_id or self._handler is None:
            raise NodeUnreachable(f"node {node!r} is not this single-node server")
        return await self._handler(forward)

    async def close(self) -> None:
        self._handler = None


class NatsBus:
    """Several nodes over NATS request/reply."""

    multi = True

    def __init__(self, url: str, node_id: str) -> None:
        self.url = url
        self.node_id = node_id
        self._nc: NatsClient | None = None

    @classmethod
    async def connect(cls, url: str, node_id: str) -> NatsBus:
        import nats
        from nats.errors import NoServersError

        bus = cls(url, node_id)
        try:
            bus._nc = await nats.connect(
                url, name=f"hw-server {node_id}", connect_timeout=5, max_reconnect_attempts=-1,
                reconnect_time_wait=1, allow_reconnect=True)
        except (NoServersError, OSError, TimeoutError) as exc:
            raise BusError(f"cannot connect to the bus at {_safe(url)} ({type(exc).__name__});"
                           " check that NATS runs there, or drop --bus for a single node") \
                from None
        return bus

    async def serve(self, handler: Handler) -> None:
        from nats.aio.msg import Msg

        async def on_request(msg: Msg) -> None:
            try:
                answer = await handler(_forward.decode(msg.data))
            except msgspec.DecodeError:
                log.warning("undecodable bus request on %s dropped", msg.subject)
                return
            except Exception:
                log.exception("bus request failed")
                answer = Forwarded(error="internal")
            data = _encode(answer)
            if len(data) > MAX_PAYLOAD:
                data = _encode(Forwarded(error="internal: the result is larger than the "
                                               "bus payload limit"))
            await msg.respond(data)

        nc = self._client()
        await nc.subscribe(SUBJECT.format(node=self.node_id), cb=on_request)
        await nc.flush()

    async def request(self, node: str, forward: Forward, wait: float) -> Forwarded:
        from nats.errors import NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout

        try:
            reply = await self._client().request(SUBJECT.format(node=node), _encode(forward),
                                                  timeout=wait)
        except NoRespondersError:
            raise NodeUnreachable(f"node {node!r} does not answer on the bus") from None
        except NatsTimeout:
            raise TimeoutError from None
        try:
            return _forwarded.decode(reply.data)
        except msgspec.DecodeError:
            raise BusError(f"node {node!r} sent an undecodable answer") from None

    async def close(self) -> None:
        if self._nc is not None:
            await self._client().drain()

    def _client(self) -> NatsClient:
        assert self._nc is not None
        return self._nc


def _safe(url: str) -> str:
    """A bus URL without credentials (nats://user:pass@host -> nats://***@host)."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        return f"{scheme}{sep}***@{rest.split('@', 1)[1]}"
    return url
