"""The server process: one TLS websocket port with the agent and technician gateways.

``/agent`` takes enrollments and agent sessions, ``/tech`` technician sessions, ``/healthz``
answers plain HTTP and ``/ca.pem`` serves the CA certificate (agents check it against the
fingerprint in their token before trusting it). Protocol decisions live in
:mod:`proto.session`; this module only moves frames, looks things up and routes requests.
See ``docs/protocol.md``.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import secrets
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse

from proto import MAX_FRAME_SIZE
from proto import messages as m
from proto.command import (
    CommandRefused,
    RefusalReason,
    ReplayCache,
    verify_command,
    verify_fanout,
)
from proto.errors import (
    AuthenticationFailed,
    CloseCode,
    DecodeError,
    FrameTooLarge,
    ProtocolError,
    RemoteProtocolError,
    UnexpectedMessage,
)
from proto.receipt import verify_receipt, verify_visit
from proto.session import ServerSession, speaks

from . import pki
from .admission import HandshakeGate
from .bus import Bus, BusError, Forward, Forwarded, LocalBus, NatsBus
from .bus import _safe as _safe_bus
from .config import ServerConfig, parse_listen
from .errors import CertificateRefused
from .fanout import NODE_BUSY, NODE_UNREACHABLE, FanoutBusy, Fanouts, combine, unreachable
from .onsite.policy import load_home_policy
from .onsite.tickets import OnsiteDesk, TicketError
from .presence import Presence
from .store import NotFound, ResultRecord, Store, StoreError, TokenRefused
from .tunnel import (
    TUNNEL_WRITE_LIMIT,
    TunnelBroker,
    TunnelContext,
    get_recording,
    open_tunnel,
    store_recording,
)
from .writer import Writer

log = logging.getLogger("hw.server")

_reports = msgspec.json.Decoder(list[m.ProbeReport])
_fix_report = msgspec.json.Decoder(m.FixReport)
_encoder = msgspec.json.Encoder()


def now_utc() -> datetime:
    return datetime.now(UTC)


def secret_hash(secret: bytes) -> bytes:
    """How enrollment secrets are stored: only their SHA-256."""
    return hashlib.sha256(b"helloword-enroll-v1\0" + secret).digest()


def agent_id_for(public_key: bytes) -> str:
    """``ag-`` + 20 hex chars of SHA-256 of the raw Ed25519 public key."""
    return "ag-" + hashlib.sha256(public_key).hexdigest()[:20]


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes of UTF-8."""
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


def server_ssl_context(cfg: ServerConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cfg.path("server.crt"), cfg.path("server.key"))
    return ctx


def stored_result(rec: ResultRecord) -> m.StoredResult:
    """A stored row back as the wire struct (fix results keep their report as payload)."""
    action = m.Action(rec.action)
    fix = _fix_report.decode(rec.payload) if action is m.Action.FIX and rec.payload else None
    reports = _reports.decode(rec.payload) if action is not m.Action.FIX and rec.payload else []
    return m.StoredResult(msg_id=rec.msg_id, request_id=rec.request_id, action=action,
                          ok=rec.ok, received_at=rec.received_at, reports=reports,
                          error=rec.error, fix=fix)


def result_payload(msg: m.Result) -> bytes:
    """What is stored of a result: the fix report for fixes, the probe reports otherwise."""
    if msg.action is m.Action.FIX:
        return _encoder.encode(msg.fix) if msg.fix is not None else b""
    return _encoder.encode(msg.reports)


def case_state_after(msg: m.Result) -> str | None:
    """The case state a newly stored result leads to (``None``: unchanged).

    A diagnosis moves the case to ``diagnosed`` (or ``diagnosis-failed``), or to
    ``needs-onsite`` when it found a hardware fault no fixer can address remotely; a fix
    that was applied and verified resolves the case, one that was applied and did not
    verify needs an on-site visit. Refusals and declined fixes change nothing.
    """
    if msg.error_code is m.ErrorCode.REFUSED:
        return None
    if msg.action is m.Action.DIAG:
        if not msg.ok:
            return "diagnosis-failed"
        hardware = [f for r in msg.reports for f in r.findings
                    if f.category is m.Category.HARDWARE and not f.remote_fixable
                    and f.severity is not m.Severity.INFO]
        return "needs-onsite" if hardware else "diagnosed"
    if msg.action is m.Action.FIX and msg.fix is not None and msg.fix.applied:
        return "resolved" if msg.fix.verified else "needs-onsite"
    return None


#: Technician requests the server relays to an agent as signed commands.
Relayed = m.RunDiag | m.RunFix | m.ListPlugins | m.AskConsent | m.OfferVisit


class AgentGone(Exception):
    """The agent's run session closed while a request to it was pending."""


#: Requests one technician connection may have in flight before the server stops reading.
TECH_CONCURRENCY = 16
#: Requests of all technicians served at once; more wait in memory, not in the store's
#: connection pool (where they would time out under a fan-out to thousands of agents).
SERVER_CONCURRENCY = 256
#: Listings carry at most this many cases (newest first), descriptions cut to 200 chars.
LIST_LIMIT = 500
#: A case detail carries its newest results only.
RESULTS_LIMIT = 20
#: How often agents' last-seen times are written (one transaction for all).
SEEN_FLUSH_S = 2.0
#: How often the running server re-reads revoked technician keys (seconds).
REVOCATION_REFRESH_S = 5.0
#: Agent handshakes (websocket upgrade, hello, challenge, proof) in progress at once; more
#: are answered 503 with a Retry-After at once (server/admission.py: a reconnect storm).
MAX_HANDSHAKES = 200
#: Connections the kernel queues before this process accepts them (capped by the kernel's
#: net.core.somaxconn). The default of 100 overflowed when a restart brought 10k agents
#: back at once: the kernel dropped their SYNs and the agents' 10 s connect timeout ran out.
LISTEN_BACKLOG = 4096


@dataclass(frozen=True, slots=True)
class KnownAgent:
    """What a connect needs of an enrolled, unrevoked agent (cached for every agent)."""

    agent_id: str
    customer: str
    public_key: bytes


@dataclass
class AgentLink:
    """A live ``run`` session of one agent."""

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


class Server:
    """Holds the store, the live agent links and the pending technician requests."""

    def __init__(self, cfg: ServerConfig, store: Store, bus: Bus | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.bus: Bus = bus or LocalBus()
        self.node_id = self.bus.node_id
        #: several nodes: which node holds which agent (None: one node, the links are truth)
        self.presence: Presence | None = (
            Presence(store, self.node_id, timedelta(seconds=cfg.presence_lease_s))
            if self.bus.multi else None)
        self.org_pub = pki.org_public_raw(cfg.home)
        self.ca_pem = cfg.path("ca.crt").read_bytes()
        self.links: dict[str, AgentLink] = {}
        #: request id -> (the agent link it went to, case, future of (result, stored at))
        self.pending: dict[str, tuple[AgentLink, str,
                                      asyncio.Future[tuple[m.Result, datetime]]]] = {}
        self.revoked: list[str] = []
        #: case number -> agent id; a case never changes agent, so this never goes stale
        self._case_agent: dict[str, str] = {}
        self._ws_server: WsServer | None = None
        self._serving = asyncio.Semaphore(SERVER_CONCURRENCY)
        #: agent id -> when last seen (connect/disconnect), written in batches
        self._seen: dict[str, datetime] = {}
        #: enrolled, unrevoked agents (see _known_agent) and revoked agent ids
        self._agents: dict[str, KnownAgent] = {}
        self._gate = HandshakeGate(MAX_HANDSHAKES, cfg.handshake_timeout)
        self._stopping = False  # set by shutdown: one summary line, not one per agent
        self._revoked_agents: set[str] = set()
        self.tunnels = TunnelBroker()
        self.desk = OnsiteDesk(store, load_home_policy(cfg.home))
        self.writer = Writer(store)
        self.fanouts = Fanouts()
        #: nonces of fan-outs accepted here (a replayed one is refused before any agent)
        self._fanout_replay = ReplayCache(max_entries=10_000)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> WsServer:
        host, port = parse_listen(self.cfg.listen)
        await self._load_agents()
        # Everything loaded so far lives as long as the process: keep it out of the
        # collector's full passes, which otherwise walk it again for every few thousand
        # connections accepted.
        gc.collect()
        gc.freeze()
        self._ws_server = await serve(
            self._handler, host, port, ssl=server_ssl_context(self.cfg),
            process_request=self._process_request, compression=None,
            max_size=MAX_FRAME_SIZE, max_queue=4, write_limit=TUNNEL_WRITE_LIMIT,
            ping_interval=30, ping_timeout=20,
            open_timeout=self.cfg.handshake_timeout, server_header=None,
            logger=logging.getLogger("hw.server.ws"), backlog=LISTEN_BACKLOG,
        )
        return self._ws_server

    async def flush_seen(self, every: float = SEEN_FLUSH_S) -> None:
        """Write the agents' last-seen times in one transaction every ``every`` seconds."""
        while True:
            await asyncio.sleep(every)
            await self.flush_seen_once()

    async def flush_seen_once(self) -> None:
        busy = self._gate.report()  # on the same beat: one line per flush at most
        if busy is not None:
            log.warning("%s", busy)
        batch, self._seen = self._seen, {}
        try:
            await self.store.touch_agents(batch)
        except StoreError as exc:
            log.warning("cannot record when %d agents were last seen: %s", len(batch), exc)
            for agent_id, at in batch.items():
                self._seen.setdefault(agent_id, at)

    async def _load_agents(self) -> None:
        """Cache every enrolled, unrevoked agent before listening: a reconnect storm must
        not be one store read per agent (the read cost about as much server CPU as the
        rest of the handshake). Agents enrolled later are read on their first connect."""
        customers: dict[str, str] = {}  # one string per customer, not per agent
        for rec in await self.store.list_agents():
            if rec.revoked_at is None and rec.agent_id not in self._revoked_agents:
                customer = customers.setdefault(rec.customer, rec.customer)
                self._agents[rec.agent_id] = KnownAgent(rec.agent_id, customer, rec.public_key)

    async def _known_agent(self, agent_id: str) -> KnownAgent | None:
        """The enrolled, unrevoked agent (``None``: unknown or revoked), from memory;
        revoked agents leave the cache within ``REVOCATION_REFRESH_S``
        (:meth:`refresh_revocations`)."""
        if agent_id in self._revoked_agents:
            return None
        agent = self._agents.get(agent_id)
        if agent is None:
            rec = await self.store.get_agent(agent_id)
            if rec is None or rec.revoked_at is not None:
                return None
            agent = self._agents[agent_id] = KnownAgent(rec.agent_id, rec.customer,
                                                        rec.public_key)
        return agent

    async def refresh_revocations(self, every: float = REVOCATION_REFRESH_S) -> None:
        """Pick up `hw-server tech revoke` made while running; push changes to agents."""
        while True:
            await asyncio.sleep(every)
            try:
                current = await self.store.revoked_technician_fingerprints()
                revoked_agents = await self.store.revoked_agent_ids()
            except StoreError as exc:
                log.warning("cannot read revocations: %s", exc)
                continue
            self._revoked_agents = revoked_agents
            for agent_id in revoked_agents & self._agents.keys():
                del self._agents[agent_id]
            if current != self.revoked:
                self.revoked = current
                for link in list(self.links.values()):
                    try:
                        await link.send(m.Revocations(fingerprints=current))
                    except ConnectionClosed:
                        pass

    async def shutdown(self, ws_server: WsServer) -> None:
        """Stop accepting, cut agent connections, close technician sessions.

        Agents get no closing handshake: thousands of them made stopping take seconds per
        thousand agents, and an agent reconnects after any lost connection anyway.
        Technicians get the normal close (1001) so a running command says why it ended."""
        ws_server.close(close_connections=False)  # first: or the agents come straight back
        self._stopping = True
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
                 "by themselves), closing %d technician sessions", cut, len(self.links),
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
        if path == "/tech":
            return None
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
                await self._agent(ws, session, peer)
            else:
                await self._tech(ws, session, peer)
        except ProtocolError as exc:
            log.info("closing %s (%s): %s", peer, int(exc.close_code), exc.reason)
            await ws.close(int(exc.close_code), _reason(exc.reason))
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

    async def _recv(self, ws: ServerConnection, session: ServerSession) -> m.AnyMessage:
        return session.receive(await ws.recv(decode=False))

    # -- agents ----------------------------------------------------------------------

    async def _agent(self, ws: ServerConnection, session: ServerSession, peer: str) -> None:
        async with asyncio.timeout(self.cfg.handshake_timeout):
            first = await self._recv(ws, session)
            if isinstance(first, m.Enroll):
                await self._enroll(ws, session, first, peer)
                return
            if not isinstance(first, m.Hello):
                return  # bye before hello: nothing to do
            if first.role is not m.Role.AGENT:
                raise session.reject(RemoteProtocolError("technicians connect to /tech"))
            agent = await self._known_agent(session.identity)
            if agent is None:
                raise session.reject(AuthenticationFailed(
                    "unknown or revoked agent; enroll again with a new token"))
            await ws.send(session.challenge(secrets.token_bytes(32), now_utc()), text=True)
            proof = await self._recv(ws, session)
            if not isinstance(proof, m.Proof):
                return  # bye instead of a proof
            session.verify(proof, Ed25519PublicKey.from_public_bytes(agent.public_key))
            await ws.send(session.send(m.Welcome(session_id=secrets.token_hex(8),
                                                 identity=agent.agent_id,
                                                 server_time=now_utc())), text=True)
            self._gate.done(ws, welcomed=True)
        assert session.hello is not None
        if session.hello.mode is m.Mode.TUNNEL:  # the agent's end of an SSH tunnel
            assert session.hello.tunnel is not None  # the session checked it
            await self.tunnels.agent_arrived(session.hello.tunnel, agent.agent_id, ws)
            return
        link = AgentLink(agent.agent_id, agent.public_key, ws, session, peer, agent.customer)
        run = session.hello.mode is m.Mode.RUN
        if run:
            old = self.links.get(agent.agent_id)
            self.links[agent.agent_id] = link
            if old is not None:
                await old.ws.close(int(CloseCode.REPLACED),
                                   "replaced by a newer connection of the same agent")
            if self.presence is not None:
                await self.presence.claim(agent.agent_id, now_utc())
            self._seen[agent.agent_id] = now_utc()
            await link.send(m.Revocations(fingerprints=self.revoked))
            log.info("agent %s (%s) connected from %s", agent.agent_id, agent.customer, peer)
        else:
            log.info("agent %s (%s) call from %s", agent.agent_id, agent.customer, peer)
        try:
            while True:
                msg = await self._recv(ws, session)
                if isinstance(msg, m.Bye):
                    break
                await self._from_agent(link, msg)
        finally:
            for owner, _case, future in self.pending.values():
                if owner is link and not future.done():
                    future.set_exception(AgentGone())
            if run and self.links.get(agent.agent_id) is link:
                self.fanouts.gone(agent.agent_id)
                del self.links[agent.agent_id]
                if self.presence is not None:
                    await self.presence.release(agent.agent_id)
                self._seen[agent.agent_id] = now_utc()
                if not self._stopping:
                    log.info("agent %s disconnected from %s", agent.agent_id, peer)

    async def _enroll(self, ws: ServerConnection, session: ServerSession, msg: m.Enroll,
                      peer: str) -> None:
        agent_id = agent_id_for(msg.public_key)
        try:
            rec = await self.store.redeem_enroll_token(
                secret_hash=secret_hash(msg.secret), now=now_utc(), agent_id=agent_id,
                public_key=msg.public_key, hostname=msg.hostname, os=msg.os,
                software=msg.software)
        except (TokenRefused, StoreError) as exc:
            log.info("enrollment from %s refused: %s", peer, exc)
            await ws.send(session.send(m.Error(re=None, code=m.ErrorCode.REFUSED,
                                               message=str(exc))), text=True)
            await ws.close(int(CloseCode.ENROLL_REFUSED), _reason(str(exc)))
            return
        assert session.version is not None
        await ws.send(session.send(m.Enrolled(version=session.version, agent_id=rec.agent_id,
                                              customer=rec.customer)), text=True)
        log.info("agent %s enrolled for %s from %s", rec.agent_id, rec.customer, peer)
        await self._audit(event="agent.enrolled", actor=f"agent:{rec.agent_id}",
                          subject=rec.agent_id, now=now_utc(),
                          detail={"customer": rec.customer, "peer": peer})
        await ws.close(int(CloseCode.NORMAL), "enrolled")

    async def _from_agent(self, link: AgentLink, msg: m.AnyMessage) -> None:
        if isinstance(msg, m.OpenCase):
            case, _new = await self.store.open_case(agent_id=link.agent_id,
                                                    description=msg.description,
                                                    request_id=msg.id, now=now_utc())
            await link.send(m.CaseOpened(re=msg.id, case=case.number, opened_at=case.opened_at))
            if _new:
                log.info("case %s opened by agent %s", case.number, link.agent_id)
                await self._audit(event="case.opened", actor=f"agent:{link.agent_id}",
                                  subject=case.number, now=now_utc())
        elif isinstance(msg, m.Pong):
            self.fanouts.answer(link.agent_id, msg)
        elif isinstance(msg, m.Result):
            await self._result(link, msg)
        elif isinstance(msg, m.ConsentUpdate):
            await self._consent_update(link, msg)
        elif isinstance(msg, m.GetVisits | m.VisitUpdate):
            await link.send(await self._visits(link, msg))
        elif isinstance(msg, m.Recording):
            await link.send(await store_recording(self.store, link.agent_id, msg))
        elif isinstance(msg, m.Error):
            log.info("agent %s reported error %s", link.agent_id, msg.code.value)

    async def _result(self, link: AgentLink, msg: m.Result) -> None:
        """Store first (exactly once), then answer the waiting technician, then ack."""
        now = now_utc()
        state = case_state_after(msg)
        try:
            new = await self._store_result(
                msg_id=msg.id, request_id=msg.re, case=msg.case, agent_id=link.agent_id,
                action=msg.action.value, ok=msg.ok, payload=result_payload(msg),
                error=msg.error, now=now, case_state=state,
                audit_detail={"action": msg.action.value, "request": msg.re,
                              "result": msg.id, "ok": msg.ok, "error": msg.error[:300]})
        except NotFound as exc:
            # A result for a case that is not this agent's: refuse it for good.
            await link.send(m.Error(re=msg.id, code=m.ErrorCode.REFUSED, message=str(exc)))
            return
        # Any other store error propagates: the connection closes without an ack, and the
        # agent resends the result from its outbox after reconnecting.
        if msg.receipt is not None:
            await self._receipt(link, msg.receipt, None)
        if new and state == "needs-onsite":
            await self._escalate(msg.case)
        waiting = self.pending.get(msg.re)
        if (waiting is not None and waiting[0] is link and waiting[1] == msg.case
                and not waiting[2].done()):
            waiting[2].set_result((msg, now))
        await link.send(m.Ack(re=msg.id))

    async def _audit(self, **entry: Any) -> Any:
        """Append to the audit log in the next group-committed batch (server/writer.py)."""
        return await self.writer.submit(
            lambda conn: self.store.append_audit_in(conn, **entry))

    async def _store_result(self, **result: Any) -> bool:
        """Store a result exactly once, in the next group-committed batch."""
        return bool(await self.writer.submit(
            lambda conn: self.store.store_result_in(conn, **result)))

    async def _escalate(self, case: str) -> None:
        """A case that needs an on-site visit becomes a ticket at once (never twice)."""
        try:
            ticket, created = await self.desk.escalate(
                case, actor="server", now=now_utc(),
                reason="automatic: remote support found a hardware fault it cannot fix")
        except (StoreError, ValueError, KeyError):
            log.exception("could not escalate case %s; escalate by hand with "
                          "`hw-tech escalate %s`", case, case)
            return
        if created:
            log.info("case %s escalated to on-site ticket %s (%s)", case, ticket.ticket,
                     ticket.state.value)

    async def _visits(self, link: AgentLink, msg: m.GetVisits | m.VisitUpdate
                      ) -> m.AnyMessage:
        """The customer's side of on-site tickets: list them, or apply a signed decision."""
        message = ""
        if isinstance(msg, m.VisitUpdate):
            try:
                decision = verify_visit(msg.signed, Ed25519PublicKey.from_public_bytes(
                    link.public_key))
                if decision.agent_id != link.agent_id:
                    raise DecodeError("the decision names another agent")
                _ticket, message = await self.desk.customer_decision(
                    decision, msg.signed, agent_id=link.agent_id, now=now_utc())
            except DecodeError as exc:
                return m.Error(re=msg.id, code=m.ErrorCode.REFUSED,
                               message=f"visit decision refused: {exc.reason}")
            except (TicketError, NotFound) as exc:
                return m.Error(re=msg.id, code=m.ErrorCode.REFUSED, message=str(exc))
        visits = [await self.desk.get(t.ticket)
                  for t in await self.desk.tickets(agent_id=link.agent_id, limit=20)]
        return m.VisitList(re=msg.id, visits=visits, message=message)

    async def _consent_update(self, link: AgentLink, msg: m.ConsentUpdate) -> None:
        if await self._receipt(link, msg.receipt, msg.id) is not None:
            await link.send(m.Ack(re=msg.id))

    async def _receipt(self, link: AgentLink, receipt: m.SignedReceipt, update_id: str | None
                       ) -> m.ConsentGrant | None:
        """Verify a receipt with the agent's enrolled key and store it once."""
        try:
            grant = verify_receipt(receipt, Ed25519PublicKey.from_public_bytes(
                link.public_key))
            if grant.agent_id != link.agent_id:
                raise DecodeError("receipt names another agent")
        except DecodeError as exc:
            await link.send(m.Error(re=update_id, code=m.ErrorCode.REFUSED,
                                    message=f"consent receipt refused: {exc.reason}"))
            return None
        await self._store_receipt(link.agent_id, update_id or grant.receipt_id, receipt, grant)
        return grant

    async def _store_receipt(self, agent_id: str, receipt_id: str, receipt: m.SignedReceipt,
                             grant: m.ConsentGrant) -> None:
        now = now_utc()
        new = await self.store.store_consent_receipt(
            receipt_id=receipt_id, agent_id=agent_id, case=grant.case, tech=grant.tech,
            scopes=",".join(sc.value for sc in grant.scopes), payload=receipt.payload,
            signature=receipt.signature, granted_at=grant.granted_at,
            expires_at=grant.expires_at, revoked_at=grant.revoked_at, now=now)
        if new:
            await self._audit(
                event="consent.revoked" if grant.revoked_at else "consent.granted",
                actor=f"agent:{agent_id}", subject=grant.case, now=now,
                detail={"receipt": receipt_id, "tech": grant.tech, "via": grant.via,
                        "scopes": [sc.value for sc in grant.scopes],
                        "expires_at": grant.expires_at.isoformat()})

    # -- technicians -----------------------------------------------------------------

    async def _tech(self, ws: ServerConnection, session: ServerSession, peer: str) -> None:
        async with asyncio.timeout(self.cfg.handshake_timeout):
            hello = await self._recv(ws, session)
            if not isinstance(hello, m.Hello) or hello.role is not m.Role.TECH:
                raise session.reject(RemoteProtocolError("only technicians connect to /tech"))
            name = session.identity
            if hello.certificate is None:
                raise session.reject(UnexpectedMessage("technician hello without certificate"))
            try:
                key, fingerprint = pki.verify_tech_certificate(hello.certificate,
                                                               org_pub=self.org_pub, name=name)
            except CertificateRefused as exc:
                raise session.reject(AuthenticationFailed(str(exc))) from None
            tech = await self.store.get_technician(name)
            if tech is None or tech.revoked_at is not None or tech.key_fingerprint != fingerprint:
                raise session.reject(AuthenticationFailed(
                    f"technician {name!r} is not registered or was revoked on this server"))
            await ws.send(session.challenge(secrets.token_bytes(32), now_utc()), text=True)
            proof = await self._recv(ws, session)
            if not isinstance(proof, m.Proof):
                return  # bye instead of a proof
            session.verify(proof, key)
            await ws.send(session.send(m.Welcome(session_id=secrets.token_hex(8), identity=name,
                                                 server_time=now_utc())), text=True)
        log.info("technician %s connected from %s", name, peer)
        await self._audit(event="tech.login", actor=f"tech:{name}", subject=name,
                          now=now_utc(), detail={"peer": peer, "key": fingerprint})
        lock = asyncio.Lock()

        async def reply(msg: m.AnyMessage) -> None:
            if (isinstance(msg, m.AgentList) and msg.next_offset is not None
                    and not speaks(session.version, m.Fanout)):  # v1 has no pages
                msg = m.Error(re=msg.re, code=m.ErrorCode.BAD_REQUEST, message=(
                    f"more than {m.AGENT_PAGE} agents are enrolled and this hw-tech (protocol "
                    "version 1) cannot page through them; upgrade hw-tech"))
            async with lock:
                await ws.send(session.send(msg), text=True)

        tasks: set[asyncio.Task[None]] = set()
        limit = asyncio.Semaphore(TECH_CONCURRENCY)

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            limit.release()

        try:
            while True:
                msg = await self._recv(ws, session)
                if isinstance(msg, m.Bye):
                    break
                if isinstance(msg, m.OpenTunnel):  # the connection becomes the tunnel
                    for task in tasks:
                        task.cancel()
                    if await open_tunnel(self._tunnel_context(), tech=name, key=fingerprint,
                                         msg=msg, ws=ws, reply=reply):
                        break
                    continue
                await limit.acquire()  # backpressure: a flood waits, memory stays bounded
                task = asyncio.create_task(self._tech_request(name, fingerprint, msg, reply))
                tasks.add(task)
                task.add_done_callback(done)
        finally:
            for task in tasks:
                task.cancel()
            log.info("technician %s disconnected from %s", name, peer)

    async def _tech_request(self, tech: str, key: str, msg: m.AnyMessage, reply: Any) -> None:
        rid = getattr(msg, "id", None)
        try:
            async with self._serving:
                answer = await self._serve_tech(tech, key, msg)
            await reply(answer)
        except NotFound as exc:
            await reply(m.Error(re=rid, code=m.ErrorCode.NOT_FOUND, message=str(exc)))
        except TicketError as exc:
            await reply(m.Error(re=rid, code=m.ErrorCode.REFUSED, message=str(exc)))
        except StoreError as exc:
            log.warning("technician request not served: %s", exc)
            await reply(m.Error(re=rid, code=m.ErrorCode.INTERNAL, message=str(exc)))
        except FrameTooLarge:
            await reply(m.Error(re=rid, code=m.ErrorCode.BAD_REQUEST,
                                message="the answer is larger than one frame; narrow the "
                                        "request (e.g. `hw-tech cases --state open`)"))
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("technician request failed")
            await reply(m.Error(re=rid, code=m.ErrorCode.INTERNAL,
                                message="internal server error; the operator log has details"))

    async def _serve_tech(self, tech: str, key: str, msg: m.AnyMessage) -> m.AnyMessage:
        if isinstance(msg, m.ListAgents):
            return await self._list_agents(msg)
        if isinstance(msg, m.ListCases):
            cases = await self.store.list_cases(state=msg.state)
            return m.CaseList(re=msg.id, cases=[_case_info(c, brief=True)
                                                for c in cases[:LIST_LIMIT]])
        if isinstance(msg, m.GetRecording):
            await self._case(msg.case)
            return await get_recording(self.store, msg)
        if isinstance(msg, m.GetCase):
            case = await self._case(msg.case)
            history = await self.store.case_history(case.number)
            results = await self.store.list_results(case.number)
            return m.CaseDetail(
                re=msg.id, case=_case_info(case),
                history=[m.CaseEvent(state=h.state, at=h.at, actor=h.actor, note=h.note)
                         for h in history],
                results=[stored_result(r) for r in results[-RESULTS_LIMIT:]])
        if isinstance(msg, m.RunDiag | m.RunFix | m.ListPlugins | m.AskConsent | m.OfferVisit):
            return await self._relay(tech, key, msg)
        if isinstance(msg, m.Fanout):
            return await self._fanout(tech, key, msg)
        if isinstance(msg, m.EscalateCase):
            ticket, _created = await self.desk.escalate(
                msg.case, reason=msg.reason, actor=f"tech:{tech}", now=now_utc(),
                service=msg.service)
            return m.TicketDetail(re=msg.id, ticket=ticket)
        if isinstance(msg, m.ListTickets):
            due = (now_utc().astimezone(self.desk.policy.hours.tz).date()
                   if msg.followup_due else None)
            return m.TicketList(re=msg.id, tickets=await self.desk.tickets(
                state=msg.state, followup_due_on=due, limit=LIST_LIMIT))
        if isinstance(msg, m.GetTicket):
            return m.TicketDetail(re=msg.id, ticket=await self.desk.get(msg.ticket))
        if isinstance(msg, m.BookVisit):
            return m.TicketDetail(re=msg.id, ticket=await self.desk.book(
                msg.ticket, start=msg.start, accepted_by=f"{msg.accepted_by} (recorded by "
                f"{tech})", actor=f"tech:{tech}", now=now_utc()))
        if isinstance(msg, m.UpdateTicket):
            return m.TicketDetail(re=msg.id, ticket=await self.desk.move(
                msg.ticket, msg.to, actor=f"tech:{tech}", now=now_utc(), note=msg.note,
                resolved=msg.resolved, root_cause=msg.root_cause,
                satisfaction=msg.satisfaction))
        raise AssertionError(f"unhandled {type(msg).__name__}")  # session table forbids it

    async def _list_agents(self, msg: m.ListAgents) -> m.AgentList:
        """One page of the enrolled agents (enrollment order), filtered."""
        elsewhere = (await self.presence.online(now_utc()) if self.presence is not None
                     else set())
        matching = [(a, online) for a in await self.store.list_agents(customer=msg.customer)
                    if (online := a.agent_id in self.links or a.agent_id in elsewhere)
                    is msg.online or msg.online is None]
        page = matching[msg.offset:msg.offset + msg.limit]
        end = msg.offset + len(page)
        return m.AgentList(
            re=msg.id, next_offset=end if end < len(matching) else None,
            agents=[m.AgentInfo(agent_id=a.agent_id, customer=a.customer, kind=a.kind,
                                city=a.city, hostname=a.hostname, os=a.os, online=online,
                                last_seen=a.last_seen) for a, online in page])

    async def _case(self, number: str) -> Any:
        case = await self.store.get_case(number)
        if case is None:
            raise NotFound(f"no case {number}; list cases with `hw-tech cases`")
        return case

    def _tunnel_context(self) -> TunnelContext:
        remote: dict[str, tuple[asyncio.Future[tuple[m.Result, datetime]],
                                list[asyncio.Task[None]]]] = {}

        def pending_result(request_id: str, agent_id: str, case: str
                           ) -> asyncio.Future[tuple[m.Result, datetime]] | None:
            link = self.links.get(agent_id)
            future: asyncio.Future[tuple[m.Result, datetime]] = \
                asyncio.get_running_loop().create_future()
            if link is None:
                if self.presence is None:
                    return None
                remote[request_id] = (future, [])  # maybe on another node: send_request looks
                return future
            self.pending[request_id] = (link, case, future)
            return future

        async def send_request(agent_id: str, request: m.Request) -> None:
            if request.id not in remote:
                await self.pending[request.id][0].send(request)
                return
            # Several nodes: the agent's node relays the request; the agent dials its tunnel
            # connection to this node (``via``), so the relay stays on one node.
            future, tasks = remote[request.id]
            node = (await self.presence.node_of(agent_id, now_utc())
                    if self.presence is not None else None)
            if node is None:
                future.set_exception(AgentGone("offline"))
                return

            async def ask() -> None:
                try:
                    answer = await self._request_remote(
                        node, agent_id, msgspec.structs.replace(request, via=self.cfg.own_url))
                except (TimeoutError, AgentGone, BusError) as exc:
                    if not future.done():
                        future.set_exception(AgentGone(str(exc)))
                    return
                if not future.done():
                    future.set_result(answer)

            tasks.append(asyncio.create_task(ask()))

        def drop_pending(request_id: str) -> None:
            self.pending.pop(request_id, None)
            entry = remote.pop(request_id, None)
            if entry is not None:
                for task in entry[1]:
                    task.cancel()
                if not entry[0].done():
                    entry[0].cancel()

        return TunnelContext(
            store=self.store, broker=self.tunnels, org_pub=self.org_pub,
            revoked=lambda: self.revoked, agent_of=self._agent_of, send_request=send_request,
            pending_result=pending_result, drop_pending=drop_pending)

    async def _agent_of(self, number: str) -> str:
        agent_id = self._case_agent.get(number)
        if agent_id is None:
            agent_id = (await self._case(number)).agent_id
            if len(self._case_agent) >= 100_000:
                self._case_agent.clear()
            self._case_agent[number] = agent_id
        return agent_id

    async def _relay(self, tech: str, key: str, msg: Relayed
                     ) -> m.AnyMessage:
        """Check the technician's signed command (fail fast), relay it, await the result.

        The agent checks everything again against the org key it pinned; this check only
        saves a round trip for commands that would be refused anyway.
        """
        action = (m.Action.DIAG if isinstance(msg, m.RunDiag) else
                  m.Action.FIX if isinstance(msg, m.RunFix) else
                  m.Action.PLUGINS if isinstance(msg, m.ListPlugins) else
                  m.Action.BOOK_VISIT if isinstance(msg, m.OfferVisit) else m.Action.CONSENT)
        agent_id = await self._agent_of(msg.case)
        now = now_utc()
        try:
            verified = verify_command(msg.command, org_pub=self.org_pub, now=now,
                                      agent_id=agent_id, case=msg.case, action=action.value,
                                      revoked=self.revoked)
            if verified.command.tech != tech or verified.cert.fingerprint != key:
                raise CommandRefused(RefusalReason.WRONG_TECHNICIAN,
                                     "the command is not signed with the key the connected "
                                     f"technician {tech} logged in with")
            if isinstance(msg, m.OfferVisit):
                await self._check_offer(msg, verified.command.args)
        except CommandRefused as exc:
            await self._audit(
                event="command", actor=f"tech:{tech}", subject=msg.case, now=now,
                detail={"action": action.value, "agent": agent_id, "verdict": "refused",
                        "reason": exc.reason.value})
            return m.Error(re=msg.id, code=m.ErrorCode.REFUSED,
                           message=f"{exc.reason.value}: {exc.message}")
        link = self.links.get(agent_id)
        node = (await self.presence.node_of(agent_id, now)
                if link is None and self.presence is not None else None)
        if link is None and node is None:
            return m.Error(re=msg.id, code=m.ErrorCode.AGENT_OFFLINE,
                           message=f"agent {agent_id} of case {msg.case} is offline; "
                                   "ask the customer to start `hw-agent run`, then retry")
        request = m.Request(id="rq-" + secrets.token_hex(8), case=msg.case, action=action,
                            tech=tech, timeout=msg.timeout, command=msg.command)
        await self._audit(
            event="command", actor=f"tech:{tech}", subject=msg.case, now=now,
            detail={"action": action.value, "agent": agent_id, "verdict": "relayed",
                    "request": request.id, "args": verified.command.args,
                    **({"node": node} if node is not None else {})})
        try:
            async with asyncio.timeout(msg.timeout):
                if link is not None:
                    result, stored_at = await self._request_local(link, request)
                else:
                    assert node is not None
                    result, stored_at = await self._request_remote(node, agent_id, request)
        except TimeoutError:
            return m.Error(re=msg.id, code=m.ErrorCode.TIMEOUT,
                           message=f"the agent did not answer within {msg.timeout:g}s; a "
                                   "result it sends later is stored (`hw-tech case`)")
        except (ConnectionClosed, AgentGone, BusError):
            return m.Error(re=msg.id, code=m.ErrorCode.AGENT_OFFLINE,
                           message=f"agent {agent_id} went offline during the request; a "
                                   "result it still sends is stored (`hw-tech case`)")
        if action is m.Action.CONSENT:
            remote_agent = None if link is not None else await self._known_agent(agent_id)
            if link is None and remote_agent is None:
                raise NotFound(f"agent {agent_id} is not enrolled")
            public_key = link.public_key if link is not None else remote_agent.public_key
            return await self._consent_answer(msg, public_key, result)
        if not result.ok and result.error_code is m.ErrorCode.REFUSED:
            return m.Error(re=msg.id, code=m.ErrorCode.REFUSED,
                           message=f"the agent refused: {result.error}")
        stored = m.StoredResult(
            msg_id=result.id, request_id=result.re, action=result.action, ok=result.ok,
            received_at=stored_at, reports=result.reports, error=result.error, fix=result.fix)
        if action is m.Action.FIX:
            return m.FixDone(re=msg.id, case=msg.case, result=stored)
        if isinstance(msg, m.OfferVisit):
            if not result.ok:
                return m.Error(re=msg.id, code=m.ErrorCode.INTERNAL,
                               message=f"the agent could not show the offer: {result.error}")
            return m.TicketDetail(re=msg.id, ticket=await self.desk.get(msg.ticket))
        if action is m.Action.PLUGINS:
            return m.PluginList(re=msg.id, case=msg.case, plugins=result.plugins)
        return m.DiagDone(re=msg.id, case=msg.case, result=stored)

    async def _fanout(self, tech: str, key: str, msg: m.Fanout) -> m.AnyMessage:
        """Check a fan-out once, audit it once, ping the audience on every node, add up."""
        now = now_utc()
        try:
            verified = verify_fanout(msg.command, org_pub=self.org_pub, now=now, customer=None,
                                     revoked=self.revoked)
            if verified.command.tech != tech or verified.cert.fingerprint != key:
                raise CommandRefused(RefusalReason.WRONG_TECHNICIAN,
                                     "the command is not signed with the key the connected "
                                     f"technician {tech} logged in with")
            fanout_id = "fo-" + secrets.token_hex(8)
            self.fanouts.reserve(fanout_id)  # before the nonce is used up: busy is no refusal
            try:  # only now, once it is the technician's own and will run, use up the nonce
                self._fanout_replay.check_and_add(verified.command.nonce,
                                                  expires_at=verified.command.expires_at,
                                                  now=now)
            except CommandRefused:
                self.fanouts.release(fanout_id)
                raise
        except FanoutBusy as exc:
            return m.Error(re=msg.id, code=m.ErrorCode.REFUSED, message=str(exc))
        except CommandRefused as exc:
            await self._audit(event="fanout", actor=f"tech:{tech}", subject="fanout", now=now,
                              detail={"request": msg.id, "verdict": "refused",
                                      "reason": exc.reason.value})
            return m.Error(re=msg.id, code=m.ErrorCode.REFUSED,
                           message=f"{exc.reason.value}: {exc.message}")
        audience = verified.command.audience
        run = m.Fanout(id=fanout_id, command=msg.command, timeout=msg.timeout)
        try:
            await self._audit(event="fanout", actor=f"tech:{tech}", subject=audience, now=now,
                              detail={"fanout": fanout_id, "request": msg.id,
                                      "verdict": "relayed", "action": verified.command.action})
            others = (await self.presence.nodes(now) - {self.node_id}
                      if self.presence is not None else set())
        except BaseException:
            self.fanouts.release(fanout_id)
            raise
        parts = await asyncio.gather(
            self.fanouts.run_local(fanout_id, msg.command, audience, self.links,
                                   msg.timeout),
            *(self._fanout_there(node, run, audience) for node in sorted(others)))
        done = msgspec.structs.replace(combine(fanout_id, audience, list(parts)), re=msg.id)
        await self._audit(event="fanout.done", actor=f"tech:{tech}", subject=audience,
                          now=now_utc(), detail={"fanout": fanout_id, "sent": done.sent,
                                                 "ok": done.ok, "misses": done.counts,
                                                 "nodes": 1 + len(others)})
        log.info("fan-out %s to %s by %s: %d sent, %d ok in %.3fs", fanout_id, audience, tech,
                 done.sent, done.ok, done.seconds)
        return done

    async def _fanout_forwarded(self, msg: m.Fanout) -> Forwarded:
        """This node's part of a fan-out another node checked, audited and numbered. Checked
        again here (not the nonce: every node sees the same one) before any agent sees it."""
        try:
            verified = verify_fanout(msg.command, org_pub=self.org_pub, now=now_utc(),
                                     customer=None, revoked=self.revoked)
            self.fanouts.reserve(msg.id)
        except CommandRefused as exc:
            return Forwarded(error=f"refused: {exc.reason.value}")
        except FanoutBusy:
            return Forwarded(error="busy")
        return Forwarded(fanout=await self.fanouts.run_local(
            msg.id, msg.command, verified.command.audience, self.links, msg.timeout))

    async def _fanout_there(self, node: str, msg: m.Fanout, audience: str) -> m.FanoutDone:
        """Another node's part. If that node does not take part, its agents of the audience
        (by their presence leases) are reported ``node_unreachable`` (or ``node_busy``),
        not left out."""
        try:
            answer = await self.bus.request(node, Forward(fanout=msg), wait=msg.timeout + 5)
            if answer.fanout is not None:
                return answer.fanout
            why = answer.error
        except (TimeoutError, BusError) as exc:
            why = type(exc).__name__
        log.warning("fan-out %s: node %s did not take part (%s)", msg.id, node, why)
        assert self.presence is not None
        held = await self.presence.agents_on(node, now_utc())
        if audience != "all":
            held &= {a.agent_id for a in await self.store.list_agents(
                customer=audience.removeprefix("customer:"))}
        return unreachable(msg.id, held, msg.timeout,
                           NODE_BUSY if why == "busy" else NODE_UNREACHABLE)

    async def _check_offer(self, msg: m.OfferVisit, args: dict[str, Any]) -> None:
        """The offer a technician signed must be the ticket's current quote and slots."""
        ticket = await self.desk.get(msg.ticket)
        if ticket.case != msg.case or args.get("ticket") != msg.ticket:
            raise TicketError(f"ticket {msg.ticket} does not belong to case {msg.case}")
        if ticket.state not in (m.TicketState.PROPOSED, m.TicketState.RESCHEDULED):
            raise TicketError(f"ticket {msg.ticket} is {ticket.state.value}; only a proposed "
                              "or rescheduled ticket is offered to the customer")
        offered = [(str(s.get("start")), s.get("total")) for s in args.get("slots") or []
                   if isinstance(s, dict)]
        current = [(s.start.isoformat(), s.total) for s in ticket.slots]
        if not current or offered != current:
            raise TicketError(f"the signed offer does not match ticket {msg.ticket}'s current "
                              "slots and prices; fetch the ticket again and re-offer")

    async def _request_local(self, link: AgentLink, request: m.Request
                             ) -> tuple[m.Result, datetime]:
        """Send ``request`` on this node's link and wait for its stored result."""
        future: asyncio.Future[tuple[m.Result, datetime]] = \
            asyncio.get_running_loop().create_future()
        self.pending[request.id] = (link, request.case, future)
        try:
            await link.send(request)
            return await asyncio.shield(future)
        finally:
            self.pending.pop(request.id, None)

    async def _request_remote(self, node: str, agent_id: str, request: m.Request
                              ) -> tuple[m.Result, datetime]:
        """Ask the node holding the agent to relay ``request``; its answer is the stored
        result (that node stored it). Raises TimeoutError, AgentGone or BusError."""
        answer = await self.bus.request(node, Forward(agent_id=agent_id, request=request),
                                        wait=request.timeout)
        if answer.result is None:
            if answer.error == "timeout":
                raise TimeoutError
            raise AgentGone(answer.error)
        return answer.result, answer.stored_at or now_utc()

    async def serve_forward(self, fwd: Forward) -> Forwarded:
        """Another node's request for an agent connected here (the bus handler)."""
        if fwd.fanout is not None:
            return await self._fanout_forwarded(fwd.fanout)
        assert fwd.request is not None
        link = self.links.get(fwd.agent_id)
        if link is None:
            return Forwarded(error="offline")
        try:
            async with asyncio.timeout(fwd.request.timeout):
                result, stored_at = await self._request_local(link, fwd.request)
        except TimeoutError:
            return Forwarded(error="timeout")
        except (ConnectionClosed, AgentGone):
            return Forwarded(error="gone")
        return Forwarded(result=result, stored_at=stored_at)

    async def renew_presence(self) -> None:
        """Several nodes: keep this node's agents' leases alive."""
        assert self.presence is not None
        every = self.cfg.presence_lease_s / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self.presence.renew(now_utc())
            except StoreError as exc:
                log.warning("cannot renew agent presence: %s", exc)

    async def _consent_answer(self, msg: Relayed, public_key: bytes,
                              result: m.Result) -> m.AnyMessage:
        if not result.ok or result.receipt is None:
            return m.ConsentAnswer(re=msg.id, case=msg.case, granted=False,
                                   message=result.error or "the customer did not grant it")
        try:  # already verified and stored by _result; decode it for the technician
            grant = verify_receipt(result.receipt,
                                   Ed25519PublicKey.from_public_bytes(public_key))
        except DecodeError as exc:
            return m.Error(re=msg.id, code=m.ErrorCode.REFUSED,
                           message=f"the agent's consent receipt does not verify ({exc.reason})")
        return m.ConsentAnswer(re=msg.id, case=msg.case, granted=True, grant=grant,
                               message=f"granted {', '.join(sc.value for sc in grant.scopes)} "
                                       f"until {grant.expires_at.isoformat(timespec='seconds')}")


def _case_info(c: Any, *, brief: bool = False) -> m.CaseInfo:
    description = c.description[:200] if brief else c.description
    return m.CaseInfo(number=c.number, agent_id=c.agent_id, customer=c.customer,
                      description=description, state=c.state, opened_at=c.opened_at,
                      updated_at=c.updated_at)


async def run_server(cfg: ServerConfig, *, stop: asyncio.Event | None = None) -> None:
    """Open the store, serve until ``stop`` is set (or forever), then close cleanly."""
    cfg.check_nodes()
    store = await Store.open(cfg.db_url)
    bus: Bus | None = None
    try:
        if cfg.bus:
            bus = await NatsBus.connect(cfg.bus, cfg.node_id)
        server = Server(cfg, store, bus)
        server.revoked = await store.revoked_technician_fingerprints()
        server._revoked_agents = await store.revoked_agent_ids()
        background = [asyncio.create_task(server.refresh_revocations()),
                      asyncio.create_task(server.flush_seen())]
        if server.presence is not None:
            await server.presence.forget_mine()
            await server.bus.serve(server.serve_forward)
            background.append(asyncio.create_task(server.renew_presence()))
            log.info("node %s on the bus %s", server.node_id, _safe_bus(cfg.bus))
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
            await server.writer.close()
    finally:
        if bus is not None:
            await bus.close()
        await store.close()
