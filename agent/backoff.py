"""Reconnect delays: exponential with full jitter, so thousands of agents spread out."""

from __future__ import annotations

import random
from collections.abc import Callable

#: Seconds a connection must stay up before the backoff starts over.
STABLE_AFTER = 30.0


class Backoff:
    """``next()`` returns a delay drawn uniformly from [0, min(cap, minimum * 2**n)].

    Full jitter (AWS architecture blog, "Exponential Backoff and Jitter"): after a server
    restart the agents' reconnects are spread over the whole window, from the very first
    attempt, instead of arriving in lockstep. The caller resets it only after a connection
    that stayed up (see :data:`STABLE_AFTER`), so a server that accepts and drops at once
    still sees growing delays.
    """

    def __init__(self, *, minimum: float = 1.0, cap: float = 60.0,
                 rand: Callable[[], float] = random.random) -> None:
        if not 0 < minimum <= cap:
            raise ValueError("backoff needs 0 < minimum <= cap")
        self.minimum, self.cap, self._rand = minimum, cap, rand
        self.attempt = 0

    def next(self) -> float:
        upper = min(self.cap, self.minimum * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return upper * self._rand()

    def reset(self) -> None:
        self.attempt = 0
