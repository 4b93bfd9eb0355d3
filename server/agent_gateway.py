"""The agent gateway: ``/agent`` connections, from the handshake to the last message.

An agent connects to enroll (once, with a token), to ``run`` (its long-lived session: the
server relays technicians' requests on it, :mod:`server.relay`), for a short ``call``
(``hw-agent help``, consent commands, visits) or as the agent's end of an SSH tunnel
(:mod:`server.tunnel`). On ``run`` and ``call`` sessions the agent opens cases and sends
results, consent receipts, visit decisions and session recordings; this module stores them
and answers the request waiting for a result (:class:`server.pending.PendingRequests`).

An enrolled agent is not trusted (``docs/security.md#a-rogue-agent``): a result is stored
only as the answer to a request the relay sent to that agent for that case and action
(:mod:`server.store.requests`), a consent receipt only for one of that agent's cases
(:mod:`server.store.receipts`), and cases, results and receipts are held to the per-agent
quotas of :mod:`server.quota`; whatever is refused is answered with an ``error``
``refused`` saying why and audited (``result.refused``, ``receipt.refused``,
``quota.refused``) at most once per interval per agent and reason. An agent holds one
``run`` session (a newer one replaces it) and at most ``max_calls_per_agent`` ``call``
sessions on this node, each closed after ``call_idle_timeout_s`` without a message.

Protocol decisions live in :mod:`proto.session`; what a result does to its case in
:mod:`server.cases`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from proto import messages as m
from proto.errors import AuthenticationFailed, CloseCode, DecodeError, RemoteProtocolError
from proto.receipt import verify_receipt, verify_visit
from proto.session import ServerSession, speaks

from .admission import HandshakeGate
from .cases import GUARDED, CaseState, case_state_after, decide, parse_state, unresolved_findings
from .fanout import Fanouts
from .node import AgentLink, Node, close_reason, recv
from .onsite.tickets import TicketError
from .pki import now_utc
from .quota import QuotaExceeded, Quotas, RefusalLog, check_result_size
from .recordings import RecordingDesk
from .results import result_payload, stored_result
from .revocations import RevocationKeeper
from .store import NotFound, ResultRefused, StoreError, TokenRefused
from .store.receipts import NotOwnCase
from .tunnel import TunnelBroker

log = logging.getLogger("hw.server")


#: The websocket close code for a call over ``max_calls_per_agent`` (RFC 6455 "Try Again
#: Later"; docs/protocol.md#close-codes).
TRY_AGAIN_LATER = 1013


def secret_hash(secret: bytes) -> bytes:
    """How enrollment secrets are stored: only their SHA-256."""
    return hashlib.sha256(b"helloword-enroll-v1\0" + secret).digest()


def agent_id_for(public_key: bytes) -> str:
    """``ag-`` + 20 hex chars of SHA-256 of the raw Ed25519 public key."""
    return "ag-" + hashlib.sha256(public_key).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class KnownAgent:
    """What a connect needs of an enrolled, unrevoked agent (cached for every agent)."""

    agent_id: str
    customer: str
    public_key: bytes


class AgentDirectory:
    """The enrolled, unrevoked agents, from memory: a reconnect storm must not be one store
    read per agent (the read cost about as much server CPU as the rest of the handshake)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._agents: dict[str, KnownAgent] = {}
        #: agents revoked in the store (re-read with the technicians' revocations)
        self.revoked: set[str] = set()

    async def load(self) -> None:
        """Cache every enrolled, unrevoked agent (before listening); agents enrolled later
        are read on their first connect."""
        customers: dict[str, str] = {}  # one string per customer, not per agent
        for rec in await self.node.store.list_agents():
            if rec.revoked_at is None and rec.agent_id not in self.revoked:
                customer = customers.setdefault(rec.customer, rec.customer)
                self._agents[rec.agent_id] = KnownAgent(rec.agent_id, customer, rec.public_key)

    async def get(self, agent_id: str) -> KnownAgent | None:
        """The enrolled, unrevoked agent (``None``: unknown or revoked). Revoked agents
        leave the cache when :meth:`set_revoked` learns of them."""
        if agent_id in self.revoked:
            return None
        agent = self._agents.get(agent_id)
        if agent is None:
            rec = await self.node.store.get_agent(agent_id)
            if rec is None or rec.revoked_at is not None:
                return None
            agent = self._agents[agent_id] = KnownAgent(rec.agent_id, rec.customer,
                                                        rec.public_key)
        return agent

    def set_revoked(self, revoked: set[str]) -> None:
        self.revoked = revoked
        for agent_id in revoked & self._agents.keys():
            del self._agents[agent_id]


class AgentGateway:
    """Serves ``/agent`` connections of this node."""

    def __init__(self, node: Node, agents: AgentDirectory, gate: HandshakeGate,
                 fanouts: Fanouts, tunnels: TunnelBroker) -> None:
        self.node = node
        self.agents = agents
        self.gate = gate
        self.fanouts = fanouts
        self.tunnels = tunnels
        #: agent id -> when last seen (connect/disconnect), written in batches
        self.seen: dict[str, datetime] = {}
        #: agent id -> its open ``call`` sessions on this node (``max_calls_per_agent``)
        self.calls: dict[str, int] = {}
        self._keeper: RevocationKeeper | None = None
        self._pushed: m.SignedRevocations | None = None

    @functools.cached_property
    def recordings(self) -> RecordingDesk:
        """Recordings: brokered tunnels only, quotas, validated, sealed (server/recordings.py)."""
        return RecordingDesk(self.node.store, self.node.cfg)

    @cached_property
    def quotas(self) -> Quotas:
        """The per-agent quotas of this node's configuration (read once)."""
        return self.node.cfg.quotas

    @cached_property
    def refusals(self) -> RefusalLog:
        """Recent refusals per agent: audited once per interval, retries refused from
        memory."""
        return RefusalLog(self.quotas.audit_interval_s)

    async def serve(self, ws: ServerConnection, session: ServerSession, peer: str) -> None:
        """One agent connection: handshake (or enrollment), then its messages until bye."""
        node = self.node
        async with asyncio.timeout(node.cfg.handshake_timeout):
            first = await recv(ws, session)
            if isinstance(first, m.Enroll):
                await self._enroll(ws, session, first, peer)
                return
            if not isinstance(first, m.Hello):
                return  # bye before hello: nothing to do
            if first.role is not m.Role.AGENT:
                raise session.reject(RemoteProtocolError("technicians connect to /tech"))
            agent = await self.agents.get(session.identity)
            if agent is None:
                raise session.reject(AuthenticationFailed(
                    "unknown or revoked agent; enroll again with a new token"))
            await ws.send(session.challenge(secrets.token_bytes(32), now_utc()), text=True)
            proof = await recv(ws, session)
            if not isinstance(proof, m.Proof):
                return  # bye instead of a proof
            session.verify(proof, Ed25519PublicKey.from_public_bytes(agent.public_key))
            await ws.send(session.send(m.Welcome(session_id=secrets.token_hex(8),
                                                 identity=agent.agent_id,
                                                 server_time=now_utc())), text=True)
            self.gate.done(ws, welcomed=True)
        assert session.hello is not None
        if session.hello.mode is m.Mode.TUNNEL:  # the agent's end of an SSH tunnel
            assert session.hello.tunnel is not None  # the session checked it
            await self.tunnels.agent_arrived(session.hello.tunnel, agent.agent_id, ws)
            return
        link = AgentLink(agent.agent_id, agent.public_key, ws, session, peer, agent.customer)
        run = session.hello.mode is m.Mode.RUN
        if run:
            old = node.links.get(agent.agent_id)
            node.links[agent.agent_id] = link
            if old is not None:
                await old.ws.close(int(CloseCode.REPLACED),
                                   "replaced by a newer connection of the same agent")
            if node.presence is not None:
                await node.presence.claim(agent.agent_id, now_utc())
            self.seen[agent.agent_id] = now_utc()
            await self._send_revocations(link, self._signed())
            log.info("agent %s (%s) connected from %s", agent.agent_id, agent.customer, peer)
        else:
            if not await self._call_admitted(link):
                return
            log.info("agent %s (%s) call from %s", agent.agent_id, agent.customer, peer)
        idle = None if run else float(node.cfg.call_idle_timeout_s)
        try:
            while True:
                try:
                    async with asyncio.timeout(idle):  # a run session may stay silent
                        msg = await recv(ws, session)
                except TimeoutError:
                    log.info("agent %s: call from %s idle for %g s, closed", agent.agent_id,
                             peer, idle)
                    await ws.close(int(CloseCode.NORMAL), close_reason(
                        f"idle: no message for {idle:g} s; open a new call when needed"))
                    break
                if isinstance(msg, m.Bye):
                    break
                await self._from_agent(link, msg)
        finally:
            if not run:
                self._call_ended(agent.agent_id)
            node.pending.gone(link)
            if run and node.links.get(agent.agent_id) is link:
                self.fanouts.gone(agent.agent_id)
                del node.links[agent.agent_id]
                if node.presence is not None:
                    await node.presence.release(agent.agent_id)
                self.seen[agent.agent_id] = now_utc()
                if not node.stopping:
                    log.info("agent %s disconnected from %s", agent.agent_id, peer)

    async def _call_admitted(self, link: AgentLink) -> bool:
        """Count a new ``call`` session of ``link``'s agent, or close it (1013, try again
        later) when the agent already holds ``max_calls_per_agent`` on this node; the
        refusal is audited as ``quota.refused`` once per interval."""
        agent_id, allowed = link.agent_id, int(self.node.cfg.max_calls_per_agent)
        open_calls = self.calls.get(agent_id, 0)
        if open_calls < allowed:
            self.calls[agent_id] = open_calls + 1
            return True
        await link.ws.close(TRY_AGAIN_LATER, close_reason(
            f"{open_calls} calls of this agent are open, the most this server allows; "
            f"finish one and retry"))
        await self._audit_refusal(link, "quota.refused", "calls", subject=agent_id,
                                  detail={"limit": "calls", "allowed": allowed})
        return False

    def _call_ended(self, agent_id: str) -> None:
        left = self.calls.get(agent_id, 1) - 1
        if left > 0:
            self.calls[agent_id] = left
        else:
            self.calls.pop(agent_id, None)

    @property
    def keeper(self) -> RevocationKeeper:
        """The organisation-signed revocation list (server/revocations.py)."""
        if self._keeper is None:
            self._keeper = RevocationKeeper(self.node.cfg.home, self.node.org_pub)
        return self._keeper

    def _signed(self) -> m.SignedRevocations | None:
        signed = self.keeper.current(self.node.revoked, now_utc())
        self._pushed = signed
        return signed

    async def _send_revocations(self, link: AgentLink, signed: m.SignedRevocations | None
                                ) -> None:
        """The plain list (every version: what this server refuses) and, to version-3
        agents, the organisation-signed list (what the agent requires to stay fresh)."""
        await link.send(m.Revocations(fingerprints=self.node.revoked))
        if signed is not None and speaks(link.session.version, m.SignedRevocations):
            await link.send(signed)

    async def push_revocations(self) -> None:
        """Send the current revoked technician keys to every connected agent."""
        signed = self._signed()
        for link in list(self.node.links.values()):
            try:
                await self._send_revocations(link, signed)
            except ConnectionClosed:
                pass

    async def tend_revocations(self) -> None:
        """Periodic: re-read or re-sign the signed list; push it when it changed; warn in
        the log as its ``next_update`` approaches (server/revocations.py)."""
        before = self._pushed
        now = now_utc()
        try:
            changed = self._signed() != before
        except OSError as exc:  # the home unreadable: keep serving the list held
            log.warning("cannot read the signed revocation list: %s", exc.strerror)
            changed = False
        if changed:
            await self.push_revocations()
        warning = self.keeper.warning(now)
        if warning is not None:
            log.warning("%s", warning)

    async def _enroll(self, ws: ServerConnection, session: ServerSession, msg: m.Enroll,
                      peer: str) -> None:
        agent_id = agent_id_for(msg.public_key)
        address = ws.remote_address[0] if ws.remote_address else ""
        limit = self.gate.enrollments  # bad tokens per address (server/admission.py)
        wait = limit.attempt(address)
        try:
            if wait is not None:
                raise StoreError(f"too many enrollment tokens this server did not accept came "
                                 f"from your address; retry in {wait} s with a valid token, "
                                 f"copied whole (ask HelloWord support for a new one)")
            rec = await self.node.store.redeem_enroll_token(
                secret_hash=secret_hash(msg.secret), now=now_utc(), agent_id=agent_id,
                public_key=msg.public_key, hostname=msg.hostname, os=msg.os,
                software=msg.software)
        except (TokenRefused, StoreError) as exc:
            if isinstance(exc, TokenRefused):  # counted: one summary line per interval
                limit.failed(address)
            elif wait is None:  # the store's fault, not the token's
                limit.succeeded(address)
                log.info("enrollment from %s refused: %s", peer, exc)
            await ws.send(session.send(m.Error(re=None, code=m.ErrorCode.REFUSED,
                                               message=str(exc))), text=True)
            await ws.close(int(CloseCode.ENROLL_REFUSED), close_reason(str(exc)))
            return
        limit.succeeded(address)
        assert session.version is not None
        await ws.send(session.send(m.Enrolled(version=session.version, agent_id=rec.agent_id,
                                              customer=rec.customer)), text=True)
        log.info("agent %s enrolled for %s from %s", rec.agent_id, rec.customer, peer)
        await self.node.audit(event="agent.enrolled", actor=f"agent:{rec.agent_id}",
                              subject=rec.agent_id, now=now_utc(),
                              detail={"customer": rec.customer, "peer": peer})
        await ws.close(int(CloseCode.NORMAL), "enrolled")

    async def _from_agent(self, link: AgentLink, msg: m.AnyMessage) -> None:
        if isinstance(msg, m.OpenCase):
            await self._open_case(link, msg)
        elif isinstance(msg, m.Pong):
            self.fanouts.answer(link.agent_id, msg)
        elif isinstance(msg, m.Result):
            await self._result(link, msg)
        elif isinstance(msg, m.ConsentUpdate):
            await self._consent_update(link, msg)
        elif isinstance(msg, m.GetVisits | m.VisitUpdate):
            await link.send(await self._visits(link, msg))
        elif isinstance(msg, m.Recording):
            await link.send(await self.recordings.receive(link.agent_id, msg))
        elif isinstance(msg, m.Error):
            log.info("agent %s reported error %s", link.agent_id, msg.code.value)

    async def _open_case(self, link: AgentLink, msg: m.OpenCase) -> None:
        """Open a case within the agent's quotas (:func:`server.quota.check_case_open`); an
        agent that retries before its retry time is refused from memory."""
        held = (link.agent_id, "open_case")
        refusal = self.refusals.held(held, time.monotonic())
        if refusal is None:
            try:
                case, new = await self.node.store.open_case(
                    agent_id=link.agent_id, description=msg.description, request_id=msg.id,
                    now=now_utc(), quotas=self.quotas)
            except QuotaExceeded as exc:
                refusal = exc
                self.refusals.hold(held, exc, time.monotonic())
        if refusal is not None:
            await link.send(m.Error(re=msg.id, code=m.ErrorCode.REFUSED, message=str(refusal)))
            await self._audit_refusal(
                link, "quota.refused", refusal.limit, subject=link.agent_id,
                detail={"limit": refusal.limit, "allowed": refusal.allowed,
                        "request": msg.id})
            return
        await link.send(m.CaseOpened(re=msg.id, case=case.number, opened_at=case.opened_at))
        if new:
            log.info("case %s opened by agent %s", case.number, link.agent_id)
            await self.node.audit(event="case.opened", actor=f"agent:{link.agent_id}",
                                  subject=case.number, now=now_utc())

    async def _audit_refusal(self, link: AgentLink, event: str, reason: str, *, subject: str,
                             detail: dict[str, Any]) -> None:
        """Audit a refusal of ``link``'s agent, unless one for the same reason was audited
        within the quota interval (then it is counted in the next entry's ``refusals``)."""
        count = self.refusals.note((link.agent_id, event, reason), time.monotonic())
        if count is None:
            return
        log.info("agent %s: %s (%s), %d since the last entry", link.agent_id, event, reason,
                 count)
        await self.node.audit(event=event, actor=f"agent:{link.agent_id}", subject=subject,
                              now=now_utc(), detail={**detail, "reason": reason,
                                                     "refusals": count})

    async def _refuse_result(self, link: AgentLink, msg: m.Result, event: str, reason: str,
                             text: str, **extra: Any) -> None:
        """Answer a result that is not stored with ``refused`` (the agent drops it from its
        outbox) and audit it; the case and its tickets are left as they were."""
        await link.send(m.Error(re=msg.id, code=m.ErrorCode.REFUSED, message=text))
        await self._audit_refusal(
            link, event, reason, subject=msg.case,
            detail={"result": msg.id, "request": msg.re, "action": msg.action.value,
                    "ok": msg.ok, **extra})

    async def _result(self, link: AgentLink, msg: m.Result) -> None:
        """Check the result answers a request sent to this agent and fits its quota; store
        it (exactly once), then answer the waiting technician, then ack."""
        now = now_utc()
        payload = result_payload(msg)
        try:
            check_result_size(self.quotas, result_id=msg.id,
                              size=len(payload) + len(msg.error.encode()))
        except QuotaExceeded as exc:
            await self._refuse_result(link, msg, "quota.refused", exc.limit, str(exc),
                                      limit=exc.limit, allowed=exc.allowed)
            # The technician waiting for it (if it answers a request to this agent) hears why.
            self.node.pending.answer(msg.re, link, msg.case, m.Result(
                id=msg.id, re=msg.re, case=msg.case, action=msg.action, ok=False,
                error_code=m.ErrorCode.INTERNAL, error=f"the server refused the agent's "
                f"result: {exc}"), now)
            return
        state = case_state_after(msg)
        if state in GUARDED:  # rare (a verified fix): only then read what could hold it
            state = await self._guarded_state(link, msg)
        try:
            new = await self._store_result(
                msg_id=msg.id, request_id=msg.re, case=msg.case, agent_id=link.agent_id,
                action=msg.action.value, ok=msg.ok, payload=payload,
                error=msg.error, now=now, case_state=None if state is None else state.value,
                audit_detail={"action": msg.action.value, "request": msg.re,
                              "result": msg.id, "ok": msg.ok, "error": msg.error[:300]},
                answers_request=True)
        except ResultRefused as exc:
            # Answers no request sent to this agent for this case and action: never stored,
            # so nothing it says (findings, a receipt, a fix) moves the case or opens a ticket.
            await self._refuse_result(link, msg, "result.refused", exc.reason, str(exc))
            return
        except NotFound as exc:
            # A result for a case that is not this agent's: refuse it for good.
            await self._refuse_result(link, msg, "result.refused", "not_own_case", str(exc))
            return
        # Any other store error propagates: the connection closes without an ack, and the
        # agent resends the result from its outbox after reconnecting.
        if msg.receipt is not None:
            await self._receipt(link, msg.receipt, None)
        if new and state is CaseState.NEEDS_ONSITE:
            await self._escalate(msg.case)
        self.node.pending.answer(msg.re, link, msg.case, msg, now)
        await link.send(m.Ack(re=msg.id))

    async def _guarded_state(self, link: AgentLink, msg: m.Result) -> CaseState | None:
        """The state a result that would resolve its case leads to (:func:`cases.decide`):
        reads the case, its results and whether the case has an open ticket.

        Known gap: these reads happen just before the result's write batch, so a ticket
        opened in between is not seen; closing it means deciding inside the batch job
        (``store_result_in``)."""
        store = self.node.store
        case = await store.get_case(msg.case)
        if case is None or case.agent_id != link.agent_id:
            return None  # storing it is refused (NotFound): read nothing more
        history = [stored_result(r) for r in await store.list_results(msg.case)]
        ticket_open = await self.node.desk.open_ticket(msg.case) is not None
        decision = decide(parse_state(case.state), msg, unresolved_findings(history),
                          ticket_open)
        if decision.held_by:
            log.info("case %s stays %s after result %s: still open: %s", msg.case, case.state,
                     msg.id, ", ".join(decision.held_by))
        return decision.state

    async def _store_result(self, **result: Any) -> bool:
        """Store a result exactly once, in the next group-committed batch."""
        store = self.node.store
        return bool(await self.node.writer.submit(
            lambda conn: store.store_result_in(conn, **result)))

    async def _escalate(self, case: str) -> None:
        """A case that needs an on-site visit becomes a ticket at once (never twice).

        Never raises: it runs after the result is stored and before the agent's Ack, so a
        failure here is logged and the result path goes on (a technician escalates by
        hand)."""
        try:
            ticket, created = await self.node.desk.escalate(
                case, actor="server", now=now_utc(),
                reason="automatic: remote support found a hardware fault it cannot fix")
        except TicketError as exc:  # says what happened and what to do
            log.warning("could not escalate case %s: %s; escalate by hand with "
                        "`hw-tech escalate %s`", case, exc, case)
            return
        except Exception:
            log.exception("could not escalate case %s; escalate by hand with "
                          "`hw-tech escalate %s`", case, case)
            return
        if created:
            log.info("case %s escalated to on-site ticket %s (%s)", case, ticket.ticket,
                     ticket.state.value)

    async def _visits(self, link: AgentLink, msg: m.GetVisits | m.VisitUpdate
                      ) -> m.AnyMessage:
        """The customer's side of on-site tickets: list them, or apply a signed decision."""
        desk = self.node.desk
        message = ""
        if isinstance(msg, m.VisitUpdate):
            try:
                decision = verify_visit(msg.signed, Ed25519PublicKey.from_public_bytes(
                    link.public_key))
                if decision.agent_id != link.agent_id:
                    raise DecodeError("the decision names another agent")
                _ticket, message = await desk.customer_decision(
                    decision, msg.signed, agent_id=link.agent_id, now=now_utc())
            except DecodeError as exc:
                return m.Error(re=msg.id, code=m.ErrorCode.REFUSED,
                               message=f"visit decision refused: {exc.reason}")
            except (TicketError, NotFound) as exc:
                return m.Error(re=msg.id, code=m.ErrorCode.REFUSED, message=str(exc))
        visits = [await desk.get(t.ticket)
                  for t in await desk.tickets(agent_id=link.agent_id, limit=20)]
        return m.VisitList(re=msg.id, visits=visits, message=message)

    async def _consent_update(self, link: AgentLink, msg: m.ConsentUpdate) -> None:
        if await self._receipt(link, msg.receipt, msg.id) is not None:
            await link.send(m.Ack(re=msg.id))

    async def _receipt(self, link: AgentLink, receipt: m.SignedReceipt, update_id: str | None
                       ) -> m.ConsentGrant | None:
        """Verify a receipt with the agent's enrolled key and store it once, if it is for
        one of the agent's own cases and within its ``receipts_per_minute`` quota;
        otherwise answer ``refused`` (the agent drops it from its outbox) and audit it
        (``receipt.refused`` / ``quota.refused``, once per interval)."""
        try:
            grant = verify_receipt(receipt, Ed25519PublicKey.from_public_bytes(
                link.public_key))
            if grant.agent_id != link.agent_id:
                raise DecodeError("receipt names another agent")
        except DecodeError as exc:
            await link.send(m.Error(re=update_id, code=m.ErrorCode.REFUSED,
                                    message=f"consent receipt refused: {exc.reason}"))
            return None
        receipt_id = update_id or grant.receipt_id
        held = (link.agent_id, "receipt")
        refusal = self.refusals.held(held, time.monotonic())  # a flood: no store transaction
        if refusal is None:
            try:
                await self._store_receipt(link.agent_id, receipt_id, receipt, grant)
                return grant
            except NotOwnCase as exc:
                await link.send(m.Error(re=update_id, code=m.ErrorCode.REFUSED,
                                        message=str(exc)))
                await self._audit_refusal(
                    link, "receipt.refused", "not_own_case", subject=grant.case,
                    detail={"receipt": receipt_id, "tech": grant.tech})
                return None
            except QuotaExceeded as exc:
                refusal = exc
                self.refusals.hold(held, exc, time.monotonic())
        await link.send(m.Error(re=update_id, code=m.ErrorCode.REFUSED, message=str(refusal)))
        await self._audit_refusal(
            link, "quota.refused", refusal.limit, subject=link.agent_id,
            detail={"limit": refusal.limit, "allowed": refusal.allowed, "receipt": receipt_id,
                    "case": grant.case})
        return None

    async def _store_receipt(self, agent_id: str, receipt_id: str, receipt: m.SignedReceipt,
                             grant: m.ConsentGrant) -> None:
        now = now_utc()
        new = await self.node.store.store_consent_receipt(
            receipt_id=receipt_id, agent_id=agent_id, case=grant.case, tech=grant.tech,
            scopes=",".join(sc.value for sc in grant.scopes), payload=receipt.payload,
            signature=receipt.signature, granted_at=grant.granted_at,
            expires_at=grant.expires_at, revoked_at=grant.revoked_at, now=now,
            quotas=self.quotas)
        if new:
            await self.node.audit(
                event="consent.revoked" if grant.revoked_at else "consent.granted",
                actor=f"agent:{agent_id}", subject=grant.case, now=now,
                detail={"receipt": receipt_id, "tech": grant.tech, "via": grant.via,
                        "scopes": [sc.value for sc in grant.scopes],
                        "expires_at": grant.expires_at.isoformat()})
