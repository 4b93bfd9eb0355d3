"""Fan-out commands: one signature for many agents, still checked by each of them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncssh
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proto.certs import ssh_fingerprint
from proto.command import (
    COMMAND_CONTEXT,
    CommandRefused,
    FanoutCommand,
    RefusalReason,
    ReplayCache,
    SignedCommand,
    audience_matches,
    decode_fanout,
    sign_command,
    sign_fanout,
    verify_command,
    verify_fanout,
)
from tests.proto.test_command import AGENT, NONCE, NOW, certify, command, raw


def fanout(**change: Any) -> FanoutCommand:
    fields: dict[str, Any] = {"audience": "all", "action": "ping", "tech": "alice",
                              "nonce": NONCE, "issued_at": NOW,
                              "expires_at": NOW + timedelta(minutes=5)}
    fields.update(change)
    return FanoutCommand(**fields)


@pytest.fixture(scope="module")
def org() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture(scope="module")
def alice() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def cert(org: asyncssh.SSHKey, alice: Ed25519PrivateKey) -> str:
    return certify(org, alice)


def refused(signed: SignedCommand, org: asyncssh.SSHKey, **kw: Any) -> RefusalReason:
    kw.setdefault("now", NOW)
    kw.setdefault("customer", "Li Wei")
    with pytest.raises(CommandRefused) as info:
        verify_fanout(signed, org_pub=raw(org), **kw)
    assert "\n" not in info.value.message and info.value.message
    return info.value.reason


def test_every_agent_of_the_audience_accepts_the_same_signed_bytes(
        org: asyncssh.SSHKey, alice: Ed25519PrivateKey, cert: str) -> None:
    signed = sign_fanout(fanout(audience="customer:Li Wei"), certificate=cert, key=alice)
    for _agent in range(3):  # each agent has its own replay cache: the same nonce is fine
        ok = verify_fanout(signed, org_pub=raw(org), now=NOW, customer="Li Wei",
                           replay=ReplayCache())
        assert ok.command.audience == "customer:Li Wei" and ok.command.tech == "alice"
    assert refused(signed, org, customer="Zhang San") is RefusalReason.WRONG_AUDIENCE
    everyone = sign_fanout(fanout(), certificate=cert, key=alice)
    assert verify_fanout(everyone, org_pub=raw(org), now=NOW, customer="Zhang San")
    # the server checks without a customer: it picks the agents itself
    assert verify_fanout(signed, org_pub=raw(org), now=NOW, customer=None)


def test_audience_matches_only_the_exact_customer() -> None:
    assert audience_matches("all", "x")
    assert audience_matches("customer:Li Wei", "Li Wei")
    assert not audience_matches("customer:Li Wei", "Li Weiss")
    assert not audience_matches("customer:Li", "Li Wei")
    assert not audience_matches("customer:", "")


def test_replayed_expired_and_tampered_fanouts_are_refused(
        org: asyncssh.SSHKey, alice: Ed25519PrivateKey, cert: str) -> None:
    signed = sign_fanout(fanout(), certificate=cert, key=alice)
    cache = ReplayCache()
    verify_fanout(signed, org_pub=raw(org), now=NOW, customer="Li Wei", replay=cache)
    assert refused(signed, org, replay=cache) is RefusalReason.REPLAYED
    assert refused(signed, org, now=NOW + timedelta(minutes=6)) is RefusalReason.EXPIRED
    long = sign_fanout(fanout(expires_at=NOW + timedelta(hours=1)), certificate=cert,
                       key=alice)
    assert refused(long, org) is RefusalReason.LIFETIME_TOO_LONG
    other = msgspec.json.encode(fanout(audience="customer:Zhang San"))
    forged = SignedCommand(payload=other, certificate=cert, signature=signed.signature)
    assert refused(forged, org) is RefusalReason.BAD_SIGNATURE
    assert refused(signed, org, revoked={ssh_fingerprint(alice.public_key())}) is \
        RefusalReason.REVOKED
    mallory = Ed25519PrivateKey.generate()
    rogue = certify(asyncssh.generate_private_key("ssh-ed25519"), mallory)
    assert refused(sign_fanout(fanout(), certificate=rogue, key=mallory), org) is \
        RefusalReason.UNTRUSTED_CERTIFICATE
    bob = sign_fanout(fanout(tech="bob"), certificate=cert, key=alice)
    assert refused(bob, org) is RefusalReason.WRONG_TECHNICIAN


def test_a_fanout_is_never_a_one_agent_command_nor_the_reverse(
        org: asyncssh.SSHKey, alice: Ed25519PrivateKey, cert: str) -> None:
    ping = sign_fanout(fanout(), certificate=cert, key=alice)
    with pytest.raises(CommandRefused) as info:
        verify_command(ping, org_pub=raw(org), now=NOW, agent_id=AGENT)
    assert info.value.reason is RefusalReason.MALFORMED
    diag = sign_command(command(), certificate=cert, key=alice)
    assert refused(diag, org) is RefusalReason.MALFORMED
    # the fan-out payload signed in the one-agent context does not pass as a fan-out
    payload = msgspec.json.encode(fanout())
    wrong_context = SignedCommand(payload=payload, certificate=cert,
                                  signature=alice.sign(COMMAND_CONTEXT + b"\0" + payload))
    assert refused(wrong_context, org) is RefusalReason.BAD_SIGNATURE


@pytest.mark.parametrize("change", [{"action": "diag"}, {"audience": "customers:x"},
                                    {"audience": "everyone"}, {"audience": "all\n"}])
def test_only_ping_to_all_or_a_customer_can_be_signed(
        alice: Ed25519PrivateKey, cert: str, change: dict[str, Any]) -> None:
    bad = msgspec.structs.replace(fanout(), **change)
    with pytest.raises(ValueError):
        sign_fanout(bad, certificate=cert, key=alice)
    payload = msgspec.json.encode(bad)
    with pytest.raises(CommandRefused):
        decode_fanout(SignedCommand(payload=payload, certificate=cert,
                                    signature=alice.sign(b"x")))

