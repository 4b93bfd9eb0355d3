"""Reconnect backoff: bounded, growing, jittered, resettable."""

from __future__ import annotations

import random

import pytest

from agent.backoff import Backoff, parse_retry_after


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    top = Backoff(minimum=1.0, cap=30.0, factor=2.0, rand=lambda: 1.0)
    assert [top.next() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_default_window_grows_by_1_6_and_reaches_the_cap_after_nine_failures() -> None:
    top = Backoff(minimum=1.0, cap=60.0, rand=lambda: 1.0)
    windows = [top.next() for _ in range(11)]
    assert windows[:4] == pytest.approx([1.0, 1.6, 2.56, 4.096])
    assert windows[8] < 60.0 and windows[9] == windows[10] == 60.0


def test_delay_is_drawn_below_the_bound() -> None:
    half = Backoff(minimum=2.0, cap=30.0, factor=2.0, rand=lambda: 0.5)
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
    window = 1.6 ** 5
    assert min(delays) >= 0.0 and max(delays) <= window
    buckets = [0] * 32
    for d in delays:
        buckets[min(int(d / window * 32), 31)] += 1
    assert max(buckets) < 3 * (len(delays) / 32), "delays must be spread over the window"


@pytest.mark.parametrize(("minimum", "cap", "factor"),
                         [(0, 1, 2), (-1, 1, 2), (5, 1, 2), (1, 60, 1), (1, 60, 0.5)])
def test_invalid_bounds_are_refused(minimum: float, cap: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(minimum=minimum, cap=cap, factor=factor)


def test_a_busy_server_s_retry_after_is_honoured_with_jitter_around_it() -> None:
    """HTTP 503 + Retry-After: come back spread over [R/2, 3R/2], not on the 1-2-4 ladder."""
    low = Backoff(minimum=1.0, cap=60.0, rand=lambda: 0.0)
    high = Backoff(minimum=1.0, cap=60.0, rand=lambda: 0.999)
    assert low.busy(20.0) == 10.0
    assert 29.9 < high.busy(20.0) < 30.0


def test_busy_does_not_grow_the_exponential_window() -> None:
    b = Backoff(minimum=1.0, cap=60.0, factor=2.0, rand=lambda: 1.0)
    b.next()
    b.next()
    for _ in range(10):
        b.busy(5.0)
    assert b.next() == 4.0


def test_busy_delay_stays_within_bounds() -> None:
    """A huge or zero Retry-After cannot make an agent wait longer than the cap, or spin."""
    b = Backoff(minimum=1.0, cap=60.0, rand=lambda: 0.999)
    assert b.busy(10_000.0) <= 1.5 * 60.0
    assert Backoff(minimum=1.0, cap=60.0, rand=lambda: 0.0).busy(0.0) == 0.5


def test_refused_agents_come_back_spread_over_the_window() -> None:
    rng = random.Random(11)
    delays = [Backoff(rand=rng.random).busy(30.0) for _ in range(10_000)]
    assert 15.0 <= min(delays) and max(delays) <= 45.0
    buckets = [0] * 30
    for d in delays:
        buckets[min(int(d - 15.0), 29)] += 1
    assert max(buckets) < 2 * (len(delays) / 30), "come back spread, not in a spike"


@pytest.mark.parametrize(("header", "seconds"), [
    ("5", 5.0), (" 12 ", 12.0), ("0", 0.0), ("2.5", 2.5), (None, None), ("", None),
    ("soon", None), ("-3", None), ("nan", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None)])
def test_retry_after_header_is_read_in_seconds(header: str | None, seconds: float | None
                                               ) -> None:
    assert parse_retry_after(header) == seconds
