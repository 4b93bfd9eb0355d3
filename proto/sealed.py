"""Recordings sealed at rest to a recording public key (sans-I/O).

The server seals each session recording on arrival to the organisation's recording public
key (``recording.pub``); only the holder of the private half (``recording.key``: auditors,
supervisors, kept off the server) can open it. Construction, per recording:

- a fresh ephemeral X25519 key pair; ``shared = X25519(ephemeral, recipient)``;
- ``key = HKDF-SHA256(shared, salt = ephemeral_pub || recipient_pub, info = INFO)``;
- ``ChaCha20Poly1305(key)`` over the recording with a random 96-bit nonce and, as associated
  data, the agent id, case number and recording id (:func:`associated_data`): a sealed
  recording moved to another row, case or agent does not open.

Blob layout: ``MAGIC (8) || recipient key id (8) || ephemeral_pub (32) || nonce (12) ||
ciphertext+tag``. The key id (the first 8 bytes of SHA-256 of the raw recipient public key)
lets a reader say "sealed to another key" instead of a bare authentication failure.

Nothing here does I/O or draws random numbers: callers read and write the key files and
pass the ephemeral key and the nonce in (``X25519PrivateKey.generate()``,
``os.urandom(12)``).
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "MAGIC", "OVERHEAD", "SealError", "associated_data", "is_sealed", "key_id", "load_private",
    "load_public", "open_sealed", "private_pem", "public_pem", "seal",
    "sealed_key_id",
]

MAGIC = b"HWSEAL1\0"
INFO = b"helloword-recording-seal-v1"
_KEY_ID = 8
_HEADER = len(MAGIC) + _KEY_ID + 32 + 12
#: Bytes a sealed blob adds to its plaintext.
OVERHEAD = _HEADER + 16


class SealError(Exception):
    """A key or a sealed blob cannot be used; the text says what to do."""


def associated_data(agent_id: str, case: str, recording_id: str) -> bytes:
    """What a sealed recording is bound to (never secret, never stored in the blob)."""
    return b"\0".join((b"hw-recording", agent_id.encode(), case.encode(),
                       recording_id.encode()))


def _raw(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(pub: X25519PublicKey) -> str:
    """Short hex name of a recording public key (16 hex digits)."""
    return hashlib.sha256(_raw(pub)).digest()[:_KEY_ID].hex()


def _derive(shared: bytes, eph: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph + recipient,
                info=INFO).derive(shared)


def seal(pub: X25519PublicKey, plaintext: bytes, ad: bytes, *,
         ephemeral: X25519PrivateKey, nonce: bytes) -> bytes:
    """Seal ``plaintext`` to ``pub``, bound to ``ad`` (:func:`associated_data`).

    ``ephemeral`` must be a fresh key and ``nonce`` 12 random bytes, both used once.
    """
    if len(nonce) != 12:
        raise ValueError("the nonce is 12 bytes")
    eph = ephemeral
    eph_pub = _raw(eph.public_key())
    recipient = _raw(pub)
    key = _derive(eph.exchange(pub), eph_pub, recipient)
    head = MAGIC + bytes.fromhex(key_id(pub)) + eph_pub + nonce
    return head + ChaCha20Poly1305(key).encrypt(nonce, plaintext, ad)


def is_sealed(blob: bytes) -> bool:
    return blob.startswith(MAGIC) and len(blob) >= OVERHEAD


def sealed_key_id(blob: bytes) -> str:
    """The key id a sealed blob was sealed to (raises :class:`SealError` if not sealed)."""
    if not is_sealed(blob):
        raise SealError("this is not a sealed recording (no seal header)")
    return blob[len(MAGIC):len(MAGIC) + _KEY_ID].hex()


def open_sealed(priv: X25519PrivateKey, blob: bytes, ad: bytes) -> bytes:
    """The plaintext of ``blob``.

    Raises:
        SealError: sealed to another key, damaged, or bound to other associated data.
    """
    ours = key_id(priv.public_key())
    theirs = sealed_key_id(blob)
    if theirs != ours:
        raise SealError(f"the recording is sealed to recording key {theirs}, this key is "
                        f"{ours}; use the recording.key that belongs to the server's "
                        "recording.pub of that time")
    at = len(MAGIC) + _KEY_ID
    eph_pub, nonce, body = blob[at:at + 32], blob[at + 32:at + 44], blob[at + 44:]
    try:
        shared = priv.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError:
        raise SealError("the sealed recording is damaged (bad ephemeral key)") from None
    key = _derive(shared, eph_pub, _raw(priv.public_key()))
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, body, ad)
    except InvalidTag:
        raise SealError("the sealed recording does not authenticate: it was damaged or moved "
                        "to another case or recording in the store; tell an operator") from None


# -- key files (PEM) ----------------------------------------------------------------------


def private_pem(priv: X25519PrivateKey) -> bytes:
    return priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())


def public_pem(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private(data: bytes) -> X25519PrivateKey:
    """A ``recording.key`` (PEM PKCS#8, X25519). Raises :class:`SealError`."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SealError("not a recording private key (expected an unencrypted PEM X25519 "
                        "key, as `hw-server init` writes to offline/recording.key)") from None
    if not isinstance(key, X25519PrivateKey):
        raise SealError("the key is not an X25519 key; a recording key is X25519")
    return key


def load_public(data: bytes) -> X25519PublicKey:
    """A ``recording.pub`` (PEM SubjectPublicKeyInfo, X25519). Raises :class:`SealError`."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise SealError("not a recording public key (expected a PEM X25519 public key)"
                        ) from None
    if not isinstance(key, X25519PublicKey):
        raise SealError("the public key is not an X25519 key; a recording key is X25519")
    return key
