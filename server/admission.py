"""Admission control for agent handshakes: refuse the excess at once during a reconnect storm.

When thousands of agents reconnect together (a server restart), accepting every handshake
at once makes each one slower until they all run into the handshake timeout, and the agents
back off further and further (congestion collapse). The gate admits at most ``limit``
handshakes at a time; the server answers the rest at once with ``503`` and a
``Retry-After`` that spreads them over the time the server needs for them:

    retry_after = agents refused during the last retry_after seconds / agents welcomed per second

Each waiting agent is refused about once per ``retry_after`` (it comes back after
``retry_after`` with jitter, see :mod:`agent.backoff`), so the numerator counts the agents
waiting and the quotient is how long the server needs to welcome them all. Agents that
come back spread over that window find a free slot instead of another refusal.

The welcome rate is the best second of the last few, not their average: a second in which
the server stalled (a garbage collection, a burst of TLS handshakes) says little about
what it can do, and an average that included it told a 10k-agent storm to wait 55 s for a
server that then welcomed 500 agents a second. For the same reason the value at most
doubles from one second to the next.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable

#: Bounds of the Retry-After the server gives (seconds).
RETRY_AFTER_MIN = 1
RETRY_AFTER_MAX = 60
#: Welcome rate assumed at least (agents per second; one core welcomes several hundred).
MIN_RATE = 100.0
#: Seconds of history the welcome rate is taken from (its best second).
RATE_WINDOW = 5


class _PerSecond:
    """Events counted per whole second over the last ``span`` seconds (a ring)."""

    def __init__(self, span: int = RETRY_AFTER_MAX + 2) -> None:
        self._span = span
        self._count = [0] * span
        self._second = [-1] * span

    def add(self, now: float) -> None:
        s = int(now)
        i = s % self._span
        if self._second[i] != s:
            self._second[i], self._count[i] = s, 0
        self._count[i] += 1

    def best(self, now: float, seconds: int) -> int:
        """The most events in one of the ``seconds`` whole seconds before the current one."""
        s = int(now)
        return max((self._count[t % self._span]
                    for t in range(s - min(seconds, self._span - 1), s)
                    if self._second[t % self._span] == t), default=0)

    def last(self, now: float, seconds: int) -> int:
        """Events in the ``seconds`` whole seconds before the current one."""
        s = int(now)
        total = 0
        for t in range(s - min(seconds, self._span - 1), s):
            if self._second[t % self._span] == t:
                total += self._count[t % self._span]
        return total


class HandshakeGate:
    """At most ``limit`` agent handshakes in progress; a Retry-After for the others.

    ``admit`` when a handshake starts, ``done`` when it ends (welcomed or not, or its
    connection closed). A handshake that never reports stops counting after ``timeout``
    seconds, the handshake timeout.

    One network address holds at most ``per_peer`` of the places (default half): a client
    that opens connections and sends nothing can hold only that share, never lock every
    agent out; agents behind one NAT address are paced, not refused for good.
    """

    def __init__(self, limit: int, timeout: float,
                 clock: Callable[[], float] = time.monotonic, *,
                 per_peer: int | None = None) -> None:
        if limit < 1:
            raise ValueError("the handshake limit must be at least 1")
        self.limit, self.timeout, self._clock = limit, timeout, clock
        self.per_peer = max(1, limit // 2) if per_peer is None else per_peer
        if not 1 <= self.per_peer <= limit:
            raise ValueError("per_peer must be between 1 and the handshake limit")
        #: key -> (start, peer); insertion order is start order
        self._open: dict[Hashable, tuple[float, str]] = {}
        self._per_peer: dict[str, int] = {}
        self._welcomed = _PerSecond()
        self._refused = _PerSecond()
        self._retry_after = RETRY_AFTER_MIN
        self._computed_at = -1
        self.refused_total = 0
        self._reported = 0  # refused_total at the last report()

    @property
    def in_progress(self) -> int:
        return len(self._open)

    def admit(self, key: Hashable, peer: str = "") -> int | None:
        """``None``: go ahead (then call :meth:`done`); else the seconds to tell the agent
        to wait before retrying. ``peer``: the client's network address."""
        now = self._clock()
        if len(self._open) >= self.limit or self._per_peer.get(peer, 0) >= self.per_peer:
            self._expire(now)
        if len(self._open) < self.limit and self._per_peer.get(peer, 0) < self.per_peer:
            self._open[key] = (now, peer)
            self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
            return None
        self._refused.add(now)
        self.refused_total += 1
        return self.retry_after(now)

    def done(self, key: Hashable, *, welcomed: bool) -> None:
        """The handshake ``key`` ended (a second call is a no-op)."""
        entry = self._open.pop(key, None)
        if entry is None:
            return
        self._release(entry[1])
        if welcomed:
            self._welcomed.add(self._clock())

    def _release(self, peer: str) -> None:
        left = self._per_peer[peer] - 1
        if left:
            self._per_peer[peer] = left
        else:
            del self._per_peer[peer]

    def retry_after(self, now: float | None = None) -> int:
        """Seconds a refused agent should wait (recomputed at most once a second)."""
        now = self._clock() if now is None else now
        if int(now) != self._computed_at:
            self._computed_at = int(now)
            rate = max(MIN_RATE, self._welcomed.best(now, RATE_WINDOW))
            waiting = self._refused.last(now, self._retry_after)
            self._retry_after = max(RETRY_AFTER_MIN, min(
                RETRY_AFTER_MAX, 2 * self._retry_after, math.ceil(waiting / rate)))
        return self._retry_after

    def report(self) -> str | None:
        """A line for the log when agents were refused since the last call, else None."""
        refused, self._reported = self.refused_total - self._reported, self.refused_total
        if not refused:
            return None
        now = self._clock()
        return (f"agents are connecting faster than this server can take them: refused "
                f"{refused} with 503 since the last report, telling them to retry in "
                f"{self.retry_after(now)} s; {len(self._open)} handshakes in progress, "
                f"{self._welcomed.last(now, 1)} agents welcomed in the last second")

    def _expire(self, now: float) -> None:
        while self._open:
            key = next(iter(self._open))
            started, peer = self._open[key]
            if now - started < self.timeout:
                return
            del self._open[key]
            self._release(peer)
