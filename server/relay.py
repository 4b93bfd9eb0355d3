"""The relay: a technician's signed command to its agent and the stored result back.

:meth:`Relay.relay` checks the signed command (to fail fast: the agent checks everything
again against the org key it pinned), audits it and records the request in the store (a
result is only accepted as the answer to a recorded request, :mod:`server.store.requests`),
sends it as a
:class:`~proto.messages.Request` on this node's link to the agent or through the bus to the
node holding it (:mod:`server.bus`, :mod:`server.presence`), and waits for the result the
agent gateway stores (:class:`server.pending.PendingRequests`). :meth:`Relay.serve_forward`
is the agent's node's side of a bus-forwarded request; :meth:`Relay.tunnel_context` gives
:mod:`server.tunnel` the same parts for an SSH tunnel.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from websockets.exceptions import ConnectionClosed

from proto import messages as m
from proto.command import refusal_message, verify_command
from proto.errors import CommandRefused, DecodeError, RefusalReason
from proto.receipt import verify_receipt

from .agent_gateway import AgentDirectory
from .bus import Forward, Forwarded
from .errors import AgentGone, RelayError
from .node import AgentLink, Node
from .onsite.tickets import TicketError
from .pending import Answer
from .pki import now_utc
from .store import CaseRecord, NotFound
from .tunnel import TunnelBroker, TunnelContext

#: Technician requests the server relays to an agent as signed commands.
Relayed = m.RunDiag | m.RunFix | m.ListPlugins | m.AskConsent | m.OfferVisit
#: Case numbers whose agent is remembered at most (a case never changes agent).
CASE_AGENTS_CACHED = 100_000


def action_of(msg: Relayed) -> m.Action:
    """The action a relayed request's signed command must name."""
    return (m.Action.DIAG if isinstance(msg, m.RunDiag) else
            m.Action.FIX if isinstance(msg, m.RunFix) else
            m.Action.PLUGINS if isinstance(msg, m.ListPlugins) else
            m.Action.BOOK_VISIT if isinstance(msg, m.OfferVisit) else m.Action.CONSENT)


class Relay:
    """Relays technicians' requests to agents, on this node or through the bus."""

    def __init__(self, node: Node, agents: AgentDirectory, tunnels: TunnelBroker) -> None:
        self.node = node
        self.agents = agents
        self.tunnels = tunnels
        #: case number -> agent id; a case never changes agent, so this never goes stale
        self._case_agent: dict[str, str] = {}

    async def case(self, number: str) -> CaseRecord:
        """The case ``number``. Raises NotFound."""
        case = await self.node.store.get_case(number)
        if case is None:
            raise NotFound(f"no case {number}; list cases with `hw-tech cases`")
        return case

    async def agent_of(self, number: str) -> str:
        """The agent of case ``number`` (remembered). Raises NotFound."""
        agent_id = self._case_agent.get(number)
        if agent_id is None:
            agent_id = (await self.case(number)).agent_id
            if len(self._case_agent) >= CASE_AGENTS_CACHED:
                self._case_agent.clear()
            self._case_agent[number] = agent_id
        return agent_id

    async def relay(self, tech: str, key: str, msg: Relayed) -> m.AnyMessage:
        """Check the technician's signed command (fail fast), relay it, await the result.

        The agent checks everything again against the org key it pinned; this check only
        saves a round trip for commands that would be refused anyway.
        """
        node = self.node
        action = action_of(msg)
        agent_id = await self.agent_of(msg.case)
        now = now_utc()
        try:
            verified = verify_command(msg.command, org_pub=node.org_pub, now=now,
                                      agent_id=agent_id, case=msg.case, action=action.value,
                                      revoked=node.revoked)
            if verified.command.tech != tech or verified.cert.fingerprint != key:
                raise CommandRefused(RefusalReason.WRONG_TECHNICIAN,
                                     "the command is not signed with the key the connected "
                                     f"technician {tech} logged in with")
            if isinstance(msg, m.OfferVisit):
                await self._check_offer(msg, verified.command.args)
        except CommandRefused as exc:
            await node.audit(
                event="command", actor=f"tech:{tech}", subject=msg.case, now=now,
                detail={"action": action.value, "agent": agent_id, "verdict": "refused",
                        "reason": exc.reason.value})
            text = refusal_message(exc, msg.command, org_pub=node.org_pub, now=now)
            return m.Error(re=msg.id, code=m.ErrorCode.REFUSED,
                           message=f"{exc.reason.value}: {text}")
        link = node.links.get(agent_id)
        where = (await node.presence.node_of(agent_id, now)
                 if link is None and node.presence is not None else None)
        if link is None and where is None:
            return m.Error(re=msg.id, code=m.ErrorCode.AGENT_OFFLINE,
                           message=f"agent {agent_id} of case {msg.case} is offline; "
                                   "ask the customer to start `hw-agent run`, then retry")
        request = m.Request(id="rq-" + secrets.token_hex(8), case=msg.case, action=action,
                            tech=tech, timeout=msg.timeout, command=msg.command)
        await self._sent(request, agent_id, now, audit_detail={
            "action": action.value, "agent": agent_id, "verdict": "relayed",
            "request": request.id, "args": verified.command.args,
            **({"node": where} if where is not None else {})})
        try:
            async with asyncio.timeout(msg.timeout):
                if link is not None:
                    result, stored_at = await self.request_local(link, request)
                else:
                    assert where is not None
                    result, stored_at = await self.request_remote(where, agent_id, request)
        except TimeoutError:
            return m.Error(re=msg.id, code=m.ErrorCode.TIMEOUT,
                           message=f"the agent did not answer within {msg.timeout:g}s; a "
                                   "result it sends later is stored (`hw-tech case`)")
        except (ConnectionClosed, RelayError):
            return m.Error(re=msg.id, code=m.ErrorCode.AGENT_OFFLINE,
                           message=f"agent {agent_id} went offline during the request; a "
                                   "result it still sends is stored (`hw-tech case`)")
        if action is m.Action.CONSENT:
            public_key = (link.public_key if link is not None
                          else await self._public_key(agent_id))
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
            return m.TicketDetail(re=msg.id, ticket=await node.desk.get(msg.ticket))
        if action is m.Action.PLUGINS:
            return m.PluginList(re=msg.id, case=msg.case, plugins=result.plugins)
        return m.DiagDone(re=msg.id, case=msg.case, result=stored)

    async def _sent(self, request: m.Request, agent_id: str, now: datetime,
                    audit_detail: dict[str, Any] | None = None) -> None:
        """Record ``request`` as sent to ``agent_id`` (the only results the agent gateway
        stores answer such a record) and, with ``audit_detail``, audit the relayed command,
        in ONE job of the next group-committed batch (``server/writer.py``): one more INSERT
        in a transaction that commits anyway. It is durable before the request is sent, so
        the agent's answer always finds it, on any node, after any restart."""
        store = self.node.store

        async def job(conn: Any) -> None:
            if audit_detail is not None:
                await store.append_audit_in(conn, event="command",
                                            actor=f"tech:{request.tech}", subject=request.case,
                                            detail=audit_detail, now=now)
            await store.record_request_in(conn, request_id=request.id, agent_id=agent_id,
                                          case=request.case, action=request.action.value,
                                          now=now)

        await self.node.writer.submit(job)

    async def _public_key(self, agent_id: str) -> bytes:
        agent = await self.agents.get(agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id} is not enrolled")
        return agent.public_key

    async def _check_offer(self, msg: m.OfferVisit, args: dict[str, Any]) -> None:
        """The offer a technician signed must be the ticket's current quote and slots."""
        ticket = await self.node.desk.get(msg.ticket)
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

    async def request_local(self, link: AgentLink, request: m.Request) -> Answer:
        """Send ``request`` on this node's link and wait for its stored result."""
        pending = self.node.pending
        future = pending.expect(request.id, link, request.case)
        try:
            await link.send(request)
            return await asyncio.shield(future)
        finally:
            pending.drop(request.id)

    async def request_remote(self, where: str, agent_id: str, request: m.Request) -> Answer:
        """Ask the node ``where`` holding the agent to relay ``request``; its answer is the
        stored result (that node stored it). Raises TimeoutError, AgentGone or BusError."""
        answer = await self.node.bus.request(where, Forward(agent_id=agent_id, request=request),
                                             wait=request.timeout)
        if answer.result is None:
            if answer.error == "timeout":
                raise TimeoutError
            raise AgentGone(answer.error)
        return answer.result, answer.stored_at or now_utc()

    async def serve_forward(self, agent_id: str, request: m.Request) -> Forwarded:
        """Another node's request for an agent connected here (from the bus)."""
        link = self.node.links.get(agent_id)
        if link is None:
            return Forwarded(error="offline")
        try:
            async with asyncio.timeout(request.timeout):
                result, stored_at = await self.request_local(link, request)
        except TimeoutError:
            return Forwarded(error="timeout")
        except (ConnectionClosed, AgentGone):
            return Forwarded(error="gone")
        return Forwarded(result=result, stored_at=stored_at)

    async def _consent_answer(self, msg: Relayed, public_key: bytes,
                              result: m.Result) -> m.AnyMessage:
        if not result.ok or result.receipt is None:
            return m.ConsentAnswer(re=msg.id, case=msg.case, granted=False,
                                   message=result.error or "the customer did not grant it")
        try:  # already verified and stored by the agent gateway; decode it for the technician
            grant = verify_receipt(result.receipt,
                                   Ed25519PublicKey.from_public_bytes(public_key))
        except DecodeError as exc:
            return m.Error(re=msg.id, code=m.ErrorCode.REFUSED,
                           message=f"the agent's consent receipt does not verify ({exc.reason})")
        return m.ConsentAnswer(re=msg.id, case=msg.case, granted=True, grant=grant,
                               message=f"granted {', '.join(sc.value for sc in grant.scopes)} "
                                       f"until {grant.expires_at.isoformat(timespec='seconds')}")

    # -- tunnels ---------------------------------------------------------------------

    def tunnel_context(self) -> TunnelContext:
        """What :func:`server.tunnel.open_tunnel` needs: the tunnel request waits in the
        same :class:`~server.pending.PendingRequests` as any other."""
        node = self.node
        pending = node.pending

        def pending_result(request_id: str, agent_id: str, case: str
                           ) -> asyncio.Future[Answer] | None:
            link = node.links.get(agent_id)
            if link is not None:
                return pending.expect(request_id, link, case)
            if node.presence is None:
                return None
            # maybe on another node: send_request looks
            return pending.expect_remote(request_id, case)

        async def send_request(agent_id: str, request: m.Request) -> None:
            await self._sent(request, agent_id, now_utc())  # its result must find it
            link = pending.owner(request.id)
            if link is not None:
                await link.send(request)
                return
            # Several nodes: the agent's node relays the request; the agent dials its tunnel
            # connection to this node (``via``), so the relay stays on one node.
            where = (await node.presence.node_of(agent_id, now_utc())
                     if node.presence is not None else None)
            if where is None:
                pending.fail(request.id, AgentGone("offline"))
                return
            pending.ask_remote(request.id, self.request_remote(
                where, agent_id, msgspec.structs.replace(request, via=node.cfg.own_url)))

        return TunnelContext(
            store=node.store, broker=self.tunnels, org_pub=node.org_pub,
            revoked=lambda: node.revoked, agent_of=self.agent_of, send_request=send_request,
            pending_result=pending_result, drop_pending=pending.drop, sessions=node.sessions)
