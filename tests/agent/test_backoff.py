"""Reconnect backoff: bounded, growing, jittered, resettable."""

from __future__ import annotations

import random

import pytest

from agent.backoff import Backoff


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    top = Backoff(minimum=1.0, cap=30.0, rand=lambda: 1.0)
    assert [top.next() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_delay_is_drawn_below_the_bound() -> None:
    half = Backoff(minimum=2.0, cap=30.0, rand=lambda: 0.5)
    assert [half.next() for _ in range(3)] == [1.0, 2.0, 4.0]


def test_first_reconnects_are_spread_not_in_lockstep() -> None:
    """After a server restart every agent is at attempt 0: their first delays must differ."""
    rng = random.Random(3)
    first = [Backoff(minimum=1.0, cap=60.0, rand=rng.random).next() for _ in range(1000)]
    assert min(first) < 0.1 and max(first) > 0.9
    assert len({round(d, 3) for d in first}) > 500


def test_reset_starts_over() -> None:
    b = Backoff(minimum=1.0, cap=60.0, rand=lambda: 1.0)
    for _ in range(5):
        b.next()
    b.reset()
    assert b.next() == 1.0


def test_many_agents_spread_out_instead_of_reconnecting_in_lockstep() -> None:
    """10k agents at their 6th attempt: delays cover the window, no spike of equal values."""
    rng = random.Random(7)
    delays = []
    for _ in range(10_000):
        b = Backoff(minimum=1.0, cap=60.0, rand=rng.random)
        for _ in range(5):
            b.next()
        delays.append(b.next())
    assert min(delays) >= 0.0 and max(delays) <= 32.0
    buckets = [0] * 32
    for d in delays:
        buckets[min(int(d), 31)] += 1
    assert max(buckets) < 3 * (len(delays) / 32), "delays must be spread over the window"


@pytest.mark.parametrize(("minimum", "cap"), [(0, 1), (-1, 1), (5, 1)])
def test_invalid_bounds_are_refused(minimum: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(minimum=minimum, cap=cap)
