"""Technician certificates signed by the organisation key, with their roles.

OpenSSH user certificates (``PROTOCOL.certkeys``): the technician's Ed25519 key, their name
as the only principal, a key id ``helloword-tech:NAME``, a validity period, no critical
options and one extension, :data:`proto.roles.ROLES_EXTENSION`, whose value lists the roles
(:func:`proto.roles.format_roles`). The same certificate as ::

    ssh-keygen -s org.key -I helloword-tech:alice -n alice -V +90d \\
        -O clear -O extension:roles@helloword.cn=remote tech.key.pub

With the key file, ``cryptography``'s :class:`SSHCertificateBuilder` builds and signs it.
Through ``ssh-agent`` the agent can only sign bytes, so the to-be-signed part is written
here field by field (the order of ``PROTOCOL.certkeys``) and the signature appended; the
result is checked with ``cryptography``'s parser before it is written.
"""

from __future__ import annotations

import base64
import os
import secrets
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateBuilder,
    SSHCertificateType,
    load_ssh_public_identity,
)

from proto.certs import ssh_fingerprint
from proto.roles import ROLES_EXTENSION, Role, format_roles

from .errors import OrgError
from .signer import KeyFileSigner, Signer

CERT_TYPE = b"ssh-ed25519-cert-v01@openssh.com"
_ED25519 = b"ssh-ed25519"

#: Longest certificate ``hw-org sign`` makes (a technician certificate lives this long).
MAX_DAYS = 366


@dataclass(frozen=True)
class Signed:
    """A certificate made, and what to record about it."""

    text: bytes
    """The ``-cert.pub`` line."""
    name: str
    fingerprint: str
    serial: int
    roles: str
    valid_after: datetime
    valid_before: datetime


def _s(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def read_tech_public_key(data: bytes) -> Ed25519PublicKey:
    """The technician's public key (``tech.key.pub``).

    Raises:
        OrgError: not an OpenSSH Ed25519 public key (a certificate or private key neither).
    """
    try:
        key = load_ssh_public_identity(data.strip())
    except Exception:  # ValueError, UnsupportedAlgorithm, ...: not a key we can use
        raise OrgError("the technician's key is not an OpenSSH public key line; give "
                       "their tech.key.pub (`ssh-keygen -t ed25519 -f tech.key` makes one)"
                       ) from None
    if isinstance(key, SSHCertificate):
        raise OrgError("that is a certificate, not the technician's public key; give "
                       "their tech.key.pub")
    if not isinstance(key, Ed25519PublicKey):
        raise OrgError("the technician's key is not Ed25519; only Ed25519 technician keys "
                       "are accepted (`ssh-keygen -t ed25519 -f tech.key`)")
    return key


def sign_certificate(signer: Signer, *, org_pub: bytes, tech_key: Ed25519PublicKey,
                     name: str, roles: frozenset[Role], now: datetime, days: float,
                     serial: int | None = None) -> Signed:
    """A technician certificate for ``name`` with ``roles``, valid ``days`` from ``now``
    (backdated five minutes for clock skew), signed by ``signer``.

    Raises:
        OrgError: ``days`` out of range, no roles, or the signature does not verify with
            ``org_pub`` (the signer holds another key).
    """
    if not 0 < days <= MAX_DAYS:
        raise OrgError(f"--days must be more than 0 and at most {MAX_DAYS}")
    value = format_roles(roles)
    serial = serial if serial is not None else secrets.randbits(63)
    after = int((now - timedelta(minutes=5)).timestamp())
    before = int((now + timedelta(days=days)).timestamp())
    key_id = f"helloword-tech:{name}".encode()
    if isinstance(signer, KeyFileSigner):
        cert = (SSHCertificateBuilder()
                .public_key(tech_key)
                .serial(serial)
                .type(SSHCertificateType.USER)
                .key_id(key_id)
                .valid_principals([name.encode()])
                .valid_after(after)
                .valid_before(before)
                .add_extension(ROLES_EXTENSION.encode(), value.encode())
                .sign(signer.key))
        text = cert.public_bytes()
    else:
        text = _sign_by_hand(signer, org_pub=org_pub, tech_key=tech_key, serial=serial,
                             key_id=key_id, name=name, after=after, before=before,
                             roles=value)
    parsed = load_ssh_public_identity(text)
    assert isinstance(parsed, SSHCertificate)
    issuer = parsed.signature_key()
    try:
        parsed.verify_cert_signature()
    except InvalidSignature:
        raise OrgError("the certificate's signature does not verify") from None
    if not isinstance(issuer, Ed25519PublicKey) or issuer.public_bytes_raw() != org_pub:
        raise OrgError("the signing key is not this directory's organisation key (org.pub); "
                       "use the matching key or directory")
    return Signed(text=text + f" helloword-tech-{name}\n".encode(), name=name,
                  fingerprint=ssh_fingerprint(tech_key), serial=serial, roles=value,
                  valid_after=datetime.fromtimestamp(after, now.tzinfo),
                  valid_before=datetime.fromtimestamp(before, now.tzinfo))


def _sign_by_hand(signer: Signer, *, org_pub: bytes, tech_key: Ed25519PublicKey, serial: int,
                  key_id: bytes, name: str, after: int, before: int, roles: str) -> bytes:
    """``PROTOCOL.certkeys`` for an Ed25519 user certificate, signed by ``signer``."""
    extensions = _s(ROLES_EXTENSION.encode()) + _s(_s(roles.encode()))
    tbs = b"".join((
        _s(CERT_TYPE),
        _s(os.urandom(32)),  # nonce
        _s(tech_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)),
        struct.pack(">Q", serial),
        struct.pack(">I", 1),  # SSH_CERT_TYPE_USER
        _s(key_id),
        _s(_s(name.encode())),  # valid principals
        struct.pack(">Q", after),
        struct.pack(">Q", before),
        _s(b""),  # critical options: none
        _s(extensions),
        _s(b""),  # reserved
        _s(_s(_ED25519) + _s(org_pub)),  # signature key
    ))
    signature = signer.sign(tbs)
    blob = tbs + _s(_s(_ED25519) + _s(signature))
    return CERT_TYPE + b" " + base64.b64encode(blob)
