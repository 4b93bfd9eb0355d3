"""The server process: one TLS websocket port with the agent and technician gateways.

``/agent`` takes enrollments and agent sessions (:mod:`server.agent_gateway`), ``/tech``
technician sessions (:mod:`server.tech_gateway`, which hands commands to
:mod:`server.relay` and fan-outs to :mod:`server.fanout`), ``/healthz`` answers plain HTTP
and ``/ca.pem`` serves the CA certificate (agents check it against the fingerprint in their
token before trusting it). This module wires those parts around one :class:`Node` and runs
the node's background work (last-seen times, revocations, presence leases). Before TLS,
:mod:`server.listener` counts each address's connections (:class:`AddressLimit`); agent and
technician handshakes then pass their :class:`HandshakeGate`; :mod:`server.sessions` ends a
revoked technician's connections within a poll interval. Protocol
decisions live in :mod:`proto.session`, case states in :mod:`server.cases`. See
``docs/protocol.md``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
from collections.abc import Hashable
from datetime import timedelta

from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse

from proto import MAX_FRAME_SIZE
from proto.errors import CloseCode, ProtocolError
from proto.session import ServerSession

from . import pki
from .admission import AddressLimit, HandshakeGate
from .agent_gateway import AgentDirectory, AgentGateway
from .bus import Bus, Forward, Forwarded, LocalBus, NatsBus
from .bus import _safe as _safe_bus
from .config import ServerConfig, parse_listen
from .fanout import Fanouts, FanoutService
from .listener import Guard
from .node import Node, close_reason
from .onsite.policy import load_home_policy
from .onsite.tickets import OnsiteDesk
from .pki import now_utc
from .presence import Presence
from .relay import Relay
from .sessions import TechSessions
from .store import Store, StoreError
from .tech_gateway import TechGateway
from .tunnel import TUNNEL_WRITE_LIMIT, TunnelBroker
from .writer import Writer

log = logging.getLogger("hw.server")

#: How often agents' last-seen times are written (one transaction for all).
SEEN_FLUSH_S = 2.0
#: How often the running server re-reads revoked agents (seconds); technician keys are
#: polled every ``revocation_poll_s`` (server/sessions.py).
REVOCATION_REFRESH_S = 5.0
#: Agent handshakes (websocket upgrade, hello, challenge, proof) in progress at once; more
#: are answered 503 with a Retry-After at once (server/admission.py: a reconnect storm).
MAX_HANDSHAKES = 200
#: The same for technicians, with their own places: an agent storm never locks them out.
MAX_TECH_HANDSHAKES = 50
#: Connections the kernel queues before this process accepts them (capped by the kernel's
#: net.core.somaxconn). The default of 100 overflowed when a restart brought 10k agents
#: back at once: the kernel dropped their SYNs and the agents' 10 s connect timeout ran out.
LISTEN_BACKLOG = 4096


def server_ssl_context(cfg: ServerConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cfg.path("server.crt"), cfg.path("server.key"))
    return ctx


class Server:
    """One server node: its :class:`Node` state, the gateways, the relay and the fan-out,
    and the node's background work."""

    def __init__(self, cfg: ServerConfig, store: Store, bus: Bus | None = None) -> None:
        self.cfg = cfg
        bus = bus or LocalBus()
        #: connections per address, counted before TLS (server/listener.py)
        self.addresses = AddressLimit(cfg.max_connections_per_address,
                                      cfg.max_unauthenticated_per_address)
        self._gate = HandshakeGate(MAX_HANDSHAKES, cfg.handshake_timeout,
                                   on_welcome=self._welcomed)
        self._pushes: set[asyncio.Task[None]] = set()
        self.node = Node(
            cfg=cfg, store=store, bus=bus, writer=Writer(store),
            desk=OnsiteDesk(store, load_home_policy(cfg.home)),
            presence=(Presence(store, bus.node_id, timedelta(seconds=cfg.presence_lease_s))
                      if bus.multi else None),
            org_pub=pki.org_public_raw(cfg.home),
            sessions=TechSessions(store, audit=lambda **entry: self.node.audit(**entry),
                                  node_id=bus.node_id, on_change=self._revocations_changed),
            tech_gate=HandshakeGate(MAX_TECH_HANDSHAKES, cfg.handshake_timeout,
                                    on_welcome=self._welcomed))
        self.ca_pem = cfg.path("ca.crt").read_bytes()
        self._ws_server: WsServer | None = None
        self._guard = Guard(self.addresses, server_ssl_context(cfg), cfg.tls_handshake_timeout)
        self.agents = AgentDirectory(self.node)
        self.tunnels = TunnelBroker()
        fanouts = Fanouts()
        self.agent_gateway = AgentGateway(self.node, self.agents, self._gate, fanouts,
                                          self.tunnels)
        self.relay = Relay(self.node, self.agents, self.tunnels)
        self.fanout = FanoutService(self.node, fanouts)
        self.tech_gateway = TechGateway(self.node, self.relay, self.fanout)

    @property
    def store(self) -> Store:
        return self.node.store

    @property
    def writer(self) -> Writer:
        return self.node.writer

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> WsServer:
        host, port = parse_listen(self.cfg.listen)
        await self.agents.load()
        # Everything loaded so far lives as long as the process: keep it out of the
        # collector's full passes, which otherwise walk it again for every few thousand
        # connections accepted.
        gc.collect()
        gc.freeze()
        # No ssl= here: each connection counts against its address first, then starts TLS
        # itself within tls_handshake_timeout (server/listener.py).
        self._ws_server = await serve(
            self._handler, host, port, create_connection=self._guard.connection_class(),
            process_request=self._process_request, compression=None,
            max_size=MAX_FRAME_SIZE, max_queue=4, write_limit=TUNNEL_WRITE_LIMIT,
            ping_interval=30, ping_timeout=20,
            open_timeout=self.cfg.handshake_timeout, server_header=None,
            logger=logging.getLogger("hw.server.ws"), backlog=LISTEN_BACKLOG,
        )
        return self._ws_server

    async def load_revocations(self) -> None:
        """Read the revoked technician keys and agents (before serving)."""
        await self.node.sessions.load()
        self.agents.set_revoked(await self.node.store.revoked_agent_ids())

    def _welcomed(self, conn: Hashable) -> None:
        """A handshake gate welcomed ``conn``: it no longer counts as unauthenticated."""
        self.addresses.authenticated(conn)

    def _revocations_changed(self, revoked: list[str]) -> None:
        """New technician revocations (their sessions are closing): tell the agents."""
        task = asyncio.create_task(self.agent_gateway.push_revocations())
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def flush_seen(self, every: float = SEEN_FLUSH_S) -> None:
        """Write the agents' last-seen times in one transaction every ``every`` seconds."""
        while True:
            await asyncio.sleep(every)
            await self.flush_seen_once()

    async def flush_seen_once(self) -> None:
        # on the same beat: one line per flush at most for each
        for line in (self._gate.report(), self.node.tech_gate.report(),
                     self.addresses.report(), self._gate.enrollments.report()):
            if line is not None:
                log.warning("%s", line)
        gateway = self.agent_gateway
        batch, gateway.seen = gateway.seen, {}
        try:
            await self.node.store.touch_agents(batch)
        except StoreError as exc:
            log.warning("cannot record when %d agents were last seen: %s", len(batch), exc)
            for agent_id, at in batch.items():
                gateway.seen.setdefault(agent_id, at)

    async def refresh_revocations(self, every: float = REVOCATION_REFRESH_S) -> None:
        """Pick up `hw-server agent revoke` made while running (technician revocations are
        polled far more often by :meth:`TechSessions.poll`, which ends their sessions)."""
        node = self.node
        while True:
            await asyncio.sleep(every)
            try:
                revoked_agents = await node.store.revoked_agent_ids()
            except StoreError as exc:
                log.warning("cannot read revoked agents: %s", exc)
                continue
            self.agents.set_revoked(revoked_agents)
            await self.agent_gateway.tend_revocations()  # the signed list (server/revocations.py)

    async def renew_presence(self) -> None:
        """Several nodes: keep this node's agents' leases alive."""
        presence = self.node.presence
        assert presence is not None
        every = self.cfg.presence_lease_s / 3
        while True:
            await asyncio.sleep(every)
            try:
                await presence.renew(now_utc())
            except StoreError as exc:
                log.warning("cannot renew agent presence: %s", exc)

    async def serve_forward(self, fwd: Forward) -> Forwarded:
        """Another node's request for an agent connected here, or its fan-out's part here
        (the bus handler)."""
        if fwd.fanout is not None:
            return await self.fanout.serve_forward(fwd.fanout)
        assert fwd.request is not None
        return await self.relay.serve_forward(fwd.agent_id, fwd.request)

    async def shutdown(self, ws_server: WsServer) -> None:
        """Stop accepting, cut agent connections, close technician sessions.

        Agents get no closing handshake: thousands of them made stopping take seconds per
        thousand agents, and an agent reconnects after any lost connection anyway.
        Technicians get the normal close (1001) so a running command says why it ended."""
        ws_server.close(close_connections=False)  # first: or the agents come straight back
        self._guard.cancel_handshakes()  # connections still in their TLS handshake
        self.node.stopping = True
        closing = []
        cut = 0
        # all_connections: also those still in their opening handshake
        for conn in list(getattr(ws_server, "all_connections", ws_server.connections)):
            request = conn.request
            if request is None or request.path.split("?", 1)[0] == "/agent":
                conn.transport.abort()
                cut += 1
            else:
                closing.append(asyncio.create_task(
                    conn.close(int(CloseCode.GOING_AWAY), "the server is shutting down")))
        log.info("stopping: cut %d agent connections (%d agents connected; they reconnect "
                 "by themselves), closing %d technician sessions", cut, len(self.node.links),
                 len(closing))
        if closing:
            await asyncio.wait(closing, timeout=5)

    @property
    def port(self) -> int:
        assert self._ws_server is not None
        sock = next(iter(self._ws_server.sockets))
        return int(sock.getsockname()[1])

    def _process_request(self, conn: ServerConnection, request: HttpRequest
                         ) -> HttpResponse | None:
        path = request.path.split("?", 1)[0]
        if path == "/agent":
            address = conn.remote_address[0] if conn.remote_address else ""
            wait = self._gate.admit(conn, address)
            if wait is None:
                # the place is free again as soon as the connection is gone, whatever
                # happened to it (even an upgrade that never reached the handler)
                conn.connection_lost_waiter.add_done_callback(
                    lambda _: self._gate.done(conn, welcomed=False))
                return None
            busy = conn.respond(503, f"this server is busy with many agents connecting at "
                                     f"once; retry in {wait} s (Retry-After)\n")
            busy.headers["Retry-After"] = str(wait)
            return busy
        if path == "/tech":  # technicians have their own places (an agent storm or a
            # flood of /tech handshakes never takes the other's)
            address = conn.remote_address[0] if conn.remote_address else ""
            wait = self.node.tech_gate.admit(conn, address)
            if wait is None:
                conn.connection_lost_waiter.add_done_callback(
                    lambda _: self.node.tech_gate.done(conn, welcomed=False))
                return None
            busy = conn.respond(503, f"this server is busy with many technician handshakes "
                                     f"at once; retry in {wait} s (Retry-After)\n")
            busy.headers["Retry-After"] = str(wait)
            return busy
        if path == "/healthz":
            return conn.respond(200, "ok\n")
        if path == "/ca.pem":
            return HttpResponse(200, "OK", Headers([("Content-Type", "application/x-pem-file"),
                                                    ("Content-Length", str(len(self.ca_pem)))]),
                                self.ca_pem)
        return conn.respond(404, "not found: this is a HelloWord server; agents use /agent, "
                                 "technicians /tech\n")

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path = ws.request.path.split("?", 1)[0]
        peer = "{}:{}".format(*ws.remote_address[:2]) if ws.remote_address else "?"
        session = ServerSession()
        try:
            if path == "/agent":
                await self.agent_gateway.serve(ws, session, peer)
            else:
                await self.tech_gateway.serve(ws, session, peer)
        except ProtocolError as exc:
            log.info("closing %s (%s): %s", peer, int(exc.close_code), exc.reason)
            await ws.close(int(exc.close_code), close_reason(exc.reason))
        except TimeoutError:
            log.info("closing %s: handshake not completed in %ss", peer,
                     self.cfg.handshake_timeout)
            await ws.close(int(CloseCode.HANDSHAKE_TIMEOUT),
                           f"handshake not completed within {self.cfg.handshake_timeout:g}s")
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("internal error on connection from %s", peer)
            await ws.close(int(CloseCode.INTERNAL_ERROR), "internal server error; retry later")


async def run_server(cfg: ServerConfig, *, stop: asyncio.Event | None = None) -> None:
    """Open the store, serve until ``stop`` is set (or forever), then close cleanly."""
    cfg.check_nodes()
    raise_descriptor_limit()
    store = await Store.open(cfg.db_url)
    bus: Bus | None = None
    try:
        if cfg.bus:
            bus = await NatsBus.connect(cfg.bus, cfg.node_id)
        server = Server(cfg, store, bus)
        await server.load_revocations()
        background = [asyncio.create_task(server.refresh_revocations()),
                      asyncio.create_task(server.node.sessions.poll(cfg.revocation_poll_s)),
                      asyncio.create_task(server.flush_seen())]
        presence = server.node.presence
        if presence is not None:
            await presence.forget_mine()
            await server.node.bus.serve(server.serve_forward)
            background.append(asyncio.create_task(server.renew_presence()))
            log.info("node %s on the bus %s", server.node.node_id, _safe_bus(cfg.bus))
        try:
            ws_server = await server.start()
            log.info("hw-server listening on wss://%s (pid %d)", cfg.listen.rsplit(":", 1)[0]
                     + f":{server.port}", os.getpid())
            async with ws_server:
                if stop is None:
                    await ws_server.serve_forever()
                else:
                    await stop.wait()
                await server.shutdown(ws_server)
        finally:
            for task in background:
                task.cancel()
            # Let them end first: a last-seen flush cancelled halfway through its
            # transaction kept the process from exiting for 10 s after the store closed.
            await asyncio.gather(*background, return_exceptions=True)
            await server.flush_seen_once()
            await server.node.writer.close()
    finally:
        if bus is not None:
            await bus.close()
        await store.close()


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft limit on open descriptors to the hard one (each connection holds
    one; the soft default of 1024 or so is far below what a server needs). Returns the
    (soft, hard) limits in force; logs when it cannot raise them."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d (%s); raise it with "
                    "`ulimit -n` or LimitNOFILE= in the service unit", soft, target, exc)
        return soft, hard
    log.info("open-file limit raised from %d to %d", soft, target)
    return target, hard
