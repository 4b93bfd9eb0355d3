"""OpenSSH user certificates, made by asyncssh and checked by proto.certs with a given `now`."""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.certs import (
    MAX_CERTIFICATE_LENGTH,
    CertificateError,
    CertInfo,
    CertReason,
    ssh_fingerprint,
    verify_user_certificate,
)

NOW = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
VALID_AFTER = NOW - timedelta(hours=1)
VALID_BEFORE = NOW + timedelta(days=90)


def ssh_key(key: Ed25519PrivateKey) -> asyncssh.SSHKey:
    """The same key as asyncssh sees it."""
    return asyncssh.import_private_key(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))


def raw(key: asyncssh.SSHKey) -> bytes:
    pub = serialization.load_ssh_public_key(key.export_public_key("openssh"))
    assert isinstance(pub, Ed25519PublicKey)
    return pub.public_bytes_raw()


def make_cert(org: asyncssh.SSHKey, user: asyncssh.SSHKey, *, principals: list[str] | None = None,
              valid_after: datetime = VALID_AFTER, valid_before: datetime = VALID_BEFORE,
              **options: Any) -> str:
    cert = org.generate_user_certificate(
        user, "helloword-tech:alice", serial=42,
        principals=["alice"] if principals is None else principals,
        valid_after=int(valid_after.timestamp()), valid_before=int(valid_before.timestamp()),
        **options)
    return cert.export_certificate().decode()


def roles_cert(org: asyncssh.SSHKey, user: asyncssh.SSHKey, roles: bytes) -> str:
    """A certificate carrying ``roles`` as its roles extension (what ``ssh-keygen -O
    extension:roles@helloword.cn=...`` writes; asyncssh cannot write custom extensions)."""
    ca = serialization.load_ssh_private_key(org.export_private_key("openssh"), None)
    pub = serialization.load_ssh_public_key(user.export_public_key("openssh"))
    assert isinstance(ca, Ed25519PrivateKey) and isinstance(pub, Ed25519PublicKey)
    cert = (serialization.SSHCertificateBuilder().public_key(pub).serial(42)
            .type(serialization.SSHCertificateType.USER).key_id(b"helloword-tech:alice")
            .valid_principals([b"alice"]).valid_after(int(VALID_AFTER.timestamp()))
            .valid_before(int(VALID_BEFORE.timestamp()))
            .add_extension(b"roles@helloword.cn", roles).sign(ca))
    return cert.public_bytes().decode()


@pytest.fixture(scope="module")
def org() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture(scope="module")
def tech() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def cert_text(org: asyncssh.SSHKey, tech: Ed25519PrivateKey) -> str:
    return make_cert(org, ssh_key(tech))


def refused(text: str, org_pub: bytes, *, principal: str = "alice", now: datetime = NOW
            ) -> CertificateError:
    with pytest.raises(CertificateError) as info:
        verify_user_certificate(text, org_pub=org_pub, principal=principal, now=now)
    return info.value


def test_valid_certificate(org: asyncssh.SSHKey, tech: Ed25519PrivateKey, cert_text: str
                           ) -> None:
    info = verify_user_certificate(cert_text, org_pub=raw(org), principal="alice", now=NOW)
    assert isinstance(info, CertInfo)
    assert info.public_key.public_bytes_raw() == tech.public_key().public_bytes_raw()
    assert info.fingerprint == ssh_key(tech).get_fingerprint("sha256")
    assert info.serial == 42
    assert info.key_id == "helloword-tech:alice"
    assert info.valid_after == VALID_AFTER
    assert info.valid_before == VALID_BEFORE


def test_validity_bounds_are_half_open(org: asyncssh.SSHKey, cert_text: str) -> None:
    org_pub = raw(org)
    verify_user_certificate(cert_text, org_pub=org_pub, principal="alice", now=VALID_AFTER)
    last = VALID_BEFORE - timedelta(microseconds=1)
    verify_user_certificate(cert_text, org_pub=org_pub, principal="alice", now=last)
    assert refused(cert_text, org_pub, now=VALID_BEFORE).reason is CertReason.EXPIRED


def test_forever_certificate_and_comment(org: asyncssh.SSHKey, tech: Ed25519PrivateKey) -> None:
    """OpenSSH's "forever" (2**64 - 1) must not overflow; a trailing comment is fine."""
    cert = org.generate_user_certificate(ssh_key(tech), "k", principals=["alice"])
    text = cert.export_certificate().decode().strip() + " alice@laptop\n"
    info = verify_user_certificate(text, org_pub=raw(org), principal="alice", now=NOW)
    assert info.valid_before.year == 9999


@pytest.mark.parametrize("n", range(4))
def test_fingerprint_equals_asyncssh(n: int) -> None:
    key = Ed25519PrivateKey.generate()
    fp = ssh_fingerprint(key.public_key())
    assert fp == ssh_key(key).get_fingerprint("sha256")
    assert fp.startswith("SHA256:") and "=" not in fp


def test_fingerprint_is_sha256_of_wire_blob() -> None:
    """PROTOCOL.key: string "ssh-ed25519", string key (RFC 8709 section 4)."""
    import hashlib

    key = Ed25519PrivateKey.generate().public_key()
    blob = b"".join(struct.pack(">I", len(p)) + p
                    for p in (b"ssh-ed25519", key.public_bytes_raw()))
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert ssh_fingerprint(key) == "SHA256:" + digest


def _tamper_key_id(text: str) -> str:
    """Change one byte inside the signed body (the key id), keeping the structure intact."""
    kind, body = text.split()[:2]
    blob = base64.b64decode(body)
    i = blob.index(b"helloword-tech:alice")
    blob = blob[:i] + b"H" + blob[i + 1:]
    return f"{kind} {base64.b64encode(blob).decode()}"


def _cases(org: asyncssh.SSHKey, tech: Ed25519PrivateKey
           ) -> dict[CertReason, tuple[str, str, datetime]]:
    user = ssh_key(tech)
    good = make_cert(org, user)
    other_org = asyncssh.generate_private_key("ssh-ed25519")
    host = org.generate_host_certificate(user, "host", principals=["alice"],
                                         valid_after=int(VALID_AFTER.timestamp()),
                                         valid_before=int(VALID_BEFORE.timestamp()))
    ecdsa_user = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
    return {
        CertReason.MALFORMED: ("ssh-ed25519-cert-v01@openssh.com AAAAgarbage", "alice", NOW),
        CertReason.NOT_USER: (host.export_certificate().decode(), "alice", NOW),
        CertReason.UNTRUSTED: (make_cert(other_org, user), "alice", NOW),
        CertReason.BAD_SIGNATURE: (_tamper_key_id(good), "alice", NOW),
        CertReason.WRONG_PRINCIPAL: (good, "mallory", NOW),
        CertReason.NOT_YET_VALID: (good, "alice", VALID_AFTER - timedelta(seconds=1)),
        CertReason.EXPIRED: (good, "alice", VALID_BEFORE + timedelta(days=1)),
        CertReason.NOT_ED25519: (make_cert(org, ecdsa_user), "alice", NOW),
        CertReason.UNSUPPORTED_OPTION: (make_cert(org, user, force_command="true"), "alice",
                                        NOW),
        CertReason.BAD_ROLES: (roles_cert(org, user, b"remote,root"), "alice", NOW),
    }


def test_every_reason_is_produced_with_a_distinct_message(org: asyncssh.SSHKey,
                                                          tech: Ed25519PrivateKey) -> None:
    messages = {}
    for reason, (text, principal, now) in _cases(org, tech).items():
        exc = refused(text, raw(org), principal=principal, now=now)
        assert exc.reason is reason, (reason, exc.message)
        assert str(exc) == exc.message
        messages[reason] = exc.message
    assert set(messages) == set(CertReason)
    assert len(set(messages.values())) == len(messages)


@pytest.mark.parametrize("text", [
    "", "   ", "not a certificate", "ssh-ed25519 AAAA", "x" * (MAX_CERTIFICATE_LENGTH + 1),
    "ssh-dss-cert-v01@openssh.com AAAAB3NzaC1kc3MtY2VydC12MDFAb3BlbnNzaC5jb20=",
    "ssh-ed25519-cert-v01@openssh.com ====", "ssh-ed25519-cert-v01@openssh.com \u00e9\u00e9",
])
def test_garbage_is_malformed(org: asyncssh.SSHKey, text: str) -> None:
    assert refused(text, raw(org)).reason is CertReason.MALFORMED


def test_plain_public_key_is_not_a_user_certificate(org: asyncssh.SSHKey,
                                                    tech: Ed25519PrivateKey) -> None:
    text = ssh_key(tech).export_public_key("openssh").decode()
    assert refused(text, raw(org)).reason is CertReason.NOT_USER


@pytest.mark.parametrize("alg", ["ecdsa-sha2-nistp256", "ssh-rsa"])
def test_non_ed25519_issuers_are_untrusted(org: asyncssh.SSHKey, tech: Ed25519PrivateKey,
                                           alg: str) -> None:
    issuer = asyncssh.generate_private_key(alg)
    text = make_cert(issuer, ssh_key(tech))
    assert refused(text, raw(org)).reason is CertReason.UNTRUSTED


def test_empty_principal_list_is_refused(org: asyncssh.SSHKey, tech: Ed25519PrivateKey) -> None:
    """OpenSSH reads "no principals" as "anyone"; HelloWord does not."""
    text = make_cert(org, ssh_key(tech), principals=[])
    for name in ("alice", "", "*"):
        assert refused(text, raw(org), principal=name).reason is CertReason.WRONG_PRINCIPAL


def test_messages_carry_no_key_material(org: asyncssh.SSHKey, tech: Ed25519PrivateKey) -> None:
    user = ssh_key(tech)
    secrets = [base64.b64encode(raw(org)).decode()[:16], base64.b64encode(raw(user)).decode()[:16],
               make_cert(org, user).split()[1][:40]]
    for text, principal, now in _cases(org, tech).values():
        message = refused(text, raw(org), principal=principal, now=now).message
        assert not any(s in message for s in secrets)
        assert "hw-server" in message or "clock" in message or "copy" in message


def test_naive_now_is_a_caller_bug(org: asyncssh.SSHKey, cert_text: str) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_user_certificate(cert_text, org_pub=raw(org), principal="alice",
                                now=NOW.replace(tzinfo=None))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_flipped_byte_is_refused(org: asyncssh.SSHKey, cert_text: str,
                                     data: st.DataObject) -> None:
    """A changed byte anywhere in the certificate never verifies and never crashes."""
    kind, body = cert_text.split()[:2]
    blob = bytearray(base64.b64decode(body))
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    text = f"{kind} {base64.b64encode(bytes(blob)).decode()}"
    with pytest.raises(CertificateError):  # every byte is signed, or is the signature
        verify_user_certificate(text, org_pub=raw(org), principal="alice", now=NOW)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=300).map(
    lambda b: "ssh-ed25519-cert-v01@openssh.com " + base64.b64encode(b).decode()))
def test_random_text_never_crashes(org: asyncssh.SSHKey, text: str) -> None:
    with pytest.raises(CertificateError):
        verify_user_certificate(text, org_pub=raw(org), principal="alice", now=NOW)
