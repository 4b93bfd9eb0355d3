"""What the parts of one server node share: the store, the live agent links, the waiting
requests, the technician sessions and revoked keys (:mod:`server.sessions`), the
technicians' handshake gate. :class:`server.app.Server` builds one :class:`Node` and hands
it to the agent gateway, the technician gateway, the relay and the fan-out."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection

from proto import messages as m
from proto.session import ServerSession

from .admission import HandshakeGate
from .bus import Bus
from .config import ServerConfig
from .onsite.tickets import OnsiteDesk
from .pending import PendingRequests
from .presence import Presence
from .sessions import TechSessions
from .store import Store
from .writer import Writer


def close_reason(text: str) -> str:
    """A close reason fits in 123 bytes of UTF-8."""
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


async def recv(ws: ServerConnection, session: ServerSession) -> m.AnyMessage:
    """The next message of a connection, through its session's checks."""
    return session.receive(await ws.recv(decode=False))


@dataclass
class AgentLink:
    """A live session of one agent (``run``, or a short ``call``)."""

    agent_id: str
    public_key: bytes
    ws: ServerConnection
    session: ServerSession
    peer: str
    customer: str = ""
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, msg: m.AnyMessage) -> None:
        async with self.send_lock:
            await self.ws.send(self.session.send(msg), text=True)


@dataclass
class Node:
    """The state the parts of one server node share."""

    cfg: ServerConfig
    store: Store
    bus: Bus
    writer: Writer
    desk: OnsiteDesk
    #: several nodes: which node holds which agent (None: one node, the links are truth)
    presence: Presence | None
    #: the org's raw Ed25519 public key (signs technician certificates)
    org_pub: bytes
    #: this node's technician connections by key; the revoked keys (polled while running)
    sessions: TechSessions
    #: technicians' handshakes in progress (``done(ws, welcomed=True)`` at their welcome)
    tech_gate: HandshakeGate
    #: agent id -> its live ``run`` link on this node
    links: dict[str, AgentLink] = field(default_factory=dict)
    #: requests relayed to agents, waiting for their result
    pending: PendingRequests[AgentLink] = field(default_factory=PendingRequests)
    #: set by shutdown: one summary line, not one per agent
    stopping: bool = False

    @property
    def revoked(self) -> list[str]:
        """Revoked technician key fingerprints, sorted (as of the last poll)."""
        return self.sessions.revoked

    @property
    def node_id(self) -> str:
        return self.bus.node_id

    async def audit(self, **entry: Any) -> Any:
        """Append to the audit log in the next group-committed batch (server/writer.py)."""
        return await self.writer.submit(
            lambda conn: self.store.append_audit_in(conn, **entry))
