"""proto.certs caches verified certificate chains: parsing and the organisation's signature
are checked once per certificate, the principal, validity period and (in proto.command)
revocation on every call."""

from __future__ import annotations

from datetime import timedelta

import asyncssh
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proto import certs
from proto.certs import verify_user_certificate
from proto.command import (
    Command,
    CommandRefused,
    RefusalReason,
    SignedCommand,
    sign_command,
    verify_command,
)
from proto.errors import CertReason
from tests.proto.test_certs import NOW, VALID_BEFORE, make_cert, raw, refused, ssh_key


@pytest.fixture
def chain_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts full chain verifications (a cache miss), starting from an empty cache."""
    monkeypatch.setattr(certs, "_verified", type(certs._verified)())
    calls: list[str] = []
    real = certs._verify_chain

    def counting(text: str, **kw: object) -> certs._Chain:
        calls.append(text)
        return real(text, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(certs, "_verify_chain", counting)
    return calls


@pytest.fixture(scope="module")
def org() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture(scope="module")
def tech() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_certificate_chain_is_verified_once(org: asyncssh.SSHKey, tech: Ed25519PrivateKey,
                                               chain_checks: list[str]) -> None:
    text = make_cert(org, ssh_key(tech))
    first = verify_user_certificate(text, org_pub=raw(org), principal="alice", now=NOW)
    again = verify_user_certificate(text, org_pub=raw(org), principal="alice",
                                    now=NOW + timedelta(minutes=5))
    assert again == first and len(chain_checks) == 1


def test_a_cached_certificate_still_expires_and_names_its_principals(
        org: asyncssh.SSHKey, tech: Ed25519PrivateKey, chain_checks: list[str]) -> None:
    text = make_cert(org, ssh_key(tech))
    verify_user_certificate(text, org_pub=raw(org), principal="alice", now=NOW)
    assert refused(text, raw(org), now=VALID_BEFORE).reason is CertReason.EXPIRED
    assert refused(text, raw(org), now=NOW - timedelta(days=1)).reason is \
        CertReason.NOT_YET_VALID
    assert refused(text, raw(org), principal="bob").reason is CertReason.WRONG_PRINCIPAL
    assert len(chain_checks) == 1  # all answered from the cache


def test_another_organisation_key_is_not_answered_from_the_cache(
        org: asyncssh.SSHKey, tech: Ed25519PrivateKey, chain_checks: list[str]) -> None:
    text = make_cert(org, ssh_key(tech))
    verify_user_certificate(text, org_pub=raw(org), principal="alice", now=NOW)
    other = raw(asyncssh.generate_private_key("ssh-ed25519"))
    assert refused(text, other).reason is CertReason.UNTRUSTED


def test_a_refused_certificate_is_not_cached(org: asyncssh.SSHKey, tech: Ed25519PrivateKey,
                                             chain_checks: list[str]) -> None:
    text = make_cert(org, ssh_key(tech))
    assert refused(text, raw(org), principal="bob").reason is CertReason.WRONG_PRINCIPAL
    verify_user_certificate(text, org_pub=raw(org), principal="alice", now=NOW)
    assert len(chain_checks) == 2 and len(certs._verified) == 1


def test_the_cache_is_bounded(org: asyncssh.SSHKey, chain_checks: list[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(certs, "CACHE_SIZE", 2)
    texts = [make_cert(org, ssh_key(Ed25519PrivateKey.generate())) for _ in range(3)]
    for text in texts:
        verify_user_certificate(text, org_pub=raw(org), principal="alice", now=NOW)
    assert len(certs._verified) == 2
    verify_user_certificate(texts[0], org_pub=raw(org), principal="alice", now=NOW)
    assert len(chain_checks) == 4  # the oldest was forgotten and checked again


def test_a_revoked_key_is_refused_although_its_chain_is_cached(
        org: asyncssh.SSHKey, tech: Ed25519PrivateKey, chain_checks: list[str]) -> None:
    text = make_cert(org, ssh_key(tech))

    def signed() -> SignedCommand:
        cmd = Command(agent_id="ag-1", case="HW-20250314-0001", action="diag", tech="alice",
                      nonce=b"\x01" * 16, issued_at=NOW, expires_at=NOW + timedelta(minutes=5))
        return sign_command(cmd, certificate=text, key=tech)
    ok = verify_command(signed(), org_pub=raw(org), now=NOW, agent_id="ag-1")
    with pytest.raises(CommandRefused) as info:
        verify_command(signed(), org_pub=raw(org), now=NOW, agent_id="ag-1",
                       revoked={ok.cert.fingerprint})
    assert info.value.reason is RefusalReason.REVOKED and len(chain_checks) == 1
