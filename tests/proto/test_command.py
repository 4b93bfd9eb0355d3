"""Signed commands: real keys, real OpenSSH certificates, every refusal reason."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncssh
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.certs import ssh_fingerprint
from proto.command import (
    CLOCK_SKEW,
    COMMAND_CONTEXT,
    MAX_LIFETIME,
    Command,
    CommandRefused,
    RefusalReason,
    ReplayCache,
    SignedCommand,
    VerifiedCommand,
    sign_command,
    verify_command,
)
from proto.errors import CertificateError, CertReason

NOW = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
AGENT = "ag-0123456789abcdef0123"
CASE = "HW-20250314-0001"
NONCE = bytes(range(16))


def ssh_key(key: Ed25519PrivateKey) -> asyncssh.SSHKey:
    return asyncssh.import_private_key(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))


def raw(key: asyncssh.SSHKey) -> bytes:
    pub = serialization.load_ssh_public_key(key.export_public_key("openssh"))
    assert isinstance(pub, Ed25519PublicKey)
    return pub.public_bytes_raw()


def certify(org: asyncssh.SSHKey, key: Ed25519PrivateKey, name: str = "alice", *,
            valid_before: datetime = NOW + timedelta(days=90)) -> str:
    cert = org.generate_user_certificate(
        ssh_key(key), f"helloword-tech:{name}", principals=[name],
        valid_after=int((NOW - timedelta(days=1)).timestamp()),
        valid_before=int(valid_before.timestamp()))
    return cert.export_certificate().decode()


def command(**change: Any) -> Command:
    fields: dict[str, Any] = {
        "agent_id": AGENT, "case": CASE, "action": "diag", "tech": "alice", "nonce": NONCE,
        "issued_at": NOW, "expires_at": NOW + timedelta(minutes=5),
        "args": {"probes": ["disk", "memory"]},
    }
    fields.update(change)
    return Command(**fields)


@pytest.fixture(scope="module")
def org() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture(scope="module")
def org_pub(org: asyncssh.SSHKey) -> bytes:
    return raw(org)


@pytest.fixture(scope="module")
def alice() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def alice_cert(org: asyncssh.SSHKey, alice: Ed25519PrivateKey) -> str:
    return certify(org, alice)


Sign = Callable[..., SignedCommand]


@pytest.fixture(scope="module")
def sign(alice: Ed25519PrivateKey, alice_cert: str) -> Sign:
    def sign(**change: Any) -> SignedCommand:
        return sign_command(command(**change), certificate=alice_cert, key=alice)
    return sign


@pytest.fixture(scope="module")
def signed(sign: Sign) -> SignedCommand:
    return sign()


def refusal(signed: SignedCommand, org_pub: bytes, **kwargs: Any) -> CommandRefused:
    kwargs.setdefault("now", NOW)
    kwargs.setdefault("agent_id", AGENT)
    with pytest.raises(CommandRefused) as info:
        verify_command(signed, org_pub=org_pub, **kwargs)
    return info.value


# -- happy path -----------------------------------------------------------------------------


def test_signed_command_verifies(signed: SignedCommand, org_pub: bytes,
                                 alice: Ed25519PrivateKey) -> None:
    cache = ReplayCache()
    ok = verify_command(signed, org_pub=org_pub, now=NOW, agent_id=AGENT, case=CASE,
                        action="diag", replay=cache)
    assert isinstance(ok, VerifiedCommand)
    assert ok.command == command()
    assert ok.cert.public_key.public_bytes_raw() == alice.public_key().public_bytes_raw()
    assert ok.cert.fingerprint == ssh_key(alice).get_fingerprint("sha256")
    assert len(cache) == 1 and NONCE in cache


def test_signature_covers_context_and_exact_payload(signed: SignedCommand,
                                                    alice: Ed25519PrivateKey) -> None:
    assert signed.payload == msgspec.json.encode(command())
    alice.public_key().verify(signed.signature, b"helloword-command-v1\0" + signed.payload)
    assert COMMAND_CONTEXT == b"helloword-command-v1"


def test_signed_command_survives_the_wire(signed: SignedCommand, org_pub: bytes) -> None:
    wire = msgspec.json.encode(signed)
    back = msgspec.json.decode(wire, type=SignedCommand)
    assert back == signed
    verify_command(back, org_pub=org_pub, now=NOW, agent_id=AGENT)


def test_window_boundaries_are_accepted(sign: Sign, org_pub: bytes) -> None:
    """issued exactly CLOCK_SKEW ahead, lifetime exactly MAX_LIFETIME, one tick before expiry."""
    ahead = sign(issued_at=NOW + CLOCK_SKEW, expires_at=NOW + CLOCK_SKEW + MAX_LIFETIME)
    verify_command(ahead, org_pub=org_pub, now=NOW, agent_id=AGENT)
    last = NOW + timedelta(minutes=5) - timedelta(microseconds=1)
    verify_command(sign(), org_pub=org_pub, now=last, agent_id=AGENT)


def test_timestamps_in_any_offset(sign: Sign, org_pub: bytes) -> None:
    tz = datetime.now(UTC).astimezone().tzinfo
    local = sign(issued_at=NOW.astimezone(tz), expires_at=(NOW + MAX_LIFETIME).astimezone(tz))
    verify_command(local, org_pub=org_pub, now=NOW, agent_id=AGENT)


# -- every refusal ---------------------------------------------------------------------------


def _refusals(org: asyncssh.SSHKey, alice: Ed25519PrivateKey, alice_cert: str, sign: Sign
              ) -> dict[RefusalReason, tuple[SignedCommand, dict[str, Any]]]:
    good = sign()
    tampered = msgspec.json.encode(command(args={"probes": ["disk", "memory", "shell"]}))
    mallory_org = asyncssh.generate_private_key("ssh-ed25519")
    mallory = Ed25519PrivateKey.generate()
    expired_cert = certify(org, alice, valid_before=NOW - timedelta(hours=1))
    full = ReplayCache(max_entries=1)
    full.check_and_add(b"\xff" * 16, expires_at=NOW + timedelta(minutes=1), now=NOW)
    seen = ReplayCache()
    seen.check_and_add(NONCE, expires_at=NOW + timedelta(minutes=5), now=NOW)
    garbage = b'{"agent_id": "x"}'
    return {
        RefusalReason.MALFORMED: (SignedCommand(
            payload=garbage, certificate=alice_cert,
            signature=alice.sign(COMMAND_CONTEXT + b"\0" + garbage)), {}),
        RefusalReason.BAD_SIGNATURE: (msgspec.structs.replace(good, payload=tampered), {}),
        RefusalReason.UNTRUSTED_CERTIFICATE: (sign_command(
            command(), certificate=certify(mallory_org, mallory), key=mallory), {}),
        RefusalReason.CERTIFICATE_EXPIRED: (sign_command(
            command(), certificate=expired_cert, key=alice), {}),
        RefusalReason.WRONG_TECHNICIAN: (sign(tech="bob"), {}),
        RefusalReason.REVOKED: (good, {"revoked": {ssh_fingerprint(alice.public_key())}}),
        RefusalReason.EXPIRED: (good, {"now": NOW + timedelta(minutes=5)}),
        RefusalReason.NOT_YET_VALID: (sign(issued_at=NOW + CLOCK_SKEW + timedelta(seconds=1),
                                           expires_at=NOW + timedelta(minutes=5)), {}),
        RefusalReason.LIFETIME_TOO_LONG: (sign(
            expires_at=NOW + MAX_LIFETIME + timedelta(seconds=1)), {}),
        RefusalReason.WRONG_AGENT: (good, {"agent_id": "ag-someone-else"}),
        RefusalReason.WRONG_CASE: (good, {"case": "HW-20250314-0002"}),
        RefusalReason.WRONG_ACTION: (good, {"action": "shell"}),
        RefusalReason.REPLAYED: (good, {"replay": seen}),
        RefusalReason.BUSY: (good, {"replay": full}),
    }


def test_every_reason_is_produced_with_a_distinct_message(
        org: asyncssh.SSHKey, org_pub: bytes, alice: Ed25519PrivateKey, alice_cert: str,
        sign: Sign) -> None:
    messages: dict[RefusalReason, str] = {}
    for reason, (signed, kwargs) in _refusals(org, alice, alice_cert, sign).items():
        exc = refusal(signed, org_pub, **kwargs)
        assert exc.reason is reason, (reason, exc.message)
        assert str(exc) == exc.message
        messages[reason] = exc.message
    # wrong_audience is verify_fanout's own (tests/proto/test_fanout.py), wrong_role the
    # role check's after it (proto.gate.role_refusal, tests/proto/test_roles_matrix.py)
    own = {RefusalReason.WRONG_AUDIENCE, RefusalReason.WRONG_ROLE}
    assert set(messages) == set(RefusalReason) - own
    for reason in own:
        messages[reason] = CommandRefused(reason).message
    assert len(set(messages.values())) == len(messages)
    assert all(r.value == r.name.lower() for r in RefusalReason)


def test_default_messages_are_distinct_and_complete() -> None:
    messages = [CommandRefused(r).message for r in RefusalReason]
    assert len(set(messages)) == len(messages)
    assert all(m and m[0].islower() and "\n" not in m for m in messages)


def test_messages_carry_no_payload_or_key_bytes(
        org: asyncssh.SSHKey, org_pub: bytes, alice: Ed25519PrivateKey, alice_cert: str,
        sign: Sign) -> None:
    secret_bits = [base64.b64encode(NONCE).decode(), NONCE.hex(), AGENT, "probes",
                   base64.b64encode(org_pub).decode()[:12], alice_cert.split()[1][:24],
                   ssh_fingerprint(alice.public_key())]
    for signed, kwargs in _refusals(org, alice, alice_cert, sign).values():
        exc = refusal(signed, org_pub, **kwargs)
        assert not any(bit in exc.message for bit in secret_bits), exc.message


def test_certificate_refusals_keep_the_certificate_reason(sign: Sign, org_pub: bytes) -> None:
    exc = refusal(sign(tech="bob"), org_pub)
    assert isinstance(exc.__cause__, CertificateError)
    assert exc.__cause__.reason is CertReason.WRONG_PRINCIPAL


def test_payload_from_another_org_is_untrusted(org_pub: bytes) -> None:
    """Compromised server: it trusts an attacker org and relays its technician's commands."""
    attacker_org = asyncssh.generate_private_key("ssh-ed25519")
    attacker = Ed25519PrivateKey.generate()
    forged = sign_command(command(), certificate=certify(attacker_org, attacker),
                          key=attacker)
    assert refusal(forged, org_pub).reason is RefusalReason.UNTRUSTED_CERTIFICATE


def test_key_that_is_not_the_certified_one(org: asyncssh.SSHKey, alice_cert: str,
                                           org_pub: bytes) -> None:
    """A valid certificate pasted next to a signature by some other key."""
    other = Ed25519PrivateKey.generate()
    payload = msgspec.json.encode(command())
    forged = SignedCommand(payload=payload, certificate=alice_cert,
                           signature=other.sign(COMMAND_CONTEXT + b"\0" + payload))
    assert refusal(forged, org_pub).reason is RefusalReason.BAD_SIGNATURE


def test_signature_without_context_is_refused(alice: Ed25519PrivateKey, alice_cert: str,
                                              org_pub: bytes) -> None:
    payload = msgspec.json.encode(command())
    bare = SignedCommand(payload=payload, certificate=alice_cert, signature=alice.sign(payload))
    assert refusal(bare, org_pub).reason is RefusalReason.BAD_SIGNATURE


@pytest.mark.parametrize("payload", [
    b"", b"null", b"[]", b"\xff\xfe", b"{}",
    msgspec.json.encode({**msgspec.to_builtins(command()), "extra": 1}),
    msgspec.json.encode({**msgspec.to_builtins(command()), "issued_at": "2025-03-14T09:00:00"}),
    msgspec.json.encode({**msgspec.to_builtins(command()), "action": "Run Shell"}),
    msgspec.json.encode({**msgspec.to_builtins(command()), "action": "diag\n"}),
    msgspec.json.encode({**msgspec.to_builtins(command()), "nonce": "AAAA"}),
])
def test_undecodable_payload_is_malformed(payload: bytes, alice: Ed25519PrivateKey,
                                          alice_cert: str, org_pub: bytes) -> None:
    signed = SignedCommand(payload=payload, certificate=alice_cert,
                           signature=alice.sign(COMMAND_CONTEXT + b"\0" + payload))
    assert refusal(signed, org_pub).reason is RefusalReason.MALFORMED


def test_sign_command_refuses_an_invalid_command(alice: Ed25519PrivateKey,
                                                 alice_cert: str) -> None:
    with pytest.raises(ValueError, match="schema"):
        sign_command(command(action="Run Shell"), certificate=alice_cert, key=alice)


def test_naive_now_is_a_caller_bug(signed: SignedCommand, org_pub: bytes) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_command(signed, org_pub=org_pub, now=NOW.replace(tzinfo=None), agent_id=AGENT)


# -- replay cache ----------------------------------------------------------------------------


def test_same_nonce_twice_is_replayed(signed: SignedCommand, org_pub: bytes) -> None:
    cache = ReplayCache()
    verify_command(signed, org_pub=org_pub, now=NOW, agent_id=AGENT, replay=cache)
    later = NOW + timedelta(minutes=1)
    assert refusal(signed, org_pub, now=later, replay=cache).reason is RefusalReason.REPLAYED
    assert len(cache) == 1


@pytest.mark.parametrize("reason", [RefusalReason.EXPIRED, RefusalReason.BAD_SIGNATURE,
                                    RefusalReason.WRONG_AGENT, RefusalReason.WRONG_CASE,
                                    RefusalReason.REVOKED, RefusalReason.WRONG_TECHNICIAN])
def test_refused_command_does_not_burn_its_nonce(
        reason: RefusalReason, org: asyncssh.SSHKey, org_pub: bytes, alice: Ed25519PrivateKey,
        alice_cert: str, sign: Sign) -> None:
    cache = ReplayCache()
    signed, kwargs = _refusals(org, alice, alice_cert, sign)[reason]
    assert refusal(signed, org_pub, replay=cache, **kwargs).reason is reason
    assert len(cache) == 0
    verify_command(sign(), org_pub=org_pub, now=NOW, agent_id=AGENT, replay=cache)
    assert NONCE in cache


def test_expired_entries_are_pruned() -> None:
    cache = ReplayCache()
    cache.check_and_add(NONCE, expires_at=NOW + timedelta(minutes=5), now=NOW)
    cache.check_and_add(b"\x01" * 16, expires_at=NOW + timedelta(minutes=9), now=NOW)
    later = NOW + timedelta(minutes=5)
    cache.prune(later)
    assert len(cache) == 1 and NONCE not in cache
    cache.check_and_add(NONCE, expires_at=later + timedelta(minutes=1), now=later)
    assert len(cache) == 2


def test_pruning_happens_on_check(sign: Sign, org_pub: bytes) -> None:
    cache = ReplayCache()
    for i in range(5):
        cache.check_and_add(bytes([i]) * 16, expires_at=NOW + timedelta(minutes=i + 1), now=NOW)
    cache.check_and_add(b"\x09" * 16, expires_at=NOW + timedelta(minutes=9),
                        now=NOW + timedelta(minutes=3))
    assert len(cache) == 3  # nonces expiring at +4, +5 and the new one


def test_full_cache_is_busy_until_entries_expire(signed: SignedCommand, org_pub: bytes) -> None:
    cache = ReplayCache(max_entries=2)
    cache.check_and_add(b"\x01" * 16, expires_at=NOW + timedelta(minutes=1), now=NOW)
    cache.check_and_add(b"\x02" * 16, expires_at=NOW + timedelta(minutes=2), now=NOW)
    assert refusal(signed, org_pub, replay=cache).reason is RefusalReason.BUSY
    assert len(cache) == 2
    later = NOW + timedelta(minutes=1)
    verify_command(signed, org_pub=org_pub, now=later, agent_id=AGENT, replay=cache)
    assert len(cache) == 2 and NONCE in cache


def test_cache_refuses_to_keep_an_expired_nonce() -> None:
    cache = ReplayCache()
    with pytest.raises(CommandRefused) as info:
        cache.check_and_add(NONCE, expires_at=NOW, now=NOW)
    assert info.value.reason is RefusalReason.EXPIRED and len(cache) == 0


def test_cache_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReplayCache(max_entries=0)


# -- properties ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_flipped_byte_is_refused(signed: SignedCommand, org_pub: bytes,
                                     data: st.DataObject) -> None:
    """One changed byte of payload or signature never verifies and never crashes.

    A flip that still decodes to a command by the same technician is a bad signature; one
    that breaks the JSON is malformed; one inside the technician's name fails the certificate.
    """
    field = data.draw(st.sampled_from(["payload", "signature"]))
    blob = bytearray(getattr(signed, field))
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    tampered = msgspec.structs.replace(signed, **{field: bytes(blob)})
    with pytest.raises(CommandRefused) as info:
        verify_command(tampered, org_pub=org_pub, now=NOW, agent_id=AGENT, replay=ReplayCache())
    reason = info.value.reason
    if field == "signature":
        assert reason is RefusalReason.BAD_SIGNATURE
        return
    try:
        decoded = msgspec.json.decode(bytes(blob), type=Command)
    except (msgspec.DecodeError, UnicodeDecodeError):
        assert reason is RefusalReason.MALFORMED
        return
    expected = (RefusalReason.BAD_SIGNATURE if decoded.tech == "alice"
                else RefusalReason.WRONG_TECHNICIAN)
    assert reason is expected


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=512), signature=st.binary(min_size=64, max_size=64),
       certificate=st.text(max_size=200))
def test_random_envelopes_never_crash(payload: bytes, signature: bytes, certificate: str,
                                      org_pub: bytes) -> None:
    signed = SignedCommand(payload=payload, certificate=certificate, signature=signature)
    with pytest.raises(CommandRefused):
        verify_command(signed, org_pub=org_pub, now=NOW, agent_id=AGENT)


@pytest.mark.parametrize("payload", [
    b'{"agent_id":"a\xe1-x"}', b'{"args":{"x":' + b"[" * 5000 + b"]" * 5000 + b"}}",
    b" " * 70000,
])
def test_pathological_payloads_are_malformed(payload: bytes, alice: Ed25519PrivateKey,
                                             alice_cert: str, org_pub: bytes) -> None:
    """Invalid UTF-8 and deep nesting make msgspec raise non-DecodeErrors; oversize is cut."""
    signed = SignedCommand(payload=payload, certificate=alice_cert,
                           signature=alice.sign(COMMAND_CONTEXT + b"\0" + payload))
    assert refusal(signed, org_pub).reason is RefusalReason.MALFORMED
