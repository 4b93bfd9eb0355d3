"""Keys and certificates of a server home: TLS CA, server certificate, organisation key.

The TLS side uses ``cryptography`` (an ECDSA P-256 CA and a server certificate whose SANs
come from the listen address and names). The organisation key is Ed25519 in OpenSSH
format and certifies technicians with OpenSSH user certificates (``cryptography``'s
builder, so the certificate can carry the roles extension), a form stock ``ssh``
understands. See ``docs/security.md``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proto.certs import verify_user_certificate
from proto.errors import CertificateError
from proto.roles import LEGACY_ROLES, ROLES_EXTENSION, Role, format_roles

from .errors import CertificateRefused

if TYPE_CHECKING:  # asyncssh (~20 MiB) is imported where keys are made, not by hw-server run
    import asyncssh


def ca_fingerprint(cert_pem: bytes) -> bytes:
    """SHA-256 over the DER form of a PEM certificate (what tokens pin)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by the owner only, from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(0o600)  # if the file existed with wider rights


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HelloWord Remote Support"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(home: Path, *, now: datetime, years: int = 10) -> None:
    """Create ``ca.key`` and ``ca.crt`` (self-signed, path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("HelloWord support CA"))
        .issuer_name(_name("HelloWord support CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(home / "ca.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (home / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_server_cert(home: Path, *, names: list[str], now: datetime, days: int = 825) -> None:
    """Issue ``server.key``/``server.crt`` from the home's CA for ``names`` (hosts or IPs)."""
    ca_key = serialization.load_pem_private_key((home / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate((home / "ca.crt").read_bytes())
    sans: list[x509.GeneralName] = []
    for n in dict.fromkeys(names):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(home / "server.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (home / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                                      + ca_cert.public_bytes(serialization.Encoding.PEM))


def make_org_key(home: Path) -> None:
    """Create the Ed25519 organisation key ``org.key`` (OpenSSH) and ``org.pub``."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519", comment="helloword-org")
    _write_private(home / "org.key", key.export_private_key("openssh"))
    (home / "org.pub").write_bytes(key.export_public_key("openssh"))


def org_public_raw(home: Path) -> bytes:
    """The raw 32 bytes of the organisation public key (what tokens carry)."""
    pub = serialization.load_ssh_public_key((home / "org.pub").read_bytes())
    if not isinstance(pub, Ed25519PublicKey):
        raise CertificateRefused("only Ed25519 keys are accepted")
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ssh_public_raw(key: asyncssh.SSHKey) -> bytes:
    """Raw Ed25519 public bytes of an asyncssh key; refuses other key types."""
    pub = serialization.load_ssh_public_key(key.export_public_key("openssh"))
    if not isinstance(pub, Ed25519PublicKey):
        raise CertificateRefused("only Ed25519 keys are accepted")
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class IssuedTech:
    name: str
    key_fingerprint: str
    valid_before: datetime
    roles: frozenset[Role] = LEGACY_ROLES


#: The OpenSSH extensions every technician certificate carries (``ssh-keygen``'s defaults;
#: stock ``ssh`` through a tunnel needs ``permit-pty``).
_PERMITS = (b"permit-X11-forwarding", b"permit-agent-forwarding", b"permit-port-forwarding",
            b"permit-pty", b"permit-user-rc")


def issue_tech(home: Path, *, name: str, out: Path, now: datetime, days: int = 90,
               roles: frozenset[Role] = LEGACY_ROLES) -> IssuedTech:
    """Make a technician key and an OpenSSH user certificate signed by the org key.

    Writes ``tech.key`` (private, 0600), ``tech.key.pub`` and ``tech.key-cert.pub`` into
    ``out``; the certificate's principal is ``name``, it is valid for ``days`` and carries
    ``roles`` as the :data:`proto.roles.ROLES_EXTENSION` extension (what ``ssh-keygen -O
    extension:roles@helloword.cn=...`` writes; ``docs/security.md#roles``).

    Raises:
        proto.roles.RolesError: ``roles`` is empty.
    """
    import asyncssh

    value = format_roles(roles).encode("ascii")
    org = serialization.load_ssh_private_key((home / "org.key").read_bytes(), None)
    if not isinstance(org, Ed25519PrivateKey):
        raise CertificateRefused("the organisation key is not Ed25519; only Ed25519 keys sign "
                                 "technician certificates")
    key = asyncssh.generate_private_key("ssh-ed25519", comment=f"helloword-tech-{name}")
    public = serialization.load_ssh_public_key(key.export_public_key("openssh"))
    assert isinstance(public, Ed25519PublicKey)
    valid_before = now + timedelta(days=days)
    builder = (serialization.SSHCertificateBuilder()
               .public_key(public)
               .serial(0)
               .type(serialization.SSHCertificateType.USER)
               .key_id(f"helloword-tech:{name}".encode())
               .valid_principals([name.encode()])
               .valid_after(int((now - timedelta(minutes=5)).timestamp()))
               .valid_before(int(valid_before.timestamp())))
    for permit in _PERMITS:
        builder = builder.add_extension(permit, b"")
    cert = builder.add_extension(ROLES_EXTENSION.encode("ascii"), value).sign(org)
    out.mkdir(parents=True, exist_ok=True)
    _write_private(out / "tech.key", key.export_private_key("openssh"))
    (out / "tech.key.pub").write_bytes(key.export_public_key("openssh"))
    (out / "tech.key-cert.pub").write_bytes(
        cert.public_bytes() + f" helloword-tech-{name}\n".encode())
    return IssuedTech(name=name, key_fingerprint=key.get_fingerprint("sha256"),
                      valid_before=valid_before.replace(microsecond=0), roles=frozenset(roles))


def verify_tech_certificate(cert_text: str, *, org_pub: bytes, name: str
                            ) -> tuple[Ed25519PublicKey, str]:
    """Check an OpenSSH user certificate against the org key; return its key and fingerprint.

    Delegates to :func:`proto.certs.verify_user_certificate` (the agent runs the same
    check) with the current time.

    Raises:
        CertificateRefused: not a certificate, not signed by the org key, wrong principal,
            outside its validity period, or not Ed25519. The text says which and what to do.
    """
    try:
        info = verify_user_certificate(cert_text, org_pub=org_pub, principal=name,
                                       now=datetime.now(UTC))
    except CertificateError as exc:
        raise CertificateRefused(exc.message) from None
    return info.public_key, info.fingerprint


def read_org_pub(source: Path) -> bytes:
    """The offline layout: the organisation *public* key in ``source``, as the ``org.pub``
    line to write into the home.

    Raises:
        CertificateRefused: ``source`` is unreadable, not an OpenSSH public key, not
            Ed25519, or a private key.
    """
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise CertificateRefused(f"cannot read {source} ({exc.strerror}); give the org.pub "
                                 "file made by `hw-org init`") from None
    if b"PRIVATE KEY" in data:
        raise CertificateRefused(f"{source} is a private key; give the organisation's public "
                                 "key (org.pub) and keep the private key off the server")
    try:
        pub = serialization.load_ssh_public_key(data.strip())
    except (ValueError, TypeError):
        raise CertificateRefused(f"{source} is not an OpenSSH public key line; give the "
                                 "org.pub file made by `hw-org init`") from None
    if not isinstance(pub, Ed25519PublicKey):
        raise CertificateRefused(f"{source} is not an Ed25519 key; the organisation key "
                                 "must be Ed25519 (`hw-org init` makes one)")
    return pub.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH) + b" helloword-org\n"


def check_tech_certificate(cert_text: str, *, org_pub: bytes, name: str, now: datetime
                           ) -> IssuedTech:
    """A technician certificate signed elsewhere (``hw-org sign``, ``ssh-keygen -s``):
    checked like the agent checks it, described like :func:`issue_tech`'s output.

    Raises:
        CertificateRefused: what :func:`verify_user_certificate` refuses, in its words.
    """
    try:
        info = verify_user_certificate(cert_text, org_pub=org_pub, principal=name, now=now)
    except CertificateError as exc:
        raise CertificateRefused(exc.message) from None
    return IssuedTech(name=name, key_fingerprint=info.fingerprint,
                      valid_before=info.valid_before.replace(microsecond=0), roles=info.roles)


def now_utc() -> datetime:
    return datetime.now(UTC)
