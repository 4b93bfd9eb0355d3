"""Technician certificates: OpenSSH user certificates signed by the organisation key.

A technician's Ed25519 key is certified by the organisation's Ed25519 key in the OpenSSH
certificate format (``PROTOCOL.certkeys``), which stock ``ssh`` understands. The agent pins
the raw organisation public key at enrollment and checks every certificate against it with
:func:`verify_user_certificate` (``docs/security.md``).

Sans-I/O: the caller passes ``now``; nothing here reads the clock. Parsing uses
``cryptography``'s public SSH API, so a certificate is checked exactly as given.

Verified chains are cached by the certificate's exact text and the organisation key: parsing
and the organisation's signature (half the cost of checking a signed command) are done once
per certificate, while the principal and the validity period are checked on every call (and
revocation by the callers, :mod:`proto.command`, every time too).
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateType,
    load_ssh_public_identity,
    ssh_key_fingerprint,
)

from .errors import CertificateError, CertReason
from .roles import LEGACY_ROLES, ROLES_EXTENSION, Role, RolesError, parse_roles

#: Longest certificate line accepted before any parsing (an Ed25519 certificate is ~600 bytes).
MAX_CERTIFICATE_LENGTH = 16 * 1024

#: Verified certificates remembered (see the module docstring); a few per technician.
CACHE_SIZE = 256

_MAX_TIMESTAMP = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
"""OpenSSH writes 2**64 - 1 for "forever"; datetime stops at year 9999."""


@dataclass(frozen=True)
class CertInfo:
    """What a verified certificate vouches for."""

    public_key: Ed25519PublicKey
    """The technician's certified key."""
    fingerprint: str
    """``SHA256:...`` fingerprint of :attr:`public_key` (see :func:`ssh_fingerprint`)."""
    serial: int
    key_id: str
    valid_after: datetime
    valid_before: datetime
    roles: frozenset[Role] = LEGACY_ROLES
    """The roles the organisation certified (:data:`proto.roles.ROLES_EXTENSION`); a
    certificate without the extension has :data:`proto.roles.LEGACY_ROLES`."""


def ssh_fingerprint(public_key: Ed25519PublicKey) -> str:
    """OpenSSH-style fingerprint: ``SHA256:`` + unpadded base64 of SHA-256 of the key blob.

    Equal to ``ssh-keygen -l`` and to asyncssh's ``key.get_fingerprint("sha256")``.
    """
    digest = ssh_key_fingerprint(public_key, hashes.SHA256())
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


_MESSAGES: dict[CertReason, str] = {
    CertReason.MALFORMED:
        "the technician certificate is not a readable OpenSSH certificate; copy the whole "
        "`tech.key-cert.pub` line again",
    CertReason.NOT_USER:
        "the technician certificate is not an OpenSSH user certificate (it is a host "
        "certificate or a plain public key); use the `tech.key-cert.pub` file from "
        "`hw-server tech add`",
    CertReason.UNTRUSTED:
        "the technician certificate was not issued by this organisation's key; ask an "
        "operator of this organisation for one (`hw-server tech add`)",
    CertReason.BAD_SIGNATURE:
        "the technician certificate's signature is invalid, so it was altered after signing; "
        "ask an operator for a new one (`hw-server tech add`)",
    CertReason.UNSUPPORTED_OPTION:
        "the technician certificate carries critical options (such as force-command or "
        "source-address) that HelloWord cannot enforce; ask an operator for one without them "
        "(`hw-server tech add`)",
    CertReason.WRONG_PRINCIPAL:
        "the technician certificate is not issued to the technician named in the request; "
        "use your own certificate, or ask an operator for one issued to your name "
        "(`hw-server tech add`)",
    CertReason.NOT_YET_VALID:
        "the technician certificate is not valid before {when}; check this machine's clock, "
        "or wait",
    CertReason.EXPIRED:
        "the technician certificate expired at {when}; ask an operator for a new one "
        "(`hw-server tech add`)",
    CertReason.NOT_ED25519:
        "the technician certificate certifies a key that is not Ed25519, and only Ed25519 "
        "technician keys are accepted; get a new key and certificate from `hw-server tech add`",
    CertReason.BAD_ROLES:
        "the technician certificate's roles extension ({detail}) cannot be read, so what the "
        "technician may do is unknown; ask an operator for a new certificate "
        "(`hw-server tech add NAME --role ROLE`)",
}


def _refused(reason: CertReason, when: datetime | None = None, detail: str = ""
             ) -> CertificateError:
    text = _MESSAGES[reason]
    return CertificateError(reason, text.format(when=when.isoformat() if when else "",
                                                detail=detail))


def _utc(timestamp: int) -> datetime:
    return datetime.fromtimestamp(min(timestamp, _MAX_TIMESTAMP), UTC)


@dataclass(frozen=True)
class _Chain:
    """What a certificate whose chain verified says, whoever asks and whenever."""

    info: CertInfo
    principals: frozenset[bytes]


_verified: OrderedDict[tuple[str, bytes], _Chain] = OrderedDict()


def verify_user_certificate(text: str, *, org_pub: bytes, principal: str, now: datetime
                            ) -> CertInfo:
    """Check an OpenSSH user certificate against the organisation key.

    Args:
        text: one certificate line (``ssh-ed25519-cert-v01@openssh.com AAAA... [comment]``).
        org_pub: the raw 32-byte Ed25519 organisation public key the caller trusts.
        principal: the technician name the certificate must list.
        now: the current time, timezone-aware.

    Checks, in order: it parses; it is a user certificate; it is signed by ``org_pub``
    (an Ed25519 key); the signature verifies; it has no critical options (they restrict
    where a key may be used and HelloWord cannot enforce them, so OpenSSH's rule applies:
    refuse); ``principal`` is listed (a certificate listing no principals is refused too,
    although OpenSSH reads that as "anyone"); ``valid_after <= now < valid_before``; the
    certified key is Ed25519; its roles extension, if any, names known roles
    (:func:`proto.roles.parse_roles`; :attr:`CertInfo.roles`).

    Raises:
        CertificateError: with the :class:`CertReason` of the first failed check.
        ValueError: ``now`` is naive (a bug in the caller).
    """
    if now.tzinfo is None:
        raise ValueError("verify_user_certificate() needs a timezone-aware `now`")
    if not isinstance(text, str) or len(text) > MAX_CERTIFICATE_LENGTH:
        raise _refused(CertReason.MALFORMED)
    chain = _verified.get((text, org_pub))
    if chain is None:
        chain = _verify_chain(text, org_pub=org_pub, principal=principal, now=now)
        _verified[(text, org_pub)] = chain
        if len(_verified) > CACHE_SIZE:
            _verified.popitem(last=False)
    try:
        wanted = principal.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: names no certificate can list
        raise _refused(CertReason.WRONG_PRINCIPAL) from None
    if wanted not in chain.principals:
        raise _refused(CertReason.WRONG_PRINCIPAL)
    info = chain.info
    if now < info.valid_after:
        raise _refused(CertReason.NOT_YET_VALID, info.valid_after)
    if now >= info.valid_before:
        raise _refused(CertReason.EXPIRED, info.valid_before)
    return info


def _verify_chain(text: str, *, org_pub: bytes, principal: str, now: datetime) -> _Chain:
    """Every check of :func:`verify_user_certificate`, in its order, on a certificate not
    seen before; the result keeps what the time-independent checks established."""
    try:
        cert = load_ssh_public_identity(text.strip().encode("utf-8"))
    except Exception:  # cryptography raises ValueError, UnsupportedAlgorithm, ...
        raise _refused(CertReason.MALFORMED) from None
    if not isinstance(cert, SSHCertificate) or cert.type is not SSHCertificateType.USER:
        raise _refused(CertReason.NOT_USER)
    try:
        issuer = cert.signature_key()
    except Exception:  # an issuer key type cryptography does not know: not ours either
        raise _refused(CertReason.UNTRUSTED) from None
    if not isinstance(issuer, Ed25519PublicKey) or issuer.public_bytes_raw() != org_pub:
        raise _refused(CertReason.UNTRUSTED)
    try:
        cert.verify_cert_signature()
    except InvalidSignature:
        raise _refused(CertReason.BAD_SIGNATURE) from None
    if cert.critical_options:
        raise _refused(CertReason.UNSUPPORTED_OPTION)
    try:
        wanted = principal.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: names no certificate can list
        raise _refused(CertReason.WRONG_PRINCIPAL) from None
    if wanted not in cert.valid_principals:
        raise _refused(CertReason.WRONG_PRINCIPAL)
    valid_after, valid_before = _utc(cert.valid_after), _utc(cert.valid_before)
    if now < valid_after:
        raise _refused(CertReason.NOT_YET_VALID, valid_after)
    if now >= valid_before:
        raise _refused(CertReason.EXPIRED, valid_before)
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise _refused(CertReason.NOT_ED25519)
    try:
        roles = parse_roles(cert.extensions.get(ROLES_EXTENSION.encode("ascii")))
    except RolesError as exc:
        raise _refused(CertReason.BAD_ROLES, detail=str(exc)) from None
    return _Chain(CertInfo(
        public_key=key,
        fingerprint=ssh_fingerprint(key),
        serial=cert.serial,
        key_id=cert.key_id.decode("utf-8", errors="replace"),
        valid_after=valid_after,
        valid_before=valid_before,
        roles=roles,
    ), frozenset(cert.valid_principals))
