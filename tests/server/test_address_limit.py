"""Counting before authentication (server/admission.py): connections per address, the
enrollment limit per address, and the gate telling the count a handshake was welcomed. The
same limits against a real server process are in tests/e2e/test_preauth.py."""

from __future__ import annotations

import pytest

from server.admission import AddressLimit, EnrollLimit, HandshakeGate, address_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("address", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9%eth0", "2001:db8:1:2::/64"),  # one host owns the whole /64
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("not-an-address", "not-an-address"),
])
def test_address_key(address: str, key: str) -> None:
    assert address_key(address) == key


def test_unauthenticated_connections_are_capped_per_address() -> None:
    limit = AddressLimit(per_address=10, unauthenticated=2)
    assert limit.open("a", "192.0.2.1") and limit.open("b", "192.0.2.1")
    assert not limit.open("c", "192.0.2.1")  # a third one still in its handshake
    assert limit.open("d", "192.0.2.2")  # another address is not affected
    limit.authenticated("a")  # welcomed: its place before authentication is free
    assert limit.open("e", "192.0.2.1")
    assert limit.count("192.0.2.1") == (3, 2)
    limit.closed("b")
    limit.closed("b")  # twice is a no-op
    limit.closed("a")
    assert limit.count("192.0.2.1") == (1, 1)
    line = limit.report()
    assert line is not None and "refused 1 connections before TLS" in line
    assert "192.0.2.1 (1)" in line and limit.report() is None


def test_all_connections_of_an_address_are_capped() -> None:
    limit = AddressLimit(per_address=2, unauthenticated=2)
    for key in ("a", "b"):
        assert limit.open(key, "2001:db8::1")
        limit.authenticated(key)
    assert not limit.open("c", "2001:db8::2")  # the same /64
    with pytest.raises(ValueError):
        AddressLimit(per_address=1, unauthenticated=2)


def test_enrollment_attempts_that_fail_are_limited_per_address() -> None:
    clock = Clock()
    limit = EnrollLimit(failures=3, window=60.0, clock=clock)
    for _ in range(5):  # valid tokens never count
        assert limit.attempt("192.0.2.1") is None
        limit.succeeded("192.0.2.1")
    for _ in range(3):
        assert limit.attempt("192.0.2.1") is None
        limit.failed("192.0.2.1")
    clock.now += 20
    assert limit.attempt("192.0.2.1") == 40  # seconds until the oldest failure expires
    assert limit.attempt("192.0.2.9") is None  # another address
    line = limit.report()
    assert line is not None and "3 tokens not accepted" in line and "1 attempts refused" in line
    assert limit.report() is None
    clock.now += 41
    assert limit.attempt("192.0.2.1") is None


def test_concurrent_enrollment_attempts_are_charged_when_they_start() -> None:
    limit = EnrollLimit(failures=2, window=60.0, clock=Clock())
    assert limit.attempt("192.0.2.1") is None
    assert limit.attempt("192.0.2.1") is None
    assert limit.attempt("192.0.2.1") is not None  # both still in flight


def test_the_gate_reports_each_welcome() -> None:
    welcomed: list[object] = []
    gate = HandshakeGate(2, timeout=10.0, clock=Clock(), on_welcome=welcomed.append)
    assert gate.admit("a", "192.0.2.1") is None and gate.admit("b", "192.0.2.2") is None
    gate.done("a", welcomed=True)
    gate.done("b", welcomed=False)
    gate.done("a", welcomed=True)  # a second call is a no-op
    assert welcomed == ["a"]
