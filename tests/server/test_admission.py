"""Agent handshake admission (server/admission.py): at most N at once, a Retry-After for
the rest that spreads them over the time the server needs."""

from __future__ import annotations

import pytest

from server.admission import RETRY_AFTER_MAX, RETRY_AFTER_MIN, HandshakeGate


class Clock:
    """A hand-moved clock, so the gate's arithmetic is checked without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_admits_up_to_the_limit_then_refuses_with_a_retry_after() -> None:
    gate = HandshakeGate(2, timeout=10.0, clock=Clock())
    assert gate.admit("a", "10.0.0.1") is None and gate.admit("b", "10.0.0.2") is None
    wait = gate.admit("c", "10.0.0.3")
    assert wait is not None and RETRY_AFTER_MIN <= wait <= RETRY_AFTER_MAX
    assert gate.in_progress == 2 and gate.refused_total == 1


def test_a_finished_handshake_frees_its_slot() -> None:
    gate = HandshakeGate(1, timeout=10.0, clock=Clock())
    assert gate.admit("a") is None
    assert gate.admit("b") is not None
    gate.done("a", welcomed=True)
    assert gate.admit("b") is None
    gate.done("b", welcomed=False)
    gate.done("b", welcomed=False)  # reporting twice is harmless
    assert gate.in_progress == 0


def test_a_handshake_that_never_reports_stops_counting_after_the_timeout() -> None:
    clock = Clock()
    gate = HandshakeGate(1, timeout=10.0, clock=clock)
    assert gate.admit("lost") is None  # its connection died before the handler ran
    clock.now += 5
    assert gate.admit("b") is not None
    clock.now += 6
    assert gate.admit("b") is None


def test_retry_after_spreads_the_waiting_agents_over_the_time_the_server_needs() -> None:
    """100 welcomed per second and 3000 refused: the 3000 need 30 s, so come back in 30
    (reached by doubling, one step a second, so that one odd second cannot jump to 60)."""
    clock = Clock()
    gate = HandshakeGate(100, timeout=10.0, clock=clock, per_peer=100)
    for second in range(6):
        clock.now = 1000.0 + second
        for i in range(100):
            key = (second, i)
            assert gate.admit(key) is None
            gate.done(key, welcomed=True)
    for i in range(100):
        gate.admit(("busy", i))  # every slot taken
    waits = [gate.admit(("refused", i)) for i in range(3000)]
    assert waits[0] == RETRY_AFTER_MIN  # nothing refused before: come back soon
    steps = []
    for second in range(6, 11):
        clock.now = 1000.0 + second
        steps.append(gate.retry_after())
    assert steps == [2, 4, 8, 16, 30]


def test_a_stalled_second_does_not_make_the_agents_wait_longer() -> None:
    """The rate is the best recent second: a second with no welcome (a stall) is ignored."""
    clock = Clock()
    gate = HandshakeGate(1000, timeout=10.0, clock=clock)
    for second, welcomed in enumerate([500, 500, 0, 0, 500]):
        clock.now = 1000.0 + second
        for i in range(welcomed):
            gate.admit((second, i))
            gate.done((second, i), welcomed=True)
    gate.limit = 0  # everything is refused from now on
    clock.now = 1005.0
    for i in range(1000):
        gate.admit(("refused", i))
    clock.now = 1006.0
    assert gate.retry_after() == 2  # 1000 waiting / 500 a second


def test_retry_after_is_bounded() -> None:
    clock = Clock()
    gate = HandshakeGate(1, timeout=1000.0, clock=clock)
    gate.admit("a")
    for i in range(100_000):
        gate.admit(i)
    waits = []
    for _ in range(8):
        clock.now += 1
        waits.append(gate.retry_after())
    assert waits == [2, 4, 8, 16, 32, 60, 60, 60] and RETRY_AFTER_MAX == 60


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        HandshakeGate(0, timeout=10.0)


def test_one_address_holds_at_most_its_share_so_it_cannot_lock_agents_out() -> None:
    """A client that opens connections and sends nothing fills only its half of the places;
    agents from other addresses still get in, and the places come back when it closes."""
    gate = HandshakeGate(4, timeout=10.0, clock=Clock())
    assert [gate.admit(("idle", i), "203.0.113.9") for i in range(2)] == [None, None]
    assert gate.admit(("idle", 2), "203.0.113.9") is not None  # its share is full
    assert gate.admit("agent-1", "198.51.100.1") is None
    assert gate.admit("agent-2", "198.51.100.2") is None
    assert gate.admit("agent-3", "198.51.100.3") is not None  # now every place is taken
    gate.done(("idle", 0), welcomed=False)  # its connection closed
    assert gate.admit("agent-3", "198.51.100.3") is None
    assert gate.in_progress == 4


def test_the_share_of_one_address_must_fit_the_limit() -> None:
    with pytest.raises(ValueError, match="per_peer"):
        HandshakeGate(4, timeout=10.0, per_peer=5)
    assert HandshakeGate(1, timeout=10.0).per_peer == 1
