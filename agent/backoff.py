"""Reconnect delays: exponential with full jitter, so thousands of agents spread out; a busy
server's Retry-After, with jitter, when it gives one."""

from __future__ import annotations

import random
from collections.abc import Callable

#: Seconds a connection must stay up before the backoff starts over.
STABLE_AFTER = 30.0


#: Growth of the window per failed attempt: gRPC's connection backoff multiplier. With 2,
#: the window after a few seconds of server restart was already 8-16 s, and the last agents
#: of a 10k-agent reconnect storm came back a minute after the server did.
FACTOR = 1.6


class Backoff:
    """``next()`` returns a delay drawn uniformly from [0, min(cap, minimum * factor**n)].

    Full jitter (AWS architecture blog, "Exponential Backoff and Jitter"): after a server
    restart the agents' reconnects are spread over the whole window, from the very first
    attempt, instead of arriving in lockstep. The caller resets it only after a connection
    that stayed up (see :data:`STABLE_AFTER`), so a server that accepts and drops at once
    still sees growing delays; the first retry after a long-lived connection drops comes
    within ``minimum``. A busy server paces the agents itself with Retry-After (:meth:`busy`).
    """

    def __init__(self, *, minimum: float = 1.0, cap: float = 60.0, factor: float = FACTOR,
                 rand: Callable[[], float] = random.random) -> None:
        if not 0 < minimum <= cap:
            raise ValueError("backoff needs 0 < minimum <= cap")
        if factor <= 1:
            raise ValueError("backoff needs a growth factor above 1")
        self.minimum, self.cap, self.factor, self._rand = minimum, cap, factor, rand
        self.attempt = 0

    def next(self) -> float:
        upper = min(self.cap, self.minimum * self.factor ** min(self.attempt, 64))
        self.attempt += 1
        return upper * self._rand()

    def reset(self) -> None:
        self.attempt = 0

    def busy(self, retry_after: float) -> float:
        """The delay after the server answered "busy, retry after ``retry_after`` s" (HTTP
        503 with Retry-After, see ``server/admission.py``): drawn uniformly from
        [retry_after / 2, retry_after * 3 / 2] (at most ``cap`` as the bound), so the
        refused agents come back spread over the window the server computed for them.

        The exponential window does not grow: the server is up and paces the agents itself.
        """
        bound = min(self.cap, max(self.minimum, retry_after))
        return bound * (0.5 + self._rand())


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from an HTTP ``Retry-After`` header (delay-seconds form; ``None`` when absent
    or not a number: the HTTP-date form is not used by our server)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 and seconds == seconds else None
