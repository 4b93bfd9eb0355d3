"""The running agent: stays connected, answers requests, delivers results exactly once.

Results go to the durable outbox (``agent.db``) before they are sent, and leave it only on
the server's ``Ack``; after every reconnect the outbox is sent again. The server stores a
result once per ``Result.id``, so resending is safe (``docs/protocol.md#durable-outbox``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pluggy
from websockets.exceptions import ConnectionClosed

from plugins.api import FixContext, FixOutcome, FixPlan, ProbeContext
from proto import codec
from proto import messages as m
from proto.command import (
    CommandRefused,
    ReplayCache,
    VerifiedCommand,
    refusal_message,
    verify_command,
    verify_fanout,
)
from proto.errors import CloseCode, ProtocolError
from proto.gate import Allowed, GatedAction, Refusal, decide, role_refusal
from proto.receipt import sign_receipt
from proto.timefmt import human_time

from .backoff import STABLE_AFTER, Backoff
from .connection import Link, close_text, dial
from .consent import (
    DEFAULT_MINUTES,
    ConsentStore,
    Grant,
    Policy,
    parse_duration,
    parse_scopes,
)
from .control import serve_control
from .errors import ConsentError, FixError, Refused, Unreachable
from .fixrunner import apply_fix, list_fixers, plan_fix, recover_fix
from .home import AgentHome
from .localstore import (
    FIX_APPLYING,
    FIX_DONE,
    FIX_INTERRUPTED,
    LocalCase,
    LocalStore,
    cannot_record,
)
from .pending import Answer, Ask, Kind, Pending
from .revocations import SignedRevocationStore
from .runner import list_probes, run_probes, sanitize_readings
from .terminal import Terminal
from .tunnel import MAX_SESSIONS, TunnelHost, Tunnels
from .visit import describe_offer, save_offer

log = logging.getLogger("hw.agent")

#: The refusal when the agent cannot write its records (a full or read-only disk): it
#: records every action before acting, so it acts on nothing until it can.
CANNOT_RECORD = (
    "cannot record: this computer's disk is full (or its agent data is read-only), so the "
    "agent cannot record the action as it must before acting; nothing was done. Ask the "
    "customer to free disk space on this computer (the agent's data is in {home}), then "
    "retry")


def now_utc() -> datetime:
    return datetime.now(UTC)


class Agent:
    """One agent process: the reconnect loop around one live :class:`Link` at a time."""

    def __init__(self, home: AgentHome, pm: pluggy.PluginManager, *,
                 backoff: Backoff | None = None, policy: Policy | None = None,
                 terminal: Terminal | None = None) -> None:
        """``terminal``: the customer's terminal, where consent requests and fix plans are
        also asked (``None``: no terminal; the control socket answers, or nobody)."""
        self.home = home
        self.state = home.state()
        self.key = home.key()
        self.org_pub = bytes.fromhex(self.state.org_pub)
        self.ctx = home.ssl_context()
        self.store = LocalStore(home.db_path)
        # One connection for agent.db: the local log and the grants commit together, and
        # the grants held in memory stay valid across the log's writes.
        self.consents = ConsentStore(home.db_path, agent_id=self.state.agent_id,
                                     connection=self.store.connection)
        self.policy = policy or Policy()
        self.terminal = terminal
        self.pm = pm
        self.backoff = backoff or Backoff()
        self.link: Link | None = None
        self.connected = asyncio.Event()
        self.replay = ReplayCache()
        started = now_utc()
        for nonce, expires_at in self.consents.seen_nonces(started):
            self.replay.check_and_add(nonce, expires_at=expires_at, now=started)
        #: the organisation-signed list (kept in the home) and the server's plain one
        self.signed_revocations = SignedRevocationStore(home.path, self.org_pub)
        self._plain_revoked: frozenset[str] = frozenset()
        self.revoked: frozenset[str] = self.signed_revocations.fingerprints
        self._work = asyncio.Semaphore(2)
        self._tasks: dict[asyncio.Task[None], str] = {}  # running request -> its case
        self._revoking: set[str] = set()
        self.pending = Pending(self.consents, self.policy, now_utc)
        self._questions: set[asyncio.Task[None]] = set()  # terminal prompts on the screen
        self._applying: set[asyncio.Task[Any]] = set()  # fixes past approval: never cut off
        self._fix_lock = asyncio.Lock()  # one fix at a time on this machine
        # request id -> a write that must commit with its result (a fix marked done)
        self._with_result: dict[str, Callable[[], None]] = {}
        self._server_offset: float | None = None
        self.tunnels = Tunnels(TunnelHost(
            host_key=self.key,
            gate=lambda case, tech, fingerprint: self.gate(
                m.Action.TUNNEL, case=case, tech=tech, fingerprint=fingerprint),
            key_revoked=lambda fingerprint: fingerprint in self.revoked,
            revocations_stale=self._revocations_stale,
            revoking=lambda case: case in self._revoking,
            dial=self._dial_tunnel,
            log=lambda event, detail: self.store.log(event, detail, now=now_utc()),
            say=self._say,
            deliver=lambda msg: self._deliver(msg.id, msg),
            recordings_dir=self.home.path / "recordings"))

    def gate(self, action: GatedAction, *, case: str, tech: str, fingerprint: str
             ) -> Allowed[Grant] | Refusal:
        """The consent gate (:func:`proto.gate.decide`) on the customer's grants, now."""
        return decide(action, case=case, tech=tech, fingerprint=fingerprint,
                      grants=self.consents.all(), now=now_utc())

    async def _dial_tunnel(self, req: m.Request) -> Link:
        # Several server nodes: dial the technician's node if it is one of ours.
        urls = [req.via] if req.via in self.state.urls else self.state.urls
        return await dial(urls, self.ctx, agent_id=self.state.agent_id, key=self.key,
                          mode=m.Mode.TUNNEL, tunnel=req.id)

    def _say(self, line: str) -> None:
        """A line for the customer: in the terminal if there is one, else in the log."""
        if self.terminal is not None:
            self.terminal.say(line)
        else:
            log.info("%s", line)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, serve, reconnect with jittered backoff, until ``stop`` is set.

        Raises:
            Refused: the server refused this agent for good (revoked, unknown).
        """
        await self.recover_fixes()
        control = await serve_control(self.home.path, self._control)
        try:
            await self._loop(stop)
        finally:
            if control is not None:
                control.close()
            for task in [*self._tasks, *self._questions]:
                task.cancel()
            if self._tasks or self._questions:
                await asyncio.gather(*self._tasks, *self._questions, return_exceptions=True)
            self.store.close()
            self.consents.close()

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                link = await dial(self.state.urls, self.ctx, agent_id=self.state.agent_id,
                                  key=self.key, mode=m.Mode.RUN)
            except Unreachable as exc:
                delay = (self.backoff.next() if exc.retry_after is None
                         else self.backoff.busy(exc.retry_after))
                log.warning("%s; retrying in %.1fs", exc, delay)
                await _wait(stop, delay)
                continue
            log.info("connected to %s as %s", link.url, self.state.agent_id)
            self.store.log("connected", link.url, now=now_utc())
            up_since = asyncio.get_running_loop().time()
            await self._serve(link, stop)
            if asyncio.get_running_loop().time() - up_since >= STABLE_AFTER:
                self.backoff.reset()
            if not stop.is_set():
                delay = self.backoff.next()
                log.info("reconnecting in %.1fs", delay)
                await _wait(stop, delay)

    async def _serve(self, link: Link, stop: asyncio.Event) -> None:
        self.link = link
        assert link.session.welcome is not None
        self._server_offset = (link.session.welcome.server_time - now_utc()).total_seconds()
        self.connected.set()
        stopper = asyncio.create_task(stop.wait())
        try:
            await self._flush_outbox(link)
            while True:
                receiver = asyncio.create_task(link.recv())
                done, _ = await asyncio.wait({receiver, stopper},
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    receiver.cancel()
                    await link.ws.send(link.session.send(m.Bye(reason="agent stopping")),
                                       text=True)
                    await link.ws.close()
                    return
                self._dispatch(link, receiver.result())
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code == CloseCode.AUTH_FAILED:
                raise Refused(close_text(exc)) from None
            if code == CloseCode.REPLACED:
                raise Refused("another hw-agent with this identity connected to the server "
                              "(is it running twice?); this one stops") from None
            log.warning("disconnected: %s", close_text(exc))
        except ProtocolError as exc:
            log.error("protocol error from server: %s", exc.reason)
            await link.ws.close(int(exc.close_code), exc.reason[:120])
        finally:
            stopper.cancel()
            self.link = None
            self.connected.clear()

    def _dispatch(self, link: Link, msg: m.AnyMessage) -> None:
        if isinstance(msg, m.Request):
            task = asyncio.create_task(self._handle(msg))
            self._tasks[task] = msg.case
            task.add_done_callback(lambda t: self._tasks.pop(t, None))
        elif isinstance(msg, m.Ping):
            pong = self._ping(msg)
            task = asyncio.create_task(self._answer(link, pong))
            self._tasks[task] = ""
            task.add_done_callback(lambda t: self._tasks.pop(t, None))
        elif isinstance(msg, m.Revocations):  # the server's word: it can only add
            self._plain_revoked = frozenset(msg.fingerprints)
            self.revoked = self._plain_revoked | self.signed_revocations.fingerprints
        elif isinstance(msg, m.SignedRevocations):  # the organisation's, checked
            self.signed_revocations.offer(msg)
            self.revoked = self._plain_revoked | self.signed_revocations.fingerprints
        elif isinstance(msg, m.Ack):
            try:
                self.store.ack(msg.re)
            except Exception as exc:
                if not cannot_record(exc):
                    raise
                log.warning("cannot remove %s from the outbox (%s); free disk space on this "
                            "computer", msg.re, exc)
        elif isinstance(msg, m.Error):
            log.warning("server reports %s: %s", msg.code.value, msg.message)
            if (msg.code is m.ErrorCode.REFUSED and msg.re is not None
                    and self.store.ack(msg.re)):
                # A result the server refused for good is not resent forever.
                self.store.log("dropped", f"result {msg.re} refused by the server: "
                               f"{msg.message}", now=now_utc())

    def _ping(self, msg: m.Ping) -> m.Pong:
        """A fan-out ping: check it like any command (signature, certificate, revocation,
        audience, validity, nonce) and say so. It reads nothing from this machine, so it
        needs no consent grant; it is written to the local log all the same."""
        now = now_utc()
        stale = self.signed_revocations.stale(now, self.policy.revocation_grace)
        if stale is not None:
            self.store.log("refused", f"fan-out {msg.id}: stale_revocations", now=now)
            return m.Pong(re=msg.id, ok=False, reason="stale_revocations",
                          error=stale.message[:4000])
        try:
            verified = verify_fanout(msg.command, org_pub=self.org_pub, now=now,
                                     customer=self.state.customer, revoked=self.revoked,
                                     replay=self.replay)
        except CommandRefused as exc:
            self.store.log("refused", f"fan-out {msg.id}: {exc.reason.value}", now=now)
            return m.Pong(re=msg.id, ok=False, reason=exc.reason.value,
                          error=self._with_clock(exc, msg.command, now, fanout=True))
        cmd = verified.command
        wrong_role = role_refusal(verified.cert.roles, "ping")
        if wrong_role is not None:
            self.store.log("refused", f"fan-out {msg.id}: {wrong_role.text}", now=now)
            return m.Pong(re=msg.id, ok=False, reason=wrong_role.reason, error=wrong_role.message)
        try:
            with self.store.batch():
                self.consents.remember_nonce(cmd.nonce, cmd.expires_at, now)
                self.store.log("ping", f"{cmd.tech} pinged {cmd.audience} (fan-out {msg.id})",
                               now=now)
        except Exception as exc:
            if not cannot_record(exc):
                raise
            log.warning("fan-out %s refused: the agent cannot record it (%s)", msg.id, exc)
            return m.Pong(re=msg.id, ok=False, reason="cannot_record",
                          error=self._cannot_record_text())
        return m.Pong(re=msg.id, ok=True)

    @staticmethod
    async def _answer(link: Link, msg: m.Pong) -> None:
        try:
            await link.send(msg)
        except ConnectionClosed:
            pass  # the server counts a lost answer as gone

    async def _flush_outbox(self, link: Link) -> None:
        for _msg_id, frame in self.store.outbox():
            await link.send(codec.decode(frame))

    async def _handle(self, req: m.Request) -> None:
        """Verify the signed command and the customer's consent, act, answer via the outbox."""
        try:
            try:
                result = await self._act(req)
            except asyncio.CancelledError:
                if req.case not in self._revoking:
                    raise  # the agent is stopping
                self.store.log("cancelled", f"{req.action.value} on {req.case} cancelled: "
                               "the customer revoked consent", now=now_utc())
                result = self._refusal(req, "consent revoked: the customer revoked consent "
                                       "for this case, so the running action was cancelled")
        except Exception as exc:
            if not cannot_record(exc):
                raise
            # A full disk: answer at once rather than leave the technician waiting.
            log.warning("refused %s on %s: cannot record it (%s)", req.action.value, req.case,
                        exc)
            result = self._refusal(req, self._cannot_record_text())
        await self._deliver(result.id, result, also=self._with_result.pop(req.id, None))

    def _with_clock(self, exc: CommandRefused, signed: m.SignedCommand | None, now: datetime,
                    *, fanout: bool = False) -> str:
        """The refusal's message, and for a refusal for time reasons which clock is off and
        by how much (:func:`proto.command.clock_advice`, from the offset at welcome)."""
        if signed is None:
            return exc.message
        offset = (None if self._server_offset is None
                  else timedelta(seconds=self._server_offset))
        return refusal_message(exc, signed, org_pub=self.org_pub, now=now,
                               server_offset=offset, fanout=fanout)

    def _revocations_stale(self) -> str | None:
        """Why the signed revocation list is too old to act on (an open tunnel then ends,
        as new commands are refused), or ``None`` (docs/security.md#revocation-lists)."""
        stale = self.signed_revocations.stale(now_utc(), self.policy.revocation_grace)
        return None if stale is None else stale.message

    def _cannot_record_text(self) -> str:
        return CANNOT_RECORD.format(home=self.home.path)

    def _refusal(self, req: m.Request, why: str) -> m.Result:
        return m.Result(id="rs-" + secrets.token_hex(8), re=req.id, case=req.case,
                        action=req.action, ok=False, error_code=m.ErrorCode.REFUSED,
                        error=why[:4000])

    async def _act(self, req: m.Request) -> m.Result:
        now = now_utc()
        stale = self.signed_revocations.stale(now, self.policy.revocation_grace)
        if stale is not None:  # docs/security.md#revocation-lists
            return self._refuse(req, stale.message)
        try:
            if req.command is None:
                raise ConsentError("unsigned: the request carries no technician signature")
            verified = verify_command(
                req.command, org_pub=self.org_pub, now=now, agent_id=self.state.agent_id,
                case=req.case, action=req.action.value, revoked=self.revoked,
                replay=self.replay)
        except CommandRefused as exc:
            return self._refuse(req, f"{exc.reason.value}: "
                                f"{self._with_clock(exc, req.command, now)}")
        except ConsentError as exc:
            return self._refuse(req, str(exc))
        cmd, fingerprint = verified.command, verified.cert.fingerprint
        wrong_role = role_refusal(verified.cert.roles, req.action.value, cmd.args)
        if wrong_role is not None:  # whatever the server let through (docs/security.md#roles)
            return self._refuse(req, wrong_role.text)
        if req.action is m.Action.CONSENT:
            self.consents.remember_nonce(cmd.nonce, cmd.expires_at, now)
            return await self._consent_request(req, verified)
        # One commit for the used nonce and what the gate decided, before anything acts.
        with self.store.batch():  # no await in here: agent.db is locked until it ends
            self.consents.remember_nonce(cmd.nonce, cmd.expires_at, now)
            decision = self.gate(req.action, case=req.case, tech=cmd.tech,
                                 fingerprint=fingerprint)
            if isinstance(decision, Refusal):
                return self._refuse(req, decision.text)
            if req.action is m.Action.DIAG:
                self.store.log("diag", f"{cmd.tech} ran diagnostics on {req.case} (grant "
                               f"{decision.grant.receipt_id})", now=now)
        grant = decision.grant
        if req.action is m.Action.TUNNEL:  # runs until the SSH session ends
            if self.tunnels.full:
                return self._refuse(req, (
                    f"busy: {MAX_SESSIONS} remote sessions are already open on this computer; "
                    "close one, then retry"))
            return await self.tunnels.serve(req, cmd.tech, fingerprint, decision.scopes)
        if req.action is m.Action.FIX:
            return await self._fix(req, cmd.tech, fingerprint, cmd.args, grant)
        if req.action is m.Action.BOOK_VISIT:
            return self._offer(req, cmd.tech, cmd.args)
        if req.action is m.Action.PLUGINS:
            plugins = [m.PluginInfo(kind="probe", name=n, version=v, summary=s[:4000])
                       for n, v, s in list_probes(self.pm)]
            plugins += [m.PluginInfo(kind="fixer", name=n, version=v, summary=s[:4000],
                                     addresses=list(a)[:64])
                        for n, v, s, a in list_fixers(self.pm)]
            return m.Result(id="rs-" + secrets.token_hex(8), re=req.id, case=req.case,
                            action=req.action, ok=True, plugins=plugins)
        probes = cmd.args.get("probes")
        async with self._work:
            ctx = ProbeContext(server_time=now_utc() + timedelta(
                seconds=self._server_offset or 0.0), args=cmd.args)
            reports = await run_probes(self.pm, context=ctx,
                                       names=probes if isinstance(probes, list) and probes
                                       else None)
        return m.Result(id="rs-" + secrets.token_hex(8), re=req.id, case=req.case,
                        action=req.action, ok=True, reports=reports)

    def _offer(self, req: m.Request, tech: str, args: dict[str, Any]) -> m.Result:
        """A technician's signed on-site offer: keep it and show it; the customer accepts
        (or not) with `hw-agent visit accept` (agent/visit.py)."""
        ticket = args.get("ticket")
        slots = args.get("slots")
        if (not isinstance(ticket, str) or not re.fullmatch(r"TK-[0-9]{8}-[0-9]{4,6}", ticket)
                or not isinstance(slots, list) or not 1 <= len(slots) <= 3
                or not all(isinstance(x, dict) and isinstance(x.get("total"), int)
                           and isinstance(x.get("start"), str) and isinstance(x.get("end"), str)
                           for x in slots)):
            return self._refuse(req, "malformed: an offer names a ticket and 1-3 slots with "
                                "start, end and total")
        try:
            for x in slots:
                datetime.fromisoformat(x["start"])
                datetime.fromisoformat(x["end"])
        except ValueError:
            return self._refuse(req, "malformed: a slot time is not an ISO date-time")
        data = {"ticket": ticket, "case": req.case, "tech": tech, "offer": args}
        save_offer(self.home.path, ticket=ticket, case=req.case, tech=tech, args=args,
                   received_at=now_utc())
        lines = describe_offer(data)
        self.store.log("offer", f"{tech} offered an on-site visit {ticket} on {req.case}: "
                       + "; ".join(line.strip() for line in lines[1:-1]), now=now_utc())
        if self.terminal is not None:
            self.terminal.say("\nHelloWord support: " + "\n".join(lines))
        log.info("on-site offer %s for %s received from %s", ticket, req.case, tech)
        return m.Result(id="rs-" + secrets.token_hex(8), re=req.id, case=req.case,
                        action=req.action, ok=True)

    def _refuse(self, req: m.Request, why: str) -> m.Result:
        tech = req.tech
        try:
            self.store.log("refused", f"{req.action.value} on {req.case} asked by {tech} (as "
                           f"the server says): {why}", now=now_utc())
        except Exception as exc:
            if not cannot_record(exc):
                raise
            log.warning("cannot write the refusal to the local log: %s", exc)
        log.warning("refused %s on %s: %s", req.action.value, req.case, why)
        return self._refusal(req, why)

    async def _consent_request(self, req: m.Request, verified: VerifiedCommand) -> m.Result:
        cmd, fingerprint = verified.command, verified.cert.fingerprint
        try:
            scopes = parse_scopes(list(cmd.args.get("scopes") or []))
            minutes = float(cmd.args.get("minutes", DEFAULT_MINUTES))
            if not 0 < minutes <= 7 * 24 * 60:
                raise ConsentError("the requested duration is not between 0 and 7 days")
            duration = timedelta(minutes=minutes)
            # Whether each fix needs the customer's approval is the customer's choice
            # (`consent grant --no-fix-approval`, or the policy file), never the technician's:
            # a request to skip approval is shown, and approval stays on.
            skip_asked = cmd.args.get("fix_approval") is False
        except (ConsentError, TypeError, ValueError, OverflowError) as exc:
            return self._refuse(req, f"malformed: {exc}")
        duration = self.policy.cap(duration)
        names = ", ".join(s.value for s in scopes)
        what = (f"technician {cmd.tech} ({fingerprint}) asks for {names} on case {req.case} "
                f"for {int(duration.total_seconds() // 60)} min"
                + (" (and asks that fixes need no approval: each fix will still ask you)"
                   if skip_asked and m.Scope.FIX in scopes else ""))
        self.store.log("asked", what, now=now_utc())
        grant: Grant | None
        if self.policy.preapproves(cmd.tech, scopes):
            grant = self.consents.grant(
                case=req.case, tech=cmd.tech, scopes=scopes, duration=duration, now=now_utc(),
                via="policy", policy=self.policy, tech_fingerprint=fingerprint,
                fix_needs_approval=self.policy.fix_approval)
        else:
            ask = self.pending.ask_consent(case=req.case, tech=cmd.tech, fingerprint=fingerprint,
                                           scopes=scopes, duration=duration, what=what,
                                           wait=self._answer_within(req))
            grant = (await self._ask(ask)).grant
        if grant is None:
            self.store.log("declined", what, now=now_utc())
            return self._refusal(req, "declined: the customer did not grant this request "
                                 "(declined, or no answer in time)")
        self.store.log("granted", self._describe(grant), now=now_utc())
        return m.Result(id="rs-" + secrets.token_hex(8), re=req.id, case=req.case,
                        action=req.action, ok=True,
                        receipt=sign_receipt(grant.as_wire(), self.key))

    async def _fix(self, req: m.Request, tech: str, fingerprint: str, args: dict[str, Any],
                   grant: Grant) -> m.Result:
        """Plan, ask the customer (unless the grant says no approval), apply, verify."""
        def result(report: m.FixReport, ok: bool) -> m.Result:
            return m.Result(id="rs-" + secrets.token_hex(8), re=req.id, case=req.case,
                            action=req.action, ok=ok, fix=report)

        fixer = str(args.get("fixer", ""))
        known = list_fixers(self.pm)
        if fixer not in {name for name, *_rest in known}:
            # A finding code names the fixer that addresses it, when exactly one does.
            fixing = [name for name, _v, _s, codes in known if fixer in codes]
            if len(fixing) == 1:
                fixer = fixing[0]
        fargs = args.get("args") or {}
        ctx = FixContext(args=fargs if isinstance(fargs, dict) else {},
                         workdir=self.home.path / "fixes", protected=(self.home.path,))
        try:
            plan = await plan_fix(self.pm, fixer, ctx)
        except FixError as exc:
            self.store.log("fix", f"{tech} asked for fix {fixer!r} on {req.case}: not "
                           f"possible: {exc}", now=now_utc())
            return result(m.FixReport(decision=m.FixDecision.NOT_POSSIBLE,
                                      outcome=str(exc)[:4000]), False)
        info = m.FixPlanInfo(fixer=fixer, summary=plan.summary[:4000],
                             reversible=plan.reversible,
                             changes=[c[:4000] for c in plan.changes[:500]],
                             summary_zh=plan.summary_zh[:4000],
                             needs_privileges=plan.needs_privileges[:4000])
        if plan.needs_privileges:
            self.store.log("fix", f"{tech}: fix {fixer} on {req.case} not possible: "
                           f"{plan.needs_privileges}", now=now_utc())
            return result(m.FixReport(decision=m.FixDecision.NOT_POSSIBLE, plan=info,
                                      outcome=plan.needs_privileges[:4000]), False)
        if args.get("dry_run"):
            self.store.log("fix-plan", f"{tech} looked at fix {fixer} on {req.case}: "
                           f"{plan.summary}", now=now_utc())
            return result(m.FixReport(decision=m.FixDecision.DRY_RUN, plan=info), True)
        decision = m.FixDecision.NOT_REQUIRED
        if grant.fix_needs_approval:
            if self.pending.fix_for(req.case) is not None:
                return result(m.FixReport(
                    decision=m.FixDecision.NOT_POSSIBLE, plan=info,
                    outcome="another fix on this case is waiting for the customer's decision; "
                            "ask again once they have answered"), False)
            if not await self._approve(req, tech, info):
                self.store.log("declined", f"fix {fixer} on {req.case} proposed by {tech}: "
                               f"{plan.summary}", now=now_utc())
                return result(m.FixReport(decision=m.FixDecision.DECLINED, plan=info), False)
            decision = m.FixDecision.APPROVED
            # The grant may have been revoked or have expired while the customer decided.
            if isinstance(self.gate(m.Action.FIX, case=req.case, tech=tech,
                                    fingerprint=fingerprint), Refusal):
                return result(m.FixReport(
                    decision=m.FixDecision.NOT_POSSIBLE, plan=info,
                    outcome="the grant for fixes ended before the fix could start"), False)
        # Recorded (committed) before the fixer starts: if the agent dies half-way, the next
        # start finds it and reports it as interrupted (recover_fixes). A full disk refuses.
        with self.store.batch():
            self.store.begin_fix(req.id, case=req.case, tech=tech, fixer=fixer,
                                 decision=decision.value, plan_info=msgspec.json.encode(info),
                                 plan=_plan_json(plan), now=now_utc())
            self.store.log("fix", f"{tech} applies fix {fixer} on {req.case} "
                           f"({decision.value}): {plan.summary}", now=now_utc())
        task = asyncio.current_task()
        assert task is not None
        self._applying.add(task)  # from here on a revocation lets the fix finish
        try:
            async with self._fix_lock:
                outcome, note = await apply_fix(self.pm, fixer, ctx, plan)
        finally:
            self._applying.discard(task)
        verified = outcome.ok and not note
        undo = None if outcome.undo is None else json.dumps(dict(outcome.undo), default=str)
        summary = (f"fix {fixer} on {req.case}: {outcome.summary}"
                   + ("; verified" if verified else f"; not verified: {note}"))

        def done() -> None:  # commits with the result in the outbox (see _handle)
            self.store.end_fix(req.id, state=FIX_DONE, undo=undo, now=now_utc())
            self.store.log("fix-done", summary, now=now_utc())

        self._with_result[req.id] = done
        return result(m.FixReport(
            decision=decision, plan=info, applied=True, ok=outcome.ok,
            outcome=outcome.summary[:4000], verified=verified, verify_note=note[:4000],
            details=sanitize_readings(dict(outcome.details))), outcome.ok)

    async def recover_fixes(self) -> int:
        """Report every fix a previous run of the agent was applying when it died.

        Each becomes a result for its request, in the outbox (sent once connected): not
        ok, applied, not verified, with what the fixer's journal says was done (for
        ``disk.cleanup``: the files moved, the partial manifest). Its undo data is kept, so
        ``hw-agent fixes undo`` can still roll it back. Returns how many were found.
        """
        found = self.store.fixes(FIX_APPLYING)
        for rec in found:
            ctx = FixContext(args={}, workdir=self.home.path / "fixes",
                             protected=(self.home.path,))
            try:
                plan = _plan_from_json(rec.plan)
                info: m.FixPlanInfo | None = msgspec.json.decode(rec.plan_info,
                                                                 type=m.FixPlanInfo)
            except (ValueError, TypeError, KeyError, msgspec.DecodeError):
                plan, info = None, None
            outcome = (await recover_fix(self.pm, rec.fixer, ctx, plan) if plan is not None
                       else FixOutcome(False, "The result is unknown: the fix's record is "
                                       "unreadable; check the computer by hand."))
            undo = (None if outcome.undo is None
                    else json.dumps(dict(outcome.undo), default=str))
            restore = (f" The customer can restore it with `hw-agent fixes undo {rec.request_id}`."
                       if undo is not None else "")
            text = ("Interrupted: the agent stopped (killed, or the computer shut down) while "
                    f"applying this fix; it was found when the agent restarted. "
                    f"{outcome.summary}{restore}")
            report = m.FixReport(
                decision=_decision(rec.decision), plan=info, applied=True, ok=False,
                outcome=text[:4000], verified=False,
                verify_note="Not verified: the fix was interrupted; run diagnostics again.",
                details=sanitize_readings({"interrupted": True, **dict(outcome.details)}))
            result = m.Result(id="rs-" + secrets.token_hex(8), re=rec.request_id,
                              case=rec.case, action=m.Action.FIX, ok=False, fix=report)
            now = now_utc()
            try:
                with self.store.batch():  # reported exactly once: outbox and mark together
                    self.store.put_outbox(result.id, codec.encode(result), now=now)
                    self.store.end_fix(rec.request_id, state=FIX_INTERRUPTED, undo=undo,
                                       now=now)
                    self.store.log("fix-interrupted", f"fix {rec.fixer} on {rec.case} by "
                                   f"{rec.tech} was interrupted: {outcome.summary}", now=now)
            except Exception as exc:
                if not cannot_record(exc):
                    raise
                log.warning("fix %s on %s was interrupted when the agent stopped, and it "
                            "cannot be reported yet (%s); free disk space on this computer "
                            "and restart the agent", rec.fixer, rec.case, exc)
                continue
            log.warning("fix %s on %s was interrupted when the agent stopped: %s; reported "
                        "to the server", rec.fixer, rec.case, outcome.summary)
        return len(found)

    async def _approve(self, req: m.Request, tech: str, plan: m.FixPlanInfo) -> bool:
        """The customer approves or declines a fix plan: terminal or control socket, first
        answer wins; no answer in time is a no."""
        what = (f"technician {tech} proposes on case {req.case}: {plan.summary}"
                f" ({'can be undone' if plan.reversible else 'cannot be undone'})")
        self.store.log("fix-asked", what, now=now_utc())
        ask = self.pending.ask_fix(case=req.case, tech=tech, plan=plan, what=what,
                                   wait=self._answer_within(req))
        return (await self._ask(ask)).yes

    def _answer_within(self, req: m.Request) -> float:
        """Seconds a customer has to answer: the policy's prompt timeout, and an answer
        must reach the technician before their request times out."""
        return max(1.0, min(self.policy.prompt_timeout_s, req.timeout - 2.0))

    async def _ask(self, ask: Ask) -> Answer:
        """Put ``ask`` to the customer on every channel; the first answer (or the deadline)."""
        wait = (ask.deadline - ask.asked_at).total_seconds()
        if self.terminal is not None:
            question = (self.terminal.ask_consent if ask.kind is Kind.CONSENT
                        else self.terminal.ask_fix)
            task = asyncio.create_task(question(self.pending, ask))
            self._questions.add(task)
            task.add_done_callback(self._questions.discard)
        elif ask.kind is Kind.CONSENT:
            log.info("consent request: %s; waiting %.0fs for `hw-agent consent grant --case %s "
                     "--tech %s --scopes ...`", ask.what, wait, ask.case, ask.tech)
        else:
            log.info("fix plan waiting %.0fs for `hw-agent consent approve --case %s`: %s",
                     wait, ask.case, ask.what)
        return await self.pending.wait(ask)

    @staticmethod
    def _describe(g: Grant) -> str:
        return (f"{g.tech} may {', '.join(s.value for s in g.scopes)} on {g.case} until "
                f"{human_time(g.expires_at)} ({g.via}, {g.receipt_id})")

    async def _deliver(self, msg_id: str, msg: m.Result | m.ConsentUpdate | m.Recording,
                       *, also: Callable[[], None] | None = None) -> None:
        """Outbox first, then send if connected; the Ack removes it from the outbox.

        ``also``: writes committed in the same transaction as the outbox entry. When the
        disk is full the message is sent without the outbox (at most once, then)."""
        try:
            with self.store.batch():
                self.store.put_outbox(msg_id, codec.encode(msg), now=now_utc())
                if also is not None:
                    also()
        except Exception as exc:
            if not cannot_record(exc):
                raise
            log.warning("%s cannot be kept in the outbox (%s); sending it once", msg_id, exc)
        link = self.link
        if link is None:
            log.info("%s kept in the outbox until the server is back", msg_id)
            return
        try:
            await link.send(msg)
        except ConnectionClosed:
            log.info("%s kept in the outbox until the server is back", msg_id)

    async def _send_receipt(self, grant: Grant, *, revoked: bool = False) -> None:
        update_id = grant.receipt_id + (".revoked" if revoked else "")
        await self._deliver(update_id, m.ConsentUpdate(
            id=update_id, receipt=sign_receipt(grant.as_wire(), self.key)))

    # -- the customer's control socket -------------------------------------------------

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        now = now_utc()
        if op == "grant":
            case, tech = str(request.get("case", "")), str(request.get("tech", ""))
            if not case or not tech:
                raise ConsentError("a grant needs --case and --tech")
            scopes = parse_scopes(str(request.get("scopes", "")))
            duration = parse_duration(str(request.get("for", f"{DEFAULT_MINUTES}m")))
            fix_approval = bool(request.get("fix_approval", True))
            ask = self.pending.consent_for(case, tech)
            grant = None if ask is None else self.pending.grant(
                ask, scopes=scopes, duration=duration, via="control",
                fix_needs_approval=fix_approval)
            if grant is None:  # no request waiting: a grant of its own, receipt on its own
                grant = self.consents.grant(
                    case=case, tech=tech, scopes=scopes, duration=duration, now=now,
                    via="control", policy=self.policy, fix_needs_approval=fix_approval)
                self.store.log("granted", self._describe(grant), now=now)
                await self._send_receipt(grant)
            # else: it answers the waiting request; the receipt travels in its result
            capped = self.policy.cap(duration) < duration
            return {"ok": True, "grant": _grant_json(grant), "answered": ask is not None,
                    "capped": capped, "asked_minutes": duration.total_seconds() / 60,
                    "max_minutes": self.policy.max_minutes}
        if op == "deny":
            case = str(request.get("case", ""))
            denied = 0
            for ask in self.pending.open():
                if ask.kind is Kind.CONSENT and (ask.case == case or not case):
                    denied += self.pending.decline(ask, via="control")
            return {"ok": True, "denied": denied}
        if op in ("approve", "decline"):
            case = str(request.get("case", ""))
            fix = self.pending.fix_for(case)
            if fix is None or not self.pending.decide(fix, approve=op == "approve",
                                                      via="control"):
                raise ConsentError(f"no fix is waiting for your approval on case {case!r}")
            assert fix.plan is not None
            return {"ok": True, "fix": fix.plan.fixer, "approved": op == "approve"}
        if op == "status":
            asks = self.pending.open()
            return {"ok": True, "grants": [_grant_json(g, now) for g in self.consents.all()],
                    "pending": [_ask_json(a) for a in asks if a.kind is Kind.CONSENT],
                    "approvals": [_ask_json(a) for a in asks if a.kind is Kind.FIX],
                    "sessions": [{"id": k, **v} for k, v in self.tunnels.sessions.items()],
                    "connected": self.link is not None}
        if op == "revoke":
            only = str(request["case"]) if request.get("case") else None
            revoked = self.consents.revoke(case=only, now=now)
            cases = {g.case for g in revoked} if only is None else {only}
            self._revoking |= cases
            try:
                running = [t for t, c in self._tasks.items() if c in cases]
                # A fix already being applied finishes (stopping it half-way could leave the
                # machine worse) and reports what it really did; everything else stops now.
                finishing = [t for t in running if t in self._applying]
                for task in running:
                    if task not in finishing:
                        task.cancel()
                if running:
                    await asyncio.wait(running)
            finally:
                self._revoking -= cases
            for g in revoked:
                self.store.log("revoked", self._describe(g), now=now)
                await self._send_receipt(g, revoked=True)
            return {"ok": True, "revoked": [_grant_json(g, now) for g in revoked],
                    "cancelled": len(running) - len(finishing), "finished": len(finishing)}
        raise ConsentError(f"unknown control operation {op!r}")


def _plan_json(plan: FixPlan) -> str:
    """A fixer's plan as recorded in ``agent.db`` (its ``data`` is JSON-safe by contract)."""
    return json.dumps({"fixer": plan.fixer, "summary": plan.summary,
                       "summary_zh": plan.summary_zh, "changes": list(plan.changes),
                       "reversible": plan.reversible, "needs_privileges": plan.needs_privileges,
                       "data": dict(plan.data)}, default=str)


def _plan_from_json(text: str) -> FixPlan:
    """The plan :func:`_plan_json` recorded. Raises ValueError, TypeError or KeyError when
    damaged."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("not a plan")
    return FixPlan(fixer=str(raw["fixer"]), summary=str(raw["summary"]),
                   summary_zh=str(raw.get("summary_zh", "")),
                   changes=[str(c) for c in raw.get("changes", [])],
                   reversible=bool(raw.get("reversible")),
                   needs_privileges=str(raw.get("needs_privileges", "")),
                   data=dict(raw.get("data") or {}))


def _decision(value: str) -> m.FixDecision:
    try:
        return m.FixDecision(value)
    except ValueError:
        return m.FixDecision.APPROVED


def _grant_json(g: Grant, now: datetime | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "receipt_id": g.receipt_id, "case": g.case, "tech": g.tech,
        "tech_fingerprint": g.tech_fingerprint, "scopes": [s.value for s in g.scopes],
        "fix_needs_approval": g.fix_needs_approval, "granted_at": g.granted_at.isoformat(),
        "expires_at": g.expires_at.isoformat(), "via": g.via,
        "revoked_at": g.revoked_at.isoformat() if g.revoked_at else None}
    if now is not None:
        out["active"] = g.active(now)
    return out


def _ask_json(a: Ask) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": a.id, "kind": a.kind.value, "case": a.case, "tech": a.tech, "what": a.what,
        "asked_at": a.asked_at.isoformat(), "deadline": a.deadline.isoformat()}
    if a.kind is Kind.CONSENT:
        out |= {"tech_fingerprint": a.fingerprint, "scopes": [s.value for s in a.scopes],
                "minutes": int(a.duration.total_seconds() // 60)}
    elif a.plan is not None:
        out |= {"fixer": a.plan.fixer, "summary": a.plan.summary,
                "reversible": a.plan.reversible, "changes": a.plan.changes}
    return out


async def _wait(stop: asyncio.Event, delay: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        pass


async def open_case(home: AgentHome, description: str) -> LocalCase:
    """``hw-agent help``: open a case on the server and record local consent to diagnostics."""
    state = home.state()
    link = await dial(state.urls, home.ssl_context(), agent_id=state.agent_id, key=home.key(),
                      mode=m.Mode.CALL)
    try:
        request_id = "oc-" + secrets.token_hex(8)
        await link.send(m.OpenCase(id=request_id, description=description))
        while True:
            reply = await link.recv()
            if isinstance(reply, m.CaseOpened) and reply.re == request_id:
                break
            if isinstance(reply, m.Error):
                raise Unreachable(f"the server refused to open a case: {reply.message}")
        await link.ws.send(link.session.send(m.Bye(reason="done")), text=True)
    except ConnectionClosed as exc:
        raise Unreachable(close_text(exc)) from None
    finally:
        await link.ws.close()
    now = now_utc()
    case = LocalCase(number=reply.case, opened_at=reply.opened_at, description=description)
    store = LocalStore(home.db_path)
    try:
        store.add_case(case)
        store.log("help", f"opened case {case.number}: {description[:200]}", now=now)
    finally:
        store.close()
    return case
