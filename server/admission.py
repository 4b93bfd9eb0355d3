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

Before any of that, :class:`AddressLimit` counts the connections of each network address
from the moment they are accepted, before TLS: beyond ``per_address`` connections, or
beyond ``unauthenticated`` connections that have not finished their handshake, a new one is
closed at once (one client cannot fill the descriptor table with connections that never
start TLS). :class:`EnrollLimit` refuses enrollment attempts from an address that sent too
many tokens the server did not accept. Both report one summary line per interval, never a
line per attempt. IPv6 addresses count per /64 (one host owns a whole /64).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable, Hashable

#: Bounds of the Retry-After the server gives (seconds).
RETRY_AFTER_MIN = 1
RETRY_AFTER_MAX = 60
#: Welcome rate assumed at least (agents per second; one core welcomes several hundred).
MIN_RATE = 100.0
#: Seconds of history the welcome rate is taken from (its best second).
RATE_WINDOW = 5
#: Enrollment attempts one address may make that did not succeed, per ENROLL_WINDOW_S.
ENROLL_FAILURES = 10
ENROLL_WINDOW_S = 60.0


def address_key(address: str) -> str:
    """What one client is counted by: the IPv4 address, or the /64 of an IPv6 address (an
    IPv4-mapped IPv6 address counts as its IPv4 address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


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
                 per_peer: int | None = None,
                 on_welcome: Callable[[Hashable], None] | None = None) -> None:
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
        #: called with the key of each welcomed handshake (the address limit counts it as
        #: authenticated from then on)
        self.on_welcome = on_welcome
        #: enrollment attempts per address (enrollment is an agent handshake too)
        self.enrollments = EnrollLimit(clock=clock)

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
            if self.on_welcome is not None:
                self.on_welcome(key)

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


class AddressLimit:
    """Open connections per client address, counted from accept (before TLS).

    :meth:`open` when a connection is accepted (``False``: close it at once), then
    :meth:`authenticated` once its handshake welcomed it, and :meth:`closed` when it is gone
    (a second call is a no-op). An address holds at most ``per_address`` connections and at
    most ``unauthenticated`` of them before their welcome: agents behind one NAT address
    keep their long-lived sessions, while a client that opens connections and never
    finishes a handshake holds only that many descriptors, each for the TLS and handshake
    timeouts at most.
    """

    def __init__(self, per_address: int, unauthenticated: int) -> None:
        if not 1 <= unauthenticated <= per_address:
            raise ValueError("the unauthenticated limit must be between 1 and the "
                             "per-address limit")
        self.per_address, self.unauthenticated = per_address, unauthenticated
        #: connection key -> (address key, authenticated)
        self._open: dict[Hashable, tuple[str, bool]] = {}
        self._total: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self.refused_total = 0
        self._reported = 0
        self._refused_by: dict[str, int] = {}

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def count(self, address: str) -> tuple[int, int]:
        """(open, not yet authenticated) connections of ``address``'s key."""
        key = address_key(address)
        return self._total.get(key, 0), self._pending.get(key, 0)

    def open(self, conn: Hashable, address: str) -> bool:
        """A connection from ``address`` was accepted: ``True`` to go on, ``False`` to
        close it now (over a limit; it is not counted)."""
        key = address_key(address)
        if (self._total.get(key, 0) >= self.per_address
                or self._pending.get(key, 0) >= self.unauthenticated):
            self.refused_total += 1
            self._refused_by[key] = self._refused_by.get(key, 0) + 1
            return False
        self._open[conn] = (key, False)
        self._total[key] = self._total.get(key, 0) + 1
        self._pending[key] = self._pending.get(key, 0) + 1
        return True

    def authenticated(self, conn: Hashable) -> None:
        """The connection's handshake welcomed it: it no longer counts as unauthenticated."""
        entry = self._open.get(conn)
        if entry is None or entry[1]:
            return
        self._open[conn] = (entry[0], True)
        _decrement(self._pending, entry[0])

    def closed(self, conn: Hashable) -> None:
        """The connection is gone."""
        entry = self._open.pop(conn, None)
        if entry is None:
            return
        _decrement(self._total, entry[0])
        if not entry[1]:
            _decrement(self._pending, entry[0])

    def report(self) -> str | None:
        """A line for the log when connections were refused since the last call."""
        refused, self._reported = self.refused_total - self._reported, self.refused_total
        if not refused:
            return None
        worst = sorted(self._refused_by.items(), key=lambda kv: -kv[1])[:3]
        self._refused_by.clear()
        return (f"refused {refused} connections before TLS since the last report: over "
                f"{self.per_address} open or {self.unauthenticated} unauthenticated "
                f"connections per address; most from "
                f"{', '.join(f'{a} ({n})' for a, n in worst)}; raise max_connections_per_"
                f"address / max_unauthenticated_per_address in config.toml if these are "
                f"legitimate clients behind one address")


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


class EnrollLimit:
    """Enrollment attempts per address: at most ``failures`` that did not succeed within
    ``window`` seconds; further attempts are refused before the store is read.

    Every attempt is charged when it starts (:meth:`attempt`) and given back when it
    succeeds (:meth:`succeeded`), so a burst of concurrent attempts cannot overrun the
    limit; a person enrolling many machines with valid tokens is never slowed.
    """

    def __init__(self, failures: int = ENROLL_FAILURES, window: float = ENROLL_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or window <= 0:
            raise ValueError("the enrollment limit needs failures >= 1 and a window > 0")
        self.failures, self.window, self._clock = failures, window, clock
        self._charged: dict[str, deque[float]] = {}
        self.refused = 0  # attempts refused by this limit since the last report
        self.bad = 0  # tokens the store did not accept since the last report
        self._addresses: set[str] = set()

    def attempt(self, address: str) -> int | None:
        """``None``: go ahead (charged; call :meth:`succeeded` if it works); else the
        seconds until this address may try again."""
        now = self._clock()
        key = address_key(address)
        charged = self._charged.setdefault(key, deque())
        while charged and now - charged[0] >= self.window:
            charged.popleft()
        if len(charged) >= self.failures:
            self.refused += 1
            self._addresses.add(key)
            return max(1, math.ceil(charged[0] + self.window - now))
        charged.append(now)
        return None

    def succeeded(self, address: str) -> None:
        """The attempt worked: it does not count against the address."""
        charged = self._charged.get(address_key(address))
        if charged:
            charged.pop()

    def failed(self, address: str) -> None:
        """The store did not accept the token (the charge stays); counted for the report."""
        self.bad += 1
        self._addresses.add(address_key(address))

    def report(self) -> str | None:
        """A summary line when attempts were refused since the last call, else None; also
        forgets addresses whose attempts are all older than the window."""
        now = self._clock()
        for key in [k for k, q in self._charged.items() if not q or now - q[-1] >= self.window]:
            del self._charged[key]
        if not self.bad and not self.refused:
            return None
        line = (f"enrollment: {self.bad} tokens not accepted (unknown, used or expired) and "
                f"{self.refused} attempts refused for sending too many of them (over "
                f"{self.failures} per {self.window:g} s) since the last report, from "
                f"{len(self._addresses)} address(es)")
        self.bad = self.refused = 0
        self._addresses.clear()
        return line
