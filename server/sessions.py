"""Technician connections and tunnels of this node by key, and the revocations that end them.

``hw-server tech revoke`` is another process: it writes the store while the nodes run and
tells none of them. Each node therefore

- polls a cheap marker, the number of revoked technician keys (the list only grows), every
  :data:`REVOCATION_POLL_S` seconds (:meth:`TechSessions.poll`), and
- checks it again before serving each technician request (:meth:`TechSessions.refusal`):
  a request that arrives after the revocation was written is refused and audited even
  when the poll has not run since. Concurrent checks share one read that started after
  they arrived.

When the marker changes the node re-reads the list and, for every key that is new on it,
cancels the requests in flight of each connection held with that key, closes the connection
(close code 4003, a reason that says what happened and what to do) and the agent's side of
its tunnel, audits ``tech.sessions_closed`` and hands the list on (``on_change``: the node
pushes it to its agents). The close frame goes out at once; a peer that does not answer the
closing handshake within :data:`CLOSE_GRACE_S` is cut. See ``docs/security.md``
("Revocation ends sessions") and ``bench/revoke.py`` for the time it takes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection

from proto import messages as m
from proto.errors import CloseCode

from .pki import now_utc
from .store import Store, StoreError

log = logging.getLogger("hw.server.sessions")

#: How often each node polls the store for new technician revocations (seconds).
REVOCATION_POLL_S = 0.25
#: A revoked technician's connection that has not finished its closing handshake after this
#: many seconds is cut (the close frame itself goes out at once).
CLOSE_GRACE_S = 0.5
#: The close reason a revoked technician sees (at most 123 bytes).
REVOKED_REASON = ("your technician key was revoked by an operator; ask an operator for a new "
                  "key (hw-server tech add NAME --replace)")
#: What the agent's end of a revoked technician's tunnel is told.
TUNNEL_REVOKED_REASON = "the technician's key was revoked; this tunnel is closed"

Audit = Callable[..., Awaitable[Any]]


@dataclass(eq=False)
class Held:
    """One authenticated technician connection of this node (and its tunnel, if it became
    one)."""

    tech: str
    key: str
    ws: ServerConnection
    #: the connection's requests in flight (cancelled on revocation)
    tasks: set[asyncio.Task[None]]
    #: the agent's connection while this one relays an SSH tunnel
    agent_ws: ServerConnection | None = None
    #: set when a revocation closed it
    revoked: bool = False


@dataclass
class _Read:
    started: float
    task: asyncio.Task[None]


@dataclass
class TechSessions:
    """The registry of this node's technician connections by key fingerprint, and the
    current list of revoked keys."""

    store: Store
    audit: Audit
    node_id: str
    #: called with the new list whenever it changes (the node pushes it to its agents)
    on_change: Callable[[list[str]], None] = lambda revoked: None
    #: revoked technician key fingerprints, sorted (what agents are sent)
    revoked: list[str] = field(default_factory=list)
    _revoked_set: frozenset[str] = frozenset()
    _count: int = -1
    _held: dict[str, set[Held]] = field(default_factory=dict)
    _read: _Read | None = None
    _closing: set[asyncio.Future[Any]] = field(default_factory=set)
    #: requests being checked by :meth:`refusal` (not cancelled: refused and audited)
    _checking: set[asyncio.Task[Any]] = field(default_factory=set)
    _failing: bool = False

    # -- the registry ----------------------------------------------------------------

    def hold(self, tech: str, key: str, ws: ServerConnection,
             tasks: set[asyncio.Task[None]]) -> Held:
        """Register an authenticated technician connection (then :meth:`release` it).

        A key already known to be revoked (the revocation landed during the handshake) is
        closed at once."""
        held = Held(tech, key, ws, tasks)
        self._held.setdefault(key, set()).add(held)
        if key in self._revoked_set:
            self._end([held])
        return held

    def release(self, held: Held) -> None:
        """The connection ended."""
        group = self._held.get(held.key)
        if group is not None:
            group.discard(held)
            if not group:
                del self._held[held.key]

    def find(self, ws: ServerConnection) -> Held | None:
        """The registration of the technician connection ``ws`` (``None``: not held)."""
        return next((h for group in self._held.values() for h in group if h.ws is ws), None)

    @contextmanager
    def tunnel(self, ws: ServerConnection, agent_ws: ServerConnection) -> Iterator[Held | None]:
        """While the technician connection ``ws`` relays a tunnel to ``agent_ws``: a
        revocation of its key closes both ends."""
        held = self.find(ws)
        if held is not None:
            held.agent_ws = agent_ws
            if held.revoked:  # revoked between the tunnel's check and now
                self._spawn(_close(agent_ws, CloseCode.NORMAL, TUNNEL_REVOKED_REASON))
        try:
            yield held
        finally:
            if held is not None:
                held.agent_ws = None

    @property
    def connections(self) -> int:
        return sum(len(group) for group in self._held.values())

    # -- learning of revocations -----------------------------------------------------

    async def load(self) -> None:
        """Read the revoked keys (before serving; nothing to close yet)."""
        count = await self.store.technician_revocation_count()
        self._set(await self.store.revoked_technician_fingerprints(), count)

    async def poll(self, every: float = REVOCATION_POLL_S) -> None:
        """Look for new revocations every ``every`` seconds, for ever."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh()
            except StoreError as exc:
                if not self._failing:  # one line per outage, not four a second
                    log.warning("cannot read technician revocations (retrying every %gs): "
                                "%s", every, exc)
                self._failing = True
                continue
            except Exception:  # never let the poll die: revocations would stop working
                if not self._failing:
                    log.exception("technician revocation poll failed (retrying every %gs)",
                                  every)
                self._failing = True
                continue
            if self._failing:
                log.info("technician revocations readable again")
                self._failing = False

    async def refresh(self) -> None:
        """Make sure a read that started after this call has seen the store.

        Raises:
            StoreError: the store cannot be read (the caller refuses what it checks).
        """
        asked = time.monotonic()
        while True:
            read = self._read
            if read is None:
                read = self._read = _Read(time.monotonic(), asyncio.create_task(self._reread()))
                read.task.add_done_callback(functools.partial(self._done, read))
                await asyncio.shield(read.task)
                return
            if read.started >= asked:  # a read that started after we asked: share it
                await asyncio.shield(read.task)
                return
            try:  # an older read is running: let it end, then start our own
                await asyncio.shield(read.task)
            except StoreError:
                pass

    def _done(self, read: _Read, _task: asyncio.Task[None]) -> None:
        if self._read is read:
            self._read = None
        if not read.task.cancelled():
            read.task.exception()  # retrieved by an awaiting caller or here, never "lost"

    async def refusal(self, tech: str, key: str, msg: m.AnyMessage) -> m.Error | None:
        """``None`` if the key is not revoked now; else audit the refusal and return the
        error to answer (the connection is being closed as well).

        Raises:
            StoreError: the revocations cannot be read (refuse the request)."""
        task = asyncio.current_task()
        if task is not None:  # a revocation found now refuses (and audits) this request
            self._checking.add(task)  # instead of cancelling it
        try:
            await self.refresh()
        except asyncio.CancelledError:  # its connection closed meanwhile (the revocation?)
            if key in self._revoked_set:
                self._audit_refusal(tech, key, msg)
            raise
        finally:
            self._checking.discard(task)
        if key not in self._revoked_set:
            return None
        self._audit_refusal(tech, key, msg)
        return m.Error(re=getattr(msg, "id", None), code=m.ErrorCode.REFUSED,
                       message=REVOKED_REASON)

    def _audit_refusal(self, tech: str, key: str, msg: m.AnyMessage) -> None:
        """Audit a refused request in its own task: the connection is closing, and its end
        cancels the request's task."""
        self._spawn(self.audit(
            event="tech.refused", actor="server", subject=tech, now=now_utc(),
            detail={"key": key, "request": type(msg).__struct_config__.tag,
                    "reason": "key revoked", "node": self.node_id}))

    def is_revoked(self, key: str) -> bool:
        """As of the last read (use :meth:`refusal` before serving a request)."""
        return key in self._revoked_set

    async def _reread(self) -> None:
        count = await self.store.technician_revocation_count()
        if count == self._count:
            return
        revoked = await self.store.revoked_technician_fingerprints()
        newly = set(revoked) - self._revoked_set
        self._set(revoked, len(revoked))
        ended = [h for key in newly for h in self._held.get(key, ())]
        self._end(ended)
        self.on_change(self.revoked)
        await self._audit_closed(ended)

    def _set(self, revoked: list[str], count: int) -> None:
        self.revoked = sorted(revoked)
        self._revoked_set = frozenset(revoked)
        self._count = count

    # -- ending sessions ---------------------------------------------------------------

    def _end(self, ended: list[Held]) -> None:
        """Cancel the requests of each connection and close it (and its tunnel's agent
        side) at once; never waits."""
        for held in ended:
            if held.revoked:
                continue
            held.revoked = True
            for task in list(held.tasks):
                if task not in self._checking:
                    task.cancel()
            self._spawn(_close(held.ws, CloseCode.AUTH_FAILED, REVOKED_REASON))
            if held.agent_ws is not None:
                self._spawn(_close(held.agent_ws, CloseCode.NORMAL, TUNNEL_REVOKED_REASON))
        if ended:
            techs = sorted({h.tech for h in ended})
            log.warning("technician key revoked: closing %d connection(s) of %s on this node "
                        "(%d tunnel(s))", len(ended), ", ".join(techs),
                        sum(h.agent_ws is not None for h in ended))

    async def _audit_closed(self, ended: list[Held]) -> None:
        by_tech: dict[tuple[str, str], list[Held]] = {}
        for held in ended:
            by_tech.setdefault((held.tech, held.key), []).append(held)
        for (tech, key), group in sorted(by_tech.items()):
            await self.audit(event="tech.sessions_closed", actor="server", subject=tech,
                             now=now_utc(), detail={
                                 "key": key, "node": self.node_id, "connections": len(group),
                                 "tunnels": sum(h.agent_ws is not None for h in group)})

    def _spawn(self, closing: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(closing)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def _close(ws: ServerConnection, code: CloseCode, reason: str) -> None:
    """Close ``ws`` with ``code``; cut it if the peer does not finish the closing
    handshake within :data:`CLOSE_GRACE_S`."""
    try:
        async with asyncio.timeout(CLOSE_GRACE_S):
            await ws.close(int(code), reason)
    except TimeoutError:
        ws.transport.abort()
    except Exception:  # already gone: nothing left to close
        ws.transport.abort()
