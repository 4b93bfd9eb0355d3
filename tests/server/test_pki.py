"""Server home keys: CA pinning fingerprint, server certificate, technician certificates."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from server import pki
from server.errors import CertificateRefused

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("S")
    pki.make_ca(d, now=NOW)
    pki.make_server_cert(d, names=["127.0.0.1", "support.example"], now=NOW)
    pki.make_org_key(d)
    return d


def test_private_keys_are_owner_only(home: Path) -> None:
    for name in ("ca.key", "server.key", "org.key"):
        assert (home / name).stat().st_mode & 0o077 == 0, name


def test_server_certificate_names_and_chain(home: Path) -> None:
    cert = x509.load_pem_x509_certificate((home / "server.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["support.example"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(home / "server.crt", home / "server.key")  # key matches cert


def test_fingerprint_differs_between_homes(home: Path, tmp_path: Path) -> None:
    pki.make_ca(tmp_path, now=NOW)
    a = pki.ca_fingerprint((home / "ca.crt").read_bytes())
    b = pki.ca_fingerprint((tmp_path / "ca.crt").read_bytes())
    assert len(a) == 32 and a != b


def test_technician_certificate_verifies(home: Path, tmp_path: Path) -> None:
    issued = pki.issue_tech(home, name="alice", out=tmp_path, now=NOW)
    key, fp = pki.verify_tech_certificate((tmp_path / "tech.key-cert.pub").read_text(),
                                          org_pub=pki.org_public_raw(home), name="alice")
    assert fp == issued.key_fingerprint
    from cryptography.hazmat.primitives import serialization

    pub = serialization.load_ssh_public_key((tmp_path / "tech.key.pub").read_bytes())
    assert key.public_bytes_raw() == pub.public_bytes_raw()  # type: ignore[union-attr]
    assert (tmp_path / "tech.key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("case", ["wrong-name", "expired", "other-org", "garbage"])
def test_bad_technician_certificates_are_refused(home: Path, tmp_path: Path, case: str) -> None:
    org_pub = pki.org_public_raw(home)
    when = NOW - timedelta(days=200) if case == "expired" else NOW
    pki.issue_tech(home, name="alice", out=tmp_path, now=when)
    cert = (tmp_path / "tech.key-cert.pub").read_text()
    name = "mallory" if case == "wrong-name" else "alice"
    if case == "other-org":
        other = tmp_path / "other"
        other.mkdir()
        pki.make_org_key(other)
        org_pub = pki.org_public_raw(other)
    if case == "garbage":
        cert = "ssh-ed25519-cert-v01@openssh.com AAAAgarbage"
    with pytest.raises(CertificateRefused):
        pki.verify_tech_certificate(cert, org_pub=org_pub, name=name)
