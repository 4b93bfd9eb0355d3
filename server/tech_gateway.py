"""The technician gateway: ``/tech`` sessions and the requests they carry.

A technician authenticates with an OpenSSH certificate signed by the org key (plus the
challenge of :mod:`proto.session`); each request then runs as its own task (at most
:data:`TECH_CONCURRENCY` per connection, :data:`SERVER_CONCURRENCY` for all): reads of
agents, cases, tickets and recordings are answered here, commands for an agent go to the
relay (:mod:`server.relay`), fan-outs to :mod:`server.fanout`, and an ``open_tunnel``
turns the connection into an SSH tunnel (:mod:`server.tunnel`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from proto import messages as m
from proto.errors import AuthenticationFailed, FrameTooLarge, RemoteProtocolError, UnexpectedMessage
from proto.session import ServerSession, speaks

from . import pki
from .errors import CertificateRefused
from .fanout import FanoutService
from .node import Node, recv
from .onsite.tickets import TicketError
from .pki import now_utc
from .relay import Relay
from .results import stored_result
from .store import CaseRecord, NotFound, StoreError
from .tunnel import get_recording, open_tunnel

log = logging.getLogger("hw.server")

#: Requests one technician connection may have in flight before the server stops reading.
TECH_CONCURRENCY = 16
#: Requests of all technicians served at once; more wait in memory, not in the store's
#: connection pool (where they would time out under a fan-out to thousands of agents).
SERVER_CONCURRENCY = 256
#: Listings carry at most this many cases (newest first), descriptions cut to 200 chars.
LIST_LIMIT = 500
#: A case detail carries its newest results only.
RESULTS_LIMIT = 20

Reply = Callable[[m.AnyMessage], Awaitable[None]]


def case_info(c: CaseRecord, *, brief: bool = False) -> m.CaseInfo:
    description = c.description[:200] if brief else c.description
    return m.CaseInfo(number=c.number, agent_id=c.agent_id, customer=c.customer,
                      description=description, state=c.state, opened_at=c.opened_at,
                      updated_at=c.updated_at)


class TechGateway:
    """Serves ``/tech`` connections of this node."""

    def __init__(self, node: Node, relay: Relay, fanout: FanoutService) -> None:
        self.node = node
        self.relay = relay
        self.fanout = fanout
        self._serving = asyncio.Semaphore(SERVER_CONCURRENCY)

    async def serve(self, ws: ServerConnection, session: ServerSession, peer: str) -> None:
        """One technician connection: handshake, then its requests until bye."""
        node = self.node
        async with asyncio.timeout(node.cfg.handshake_timeout):
            hello = await recv(ws, session)
            if not isinstance(hello, m.Hello) or hello.role is not m.Role.TECH:
                raise session.reject(RemoteProtocolError("only technicians connect to /tech"))
            name = session.identity
            if hello.certificate is None:
                raise session.reject(UnexpectedMessage("technician hello without certificate"))
            try:
                key, fingerprint = pki.verify_tech_certificate(hello.certificate,
                                                               org_pub=node.org_pub, name=name)
            except CertificateRefused as exc:
                raise session.reject(AuthenticationFailed(str(exc))) from None
            tech = await node.store.get_technician(name)
            if tech is None or tech.revoked_at is not None or tech.key_fingerprint != fingerprint:
                raise session.reject(AuthenticationFailed(
                    f"technician {name!r} is not registered or was revoked on this server"))
            await ws.send(session.challenge(secrets.token_bytes(32), now_utc()), text=True)
            proof = await recv(ws, session)
            if not isinstance(proof, m.Proof):
                return  # bye instead of a proof
            session.verify(proof, key)
            await ws.send(session.send(m.Welcome(session_id=secrets.token_hex(8), identity=name,
                                                 server_time=now_utc())), text=True)
            node.tech_gate.done(ws, welcomed=True)
        log.info("technician %s connected from %s", name, peer)
        await node.audit(event="tech.login", actor=f"tech:{name}", subject=name,
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

        held = node.sessions.hold(name, fingerprint, ws, tasks)  # a revocation closes it
        try:
            while True:
                msg = await recv(ws, session)
                if isinstance(msg, m.Bye):
                    break
                if isinstance(msg, m.OpenTunnel):  # the connection becomes the tunnel
                    for task in tasks:
                        task.cancel()
                    if await open_tunnel(self.relay.tunnel_context(), tech=name,
                                         key=fingerprint, msg=msg, ws=ws, reply=reply):
                        break
                    continue
                await limit.acquire()  # backpressure: a flood waits, memory stays bounded
                task = asyncio.create_task(self._request(name, fingerprint, msg, reply))
                tasks.add(task)
                task.add_done_callback(done)
        finally:
            node.sessions.release(held)
            for task in tasks:
                task.cancel()
            log.info("technician %s disconnected from %s", name, peer)

    async def _request(self, tech: str, key: str, msg: m.AnyMessage, reply: Reply) -> None:
        rid = getattr(msg, "id", None)
        try:
            # checked against the store now, not the last poll: refused and audited
            refused = await self.node.sessions.refusal(tech, key, msg)
            if refused is not None:
                await reply(refused)
                return
            async with self._serving:
                answer = await self._serve(tech, key, msg)
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

    async def _serve(self, tech: str, key: str, msg: m.AnyMessage) -> m.AnyMessage:
        node = self.node
        desk = node.desk
        if isinstance(msg, m.ListAgents):
            return await self._list_agents(msg)
        if isinstance(msg, m.ListCases):
            cases = await node.store.list_cases(state=msg.state)
            return m.CaseList(re=msg.id, cases=[case_info(c, brief=True)
                                                for c in cases[:LIST_LIMIT]])
        if isinstance(msg, m.GetRecording):
            await self.relay.case(msg.case)
            return await get_recording(node.store, msg)
        if isinstance(msg, m.GetCase):
            case = await self.relay.case(msg.case)
            history = await node.store.case_history(case.number)
            results = await node.store.list_results(case.number)
            return m.CaseDetail(
                re=msg.id, case=case_info(case),
                history=[m.CaseEvent(state=h.state, at=h.at, actor=h.actor, note=h.note)
                         for h in history],
                results=[stored_result(r) for r in results[-RESULTS_LIMIT:]])
        if isinstance(msg, m.RunDiag | m.RunFix | m.ListPlugins | m.AskConsent | m.OfferVisit):
            return await self.relay.relay(tech, key, msg)
        if isinstance(msg, m.Fanout):
            return await self.fanout.run(tech, key, msg)
        if isinstance(msg, m.EscalateCase):
            ticket, _created = await desk.escalate(
                msg.case, reason=msg.reason, actor=f"tech:{tech}", now=now_utc(),
                service=msg.service)
            return m.TicketDetail(re=msg.id, ticket=ticket)
        if isinstance(msg, m.ListTickets):
            due = (now_utc().astimezone(desk.policy.hours.tz).date()
                   if msg.followup_due else None)
            return m.TicketList(re=msg.id, tickets=await desk.tickets(
                state=msg.state, followup_due_on=due, limit=LIST_LIMIT))
        if isinstance(msg, m.GetTicket):
            return m.TicketDetail(re=msg.id, ticket=await desk.get(msg.ticket))
        if isinstance(msg, m.BookVisit):
            return m.TicketDetail(re=msg.id, ticket=await desk.book(
                msg.ticket, start=msg.start, accepted_by=f"{msg.accepted_by} (recorded by "
                f"{tech})", actor=f"tech:{tech}", now=now_utc()))
        if isinstance(msg, m.UpdateTicket):
            return m.TicketDetail(re=msg.id, ticket=await desk.move(
                msg.ticket, msg.to, actor=f"tech:{tech}", now=now_utc(), note=msg.note,
                resolved=msg.resolved, root_cause=msg.root_cause,
                satisfaction=msg.satisfaction))
        raise AssertionError(f"unhandled {type(msg).__name__}")  # session table forbids it

    async def _list_agents(self, msg: m.ListAgents) -> m.AgentList:
        """One page of the enrolled agents (enrollment order), filtered."""
        node = self.node
        elsewhere = (await node.presence.online(now_utc()) if node.presence is not None
                     else set())
        matching = [(a, online) for a in await node.store.list_agents(customer=msg.customer)
                    if (online := a.agent_id in node.links or a.agent_id in elsewhere)
                    is msg.online or msg.online is None]
        page = matching[msg.offset:msg.offset + msg.limit]
        end = msg.offset + len(page)
        return m.AgentList(
            re=msg.id, next_offset=end if end < len(matching) else None,
            agents=[m.AgentInfo(agent_id=a.agent_id, customer=a.customer, kind=a.kind,
                                city=a.city, hostname=a.hostname, os=a.os, online=online,
                                last_seen=a.last_seen) for a, online in page])
