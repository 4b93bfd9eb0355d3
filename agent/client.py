"""The running agent: stays connected, answers requests, delivers results exactly once.

Results go to the durable outbox (``agent.db``) before they are sent, and leave it only on
the server's ``Ack``; after every reconnect the outbox is sent again. The server stores a
result once per ``Result.id``, so resending is safe (``docs/protocol.md#durable-outbox``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime, timedelta

import pluggy
from websockets.exceptions import ConnectionClosed

from plugins.api import ProbeContext
from proto import codec
from proto import messages as m
from proto.errors import CloseCode, ProtocolError

from .backoff import Backoff
from .connection import Link, close_text, dial
from .errors import Refused, Unreachable
from .home import AgentHome
from .localstore import LocalCase, LocalStore
from .runner import run_probes

log = logging.getLogger("hw.agent")

#: How long `hw-agent help` counts as consent to diagnostics on that case.
HELP_CONSENT = timedelta(hours=24)


def now_utc() -> datetime:
    return datetime.now(UTC)


class Agent:
    """One agent process: the reconnect loop around one live :class:`Link` at a time."""

    def __init__(self, home: AgentHome, pm: pluggy.PluginManager, *,
                 backoff: Backoff | None = None) -> None:
        self.home = home
        self.state = home.state()
        self.key = home.key()
        self.ctx = home.ssl_context()
        self.store = LocalStore(home.db_path)
        self.pm = pm
        self.backoff = backoff or Backoff()
        self.link: Link | None = None
        self.connected = asyncio.Event()
        self._work = asyncio.Semaphore(2)
        self._tasks: set[asyncio.Task[None]] = set()
        self._server_offset: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, serve, reconnect with jittered backoff, until ``stop`` is set.

        Raises:
            Refused: the server refused this agent for good (revoked, unknown).
        """
        while not stop.is_set():
            try:
                link = await dial(self.state.urls, self.ctx, agent_id=self.state.agent_id,
                                  key=self.key, mode=m.Mode.RUN)
            except Unreachable as exc:
                delay = self.backoff.next()
                log.warning("%s; retrying in %.1fs", exc, delay)
                await _wait(stop, delay)
                continue
            self.backoff.reset()
            log.info("connected to %s as %s", link.url, self.state.agent_id)
            self.store.log("connected", link.url, now=now_utc())
            await self._serve(link, stop)
            if not stop.is_set():
                delay = self.backoff.next()
                log.info("reconnecting in %.1fs", delay)
                await _wait(stop, delay)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.store.close()

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
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(msg, m.Ack):
            self.store.ack(msg.re)
        elif isinstance(msg, m.Error):
            log.warning("server reports %s: %s", msg.code.value, msg.message)
            if msg.re is not None and self.store.ack(msg.re):
                # A result the server refused for good is not resent forever.
                self.store.log("dropped", f"result {msg.re} refused by the server: "
                               f"{msg.message}", now=now_utc())

    async def _flush_outbox(self, link: Link) -> None:
        for _msg_id, frame in self.store.outbox():
            await link.send(codec.decode(frame))

    async def _handle(self, req: m.Request) -> None:
        """Check local consent, run the action, put the result in the outbox, send it."""
        result_id = "rs-" + secrets.token_hex(8)
        now = now_utc()
        case = self.store.get_case(req.case)
        if case is None or case.diag_until <= now:
            why = ("the customer has not asked for help on this case from this computer"
                   if case is None else "the customer's request for help on this case expired")
            self.store.log("refused", f"{req.tech} asked for {req.action.value} on {req.case}: "
                           f"{why}", now=now)
            result = m.Result(id=result_id, re=req.id, case=req.case, action=req.action,
                              ok=False, error_code=m.ErrorCode.REFUSED,
                              error=f"{why}; ask them to run `hw-agent help` (case {req.case})")
        else:
            self.store.log("diag", f"{req.tech} ran diagnostics on {req.case}", now=now)
            async with self._work:
                names = req.args.get("probes") or None
                ctx = ProbeContext(server_time=now_utc() + timedelta(
                    seconds=self._server_offset or 0.0), agent_version=SOFTWARE_VERSION,
                    args=req.args)
                reports = await run_probes(self.pm, context=ctx, names=names)
            result = m.Result(id=result_id, re=req.id, case=req.case, action=req.action,
                              ok=True, reports=reports)
        self.store.put_outbox(result.id, codec.encode(result), now=now_utc())
        link = self.link
        if link is None:
            log.info("result %s kept in the outbox until the server is back", result.id)
            return
        try:
            await link.send(result)
        except ConnectionClosed:
            log.info("result %s kept in the outbox until the server is back", result.id)


SOFTWARE_VERSION = "0.1.0"


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
    case = LocalCase(number=reply.case, opened_at=reply.opened_at, diag_until=now + HELP_CONSENT,
                     description=description)
    store = LocalStore(home.db_path)
    try:
        store.add_case(case)
        store.log("help", f"opened case {case.number}; diagnostics allowed until "
                  f"{case.diag_until.isoformat(timespec='seconds')}", now=now)
    finally:
        store.close()
    return case
