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
from proto.certs import verify_user_certificate
from proto.errors import (
    AuthenticationFailed,
    CertificateError,
    FrameTooLarge,
    RemoteProtocolError,
    UnexpectedMessage,
)
from proto.roles import Role, allowed, consent_scopes_allowed, describe
from proto.session import CASE_PAGES_VERSION, ServerSession, speaks

from . import access, pki
from .access import CALLER, Caller
from .errors import CertificateRefused
from .fanout import FanoutService
from .node import Node, recv
from .onsite.tickets import TicketError
from .pki import now_utc
from .recordings import for_version
from .relay import Relay
from .results import stored_result
from .store import CaseRecord, Conflict, NotFound, StoreError
from .tunnel import get_recording, open_tunnel

log = logging.getLogger("hw.server")

#: Requests one technician connection may have in flight before the server stops reading.
TECH_CONCURRENCY = 16
#: Requests of all technicians served at once; more wait in memory, not in the store's
#: connection pool (where they would time out under a fan-out to thousands of agents).
SERVER_CONCURRENCY = 256
#: Ticket listings carry at most this many tickets (newest first); case listings have
#: pages of at most :data:`proto.messages.CASE_PAGE` cases, descriptions cut to 200 chars.
LIST_LIMIT = 500
#: A case detail carries its newest results only.
RESULTS_LIMIT = 20

Reply = Callable[[m.AnyMessage], Awaitable[None]]


def case_info(c: CaseRecord, *, brief: bool = False, version: int = 1) -> m.CaseInfo:
    """The wire form of a case for a session at protocol ``version``: its owner from version
    3 on (an older hw-tech refuses the unknown field)."""
    description = c.description[:200] if brief else c.description
    return m.CaseInfo(number=c.number, agent_id=c.agent_id, customer=c.customer,
                      description=description, state=c.state, opened_at=c.opened_at,
                      updated_at=c.updated_at,
                      owner=c.owner if speaks(version, m.ClaimCase) else None)


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
            try:  # cached by proto.certs: the roles the check above read
                roles = verify_user_certificate(hello.certificate, org_pub=node.org_pub,
                                                principal=name, now=now_utc()).roles
            except CertificateError as exc:
                raise session.reject(AuthenticationFailed(exc.message)) from None
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
        CALLER.set(Caller(name=name, key=fingerprint, roles=roles,
                          version=session.version or 1))
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
            if (isinstance(msg, m.CaseList) and msg.next_offset is not None
                    and (session.version or 0) < CASE_PAGES_VERSION):  # v2 has no pages
                msg = m.Error(re=msg.re, code=m.ErrorCode.BAD_REQUEST, message=(
                    f"more than {m.CASE_PAGE} cases match and this hw-tech (protocol version "
                    f"{session.version}) cannot page through them; upgrade hw-tech, or "
                    "narrow the list with `hw-tech cases --state STATE`"))
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
                    refused = await self._tunnel_refusal(msg)
                    if refused is not None:
                        await reply(refused)
                        continue
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
        caller = CALLER.get()
        rid: str = getattr(msg, "id", "")
        refused = await self._role_refusal(caller, msg)
        if refused is not None:
            return refused
        if isinstance(msg, m.ListAgents):
            return await self._list_agents(caller, msg)
        if isinstance(msg, m.ListCases):
            return await self._list_cases(caller, msg)
        if isinstance(msg, m.ClaimCase | m.AssignCase):
            return await self._set_owner(caller, msg)
        if isinstance(msg, m.GetRecording):
            case = await self.relay.case(msg.case)
            answer = await self._recording_refusal(caller, case, msg)
            if isinstance(answer, m.Error):
                return answer
            data = await get_recording(node.store, answer)
            if isinstance(data, m.RecordingData):  # v3 fields, sealed data: v3 sessions only
                data = for_version(data, caller.version)  # before the audit: reads that happen
            if isinstance(data, m.RecordingData) and data.info is not None:
                await node.audit(event="recording.read", actor=f"tech:{tech}",
                                 subject=msg.case, now=now_utc(),
                                 detail={"recording": data.info.id, "key": key})
            return data
        if isinstance(msg, m.GetCase):
            case = await self.relay.case(msg.case)
            why = access.read_refusal(caller, case)
            if why is not None:
                return await self._refuse(caller, msg, why, subject=case.number)
            history = await node.store.case_history(case.number)
            results = await node.store.list_results(case.number)
            await node.audit(event="case.read", actor=f"tech:{tech}", subject=case.number,
                             now=now_utc(), detail={"results": min(len(results),
                                                                   RESULTS_LIMIT),
                                                    "key": key})
            return m.CaseDetail(
                re=msg.id, case=case_info(case, version=caller.version),
                history=[m.CaseEvent(state=h.state, at=h.at, actor=h.actor, note=h.note)
                         for h in history],
                results=[stored_result(r) for r in results[-RESULTS_LIMIT:]])
        if isinstance(msg, m.RunDiag | m.RunFix | m.ListPlugins | m.AskConsent | m.OfferVisit
                      | m.EscalateCase):
            worked = await self._case_work(caller, msg)
            if isinstance(worked, m.Error):
                return worked
            done: m.AnyMessage
            if isinstance(msg, m.EscalateCase):
                ticket, _created = await desk.escalate(
                    msg.case, reason=msg.reason, actor=f"tech:{tech}", now=now_utc(),
                    service=msg.service)
                done = m.TicketDetail(re=msg.id, ticket=ticket)
            else:
                done = await self.relay.relay(tech, key, msg)
            await self._claim_after(caller, worked, msg, done)
            return done
        if isinstance(msg, m.Fanout):
            return await self.fanout.run(tech, key, msg)
        if isinstance(msg, m.ListTickets):
            due = (now_utc().astimezone(desk.policy.hours.tz).date()
                   if msg.followup_due else None)
            scope = access.ticket_scope(caller)  # filtered in the query, before its limit
            return m.TicketList(re=msg.id, tickets=await desk.tickets(
                state=msg.state, followup_due_on=due, limit=LIST_LIMIT,
                visits_of=None if scope is None else scope.visits_of,
                cases_of=None if scope is None else scope.cases_of))
        if isinstance(msg, m.GetTicket | m.UpdateTicket):
            ticket = await desk.get(msg.ticket)
            of_case = (await self.relay.case(ticket.case)
                       if access.ticket_needs_case(caller, ticket) else None)
            why = access.ticket_refusal(caller, ticket, of_case)
            if why is None and isinstance(msg, m.UpdateTicket):
                why = access.ticket_update_refusal(caller, ticket)
            if why is not None:
                return await self._refuse(caller, msg, why, subject=msg.ticket)
            if isinstance(msg, m.GetTicket):
                await node.audit(event="ticket.read", actor=f"tech:{tech}", subject=ticket.ticket,
                                 now=now_utc(), detail={"case": ticket.case, "key": key})
                return m.TicketDetail(re=rid, ticket=ticket)
            return m.TicketDetail(re=msg.id, ticket=await desk.move(
                msg.ticket, msg.to, actor=f"tech:{tech}", now=now_utc(), note=msg.note,
                resolved=msg.resolved, root_cause=msg.root_cause,
                satisfaction=msg.satisfaction))
        if isinstance(msg, m.BookVisit):
            return m.TicketDetail(re=msg.id, ticket=await desk.book(
                msg.ticket, start=msg.start, accepted_by=f"{msg.accepted_by} (recorded by "
                f"{tech})", actor=f"tech:{tech}", now=now_utc()))
        raise AssertionError(f"unhandled {type(msg).__name__}")  # session table forbids it

    # -- access (server/access.py, proto/roles.py) ---------------------------------------

    async def _refuse(self, caller: Caller, msg: m.AnyMessage | m.OpenTunnel, why: str, *,
                      subject: str = "") -> m.Error:
        """Refuse ``msg`` with ``why`` (code ``refused``) and audit it (``tech.refused``)."""
        request = type(msg).__struct_config__.tag
        await self.node.audit(event="tech.refused", actor=f"tech:{caller.name}",
                              subject=subject or caller.name, now=now_utc(),
                              detail={"request": request, "roles": describe(caller.roles),
                                      "why": why[:500]})
        return m.Error(re=getattr(msg, "id", None), code=m.ErrorCode.REFUSED, message=why)

    async def _role_refusal(self, caller: Caller, msg: m.AnyMessage | m.OpenTunnel
                            ) -> m.Error | None:
        """The roles table (:func:`proto.roles.allowed`) for ``msg``; the desk asks only for
        the ``book-visit`` scope."""
        why = allowed(caller.roles, str(type(msg).__struct_config__.tag))
        if why is None and isinstance(msg, m.AskConsent):
            why = consent_scopes_allowed(caller.roles, access.consent_scopes(msg))
        if why is None:
            return None
        return await self._refuse(caller, msg, why, subject=getattr(msg, "case", ""))

    async def _case_work(self, caller: Caller, msg: m.AnyMessage | m.OpenTunnel
                         ) -> m.Error | CaseRecord:
        """``msg``'s case if ``caller`` may act on it (their own, unassigned, or a
        supervisor's any), else the refusal."""
        case = await self.relay.case(str(getattr(msg, "case", "")))
        why = access.act_refusal(caller, case, msg)
        if why is not None:
            return await self._refuse(caller, msg, why, subject=case.number)
        return case

    async def _claim_after(self, caller: Caller, case: CaseRecord, msg: m.AnyMessage,
                           answer: m.AnyMessage) -> None:
        """The first remote work done on an unassigned case claims it for the caller: work
        the agent did (not refused, a consent request the customer granted) or an
        escalation. If someone claimed it meanwhile, theirs it stays."""
        done = not isinstance(answer, m.Error) and not (
            isinstance(answer, m.ConsentAnswer) and not answer.granted)
        if not done or not access.claims(caller, case, msg):
            return
        try:
            await self.node.store.set_case_owner(
                case.number, caller.name, actor=f"tech:{caller.name}", now=now_utc(),
                expect=None)
        except Conflict:
            log.info("case %s was claimed by someone else while %s worked on it",
                     case.number, caller.name)

    async def _tunnel_refusal(self, msg: m.OpenTunnel) -> m.Error | None:
        """The roles table and the case's owner for a tunnel, before it opens (a tunnel
        needs a grant, which a consent request or a diag before it has claimed)."""
        caller = CALLER.get()
        refused = await self._role_refusal(caller, msg)
        if refused is not None:
            return refused
        case = await self._case_work(caller, msg)
        return case if isinstance(case, m.Error) else None

    async def _recording_refusal(self, caller: Caller, case: CaseRecord, msg: m.GetRecording
                                 ) -> m.GetRecording | m.Error:
        """The request to serve (a remote technician asking for "the newest" gets the newest
        of their own sessions), or the refusal."""
        if caller.has(access.READ_ALL_RECORDINGS):
            return msg
        techs = await self.node.store.recording_techs(case.number)
        if msg.recording is None:
            mine = [rid for rid, tech in techs if tech == caller.name]
            if not mine and techs:
                return await self._refuse(caller, msg, (
                    f"case {case.number} has no recording of a session of {caller.name}; "
                    "recordings are readable by the session's technician, supervisors and "
                    "auditors only"), subject=case.number)
            return m.GetRecording(id=msg.id, case=msg.case, recording=mine[0] if mine else None)
        tech = dict(techs).get(msg.recording)
        if tech is None:
            return msg  # get_recording answers not_found
        why = access.recording_refusal(caller, tech, msg.recording)
        if why is not None:
            return await self._refuse(caller, msg, why, subject=case.number)
        return msg

    async def _set_owner(self, caller: Caller, msg: m.ClaimCase | m.AssignCase
                         ) -> m.AnyMessage:
        """Claim (an unassigned case, or a supervisor's any), assign (supervisor) or
        transfer (the owner's own case); audited by the store in the same transaction."""
        case = await self.relay.case(msg.case)
        supervisor = Role.SUPERVISOR in caller.roles
        actor = f"tech:{caller.name}"
        if isinstance(msg, m.ClaimCase):
            to = caller.name
            if case.owner not in (None, caller.name) and not supervisor:
                return await self._refuse(caller, msg, (
                    f"case {case.number} is owned by {case.owner}; ask a supervisor to "
                    f"assign it to you or {case.owner} to transfer it"), subject=case.number)
        else:
            to = msg.to
            if not supervisor and case.owner != caller.name:
                return await self._refuse(caller, msg, (
                    f"only a supervisor assigns case {case.number}, or its owner "
                    f"({case.owner or 'nobody yet'}) transfers it; claim it first "
                    f"(`hw-tech claim {case.number}`) or ask a supervisor"), subject=case.number)
            target = await self.node.store.get_technician(to)
            if target is None or target.revoked_at is not None:
                return m.Error(re=msg.id, code=m.ErrorCode.NOT_FOUND, message=(
                    f"no technician {to!r} on this server (or revoked); list them with "
                    "`hw-server tech list`"))
            if target.roles is not None and Role.REMOTE.value not in target.roles.split(","):
                return m.Error(re=msg.id, code=m.ErrorCode.REFUSED, message=(
                    f"technician {to} does not hold the remote role ({target.roles}), so "
                    "they could not work on the case; assign it to a remote technician"))
        try:
            updated, before = await self.node.store.set_case_owner(
                case.number, to, actor=actor, now=now_utc(), expect=case.owner,
                any_owner=supervisor)
        except Conflict as exc:
            return m.Error(re=msg.id, code=m.ErrorCode.REFUSED, message=str(exc))
        return m.CaseOwner(re=msg.id, case=case_info(updated, version=caller.version),
                           previous=before)

    async def _list_cases(self, caller: Caller, msg: m.ListCases) -> m.CaseList:
        """One page of cases (newest first), filtered, of those ``caller`` may see; one store
        query of one case more than the page, to know whether another page follows."""
        cases = await self.node.store.list_cases(
            state=msg.state, customer=msg.customer, offset=msg.offset, limit=msg.limit + 1,
            owner=msg.owner, unassigned=msg.unassigned,
            visible_to=None if caller.sees_all_cases else caller.name)
        page = cases[:msg.limit]
        return m.CaseList(re=msg.id, cases=[case_info(c, brief=True, version=caller.version)
                                            for c in page],
                          next_offset=msg.offset + len(page) if len(cases) > msg.limit
                          else None)

    async def _list_agents(self, caller: Caller, msg: m.ListAgents) -> m.AgentList:
        """One page of the enrolled agents (enrollment order), filtered: a technician who
        does not see every case lists the agents of the cases they may read only (one
        query; :func:`server.access.agents_scope`)."""
        node = self.node
        elsewhere = (await node.presence.online(now_utc()) if node.presence is not None
                     else set())
        listed = await node.store.list_agents(customer=msg.customer,
                                              with_cases_of=access.agents_scope(caller))
        matching = [(a, online) for a in listed
                    if (online := a.agent_id in node.links or a.agent_id in elsewhere)
                    is msg.online or msg.online is None]
        page = matching[msg.offset:msg.offset + msg.limit]
        end = msg.offset + len(page)
        return m.AgentList(
            re=msg.id, next_offset=end if end < len(matching) else None,
            agents=[m.AgentInfo(agent_id=a.agent_id, customer=a.customer, kind=a.kind,
                                city=a.city, hostname=a.hostname, os=a.os, online=online,
                                last_seen=a.last_seen) for a, online in page])
