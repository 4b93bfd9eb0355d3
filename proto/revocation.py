"""Revocation lists signed by the organisation key, with freshness.

See ``docs/security.md#revocation-lists``.

The organisation key signs a list of revoked technician keys together with a sequence
number, when it was issued and when the next one is due (``next_update``). The server only
stores and distributes it (:class:`proto.messages.SignedRevocations`); the agent checks it
against the organisation key it pinned at enrollment, keeps the list with the highest
sequence (it never goes back to an older one) and refuses commands once its list is older
than ``next_update + grace`` (a local policy setting). A server that withholds a revocation
can therefore do so for a bounded, documented time only.

Wire form: ``payload`` is the canonical JSON of :class:`RevocationList` (keys sorted, no
spaces, fingerprints sorted and unique, times in whole UTC seconds) and ``signature`` the
org key's Ed25519 signature over ``REVOCATION_CONTEXT + b"\\0" + payload``. The context
keeps a revocation-list signature from ever being mistaken for another signature of the
same key (an SSH certificate, a command). An Ed25519 signature made through ``ssh-agent``
(or a PKCS#11 token behind it) is this same raw signature, so the list can be signed
without the key on disk.

Sans-I/O: callers pass ``now`` and keys; nothing here reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from msgspec import Meta, Struct

from .messages import SignedRevocations

#: What the organisation key signs a revocation list under (never reused for anything else).
REVOCATION_CONTEXT = b"helloword-revocations-v1"

#: Most revoked keys one list carries (one frame; ~60 bytes each).
MAX_REVOKED = 10000

#: Longest a list may claim to stay current (``next_update - issued``): a year.
MAX_VALIDITY = timedelta(days=366)

#: The agent's default grace after ``next_update`` before it refuses commands.
DEFAULT_GRACE = timedelta(hours=24)

Fingerprint = Annotated[str, Meta(min_length=8, max_length=128,
                                  pattern=r"^SHA256:[A-Za-z0-9+/]{43}(?!\n)$")]
"""An OpenSSH ``SHA256:`` key fingerprint (``ssh-keygen -l``)."""


class RevocationList(Struct, frozen=True, forbid_unknown_fields=True):
    """What the organisation key vouches for: these keys are revoked, as of ``issued``."""

    sequence: Annotated[int, Meta(ge=1, le=2**63 - 1)]
    """Grows with every list the organisation signs; an agent never accepts a lower one."""
    issued: Annotated[datetime, Meta(tz=True)]
    next_update: Annotated[datetime, Meta(tz=True)]
    """When the next list is due; agents refuse commands ``grace`` after it."""
    fingerprints: Annotated[list[Fingerprint], Meta(max_length=MAX_REVOKED)] = []
    """Revoked technician keys, sorted, no duplicates."""


class RevocationError(ValueError):
    """A signed list that does not check out, or a list that cannot be made.

    The text says what happened and what to do; it never holds key material or payload."""


_decoder = msgspec.json.Decoder(RevocationList)
_encoder = msgspec.json.Encoder(order="sorted")


def _second(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("revocation list times must be timezone-aware")
    return t.astimezone(UTC).replace(microsecond=0)


def make_list(*, sequence: int, issued: datetime, next_update: datetime,
              fingerprints: list[str] | set[str] | frozenset[str]) -> RevocationList:
    """A well-formed list: UTC whole seconds, fingerprints sorted and unique.

    Raises:
        RevocationError: ``next_update`` not after ``issued`` or beyond
            :data:`MAX_VALIDITY`, a bad sequence, too many or malformed fingerprints.
    """
    body = RevocationList(sequence=sequence, issued=_second(issued),
                          next_update=_second(next_update),
                          fingerprints=sorted(set(fingerprints)))
    try:  # the same validation a verifier applies
        body = _decoder.decode(_encoder.encode(body))
    except msgspec.ValidationError as exc:
        raise RevocationError(f"cannot make the revocation list: {exc}") from None
    _check_times(body)
    return body


def _check_times(body: RevocationList) -> None:
    if body.next_update <= body.issued:
        raise RevocationError("the revocation list's next update is not after its issue time; "
                              "sign a new list with a validity of at least a minute")
    if body.next_update - body.issued > MAX_VALIDITY:
        raise RevocationError("the revocation list claims to stay current for more than a "
                              "year; sign a new list with a shorter validity")


def payload_of(body: RevocationList) -> bytes:
    """The canonical bytes of ``body`` (what is signed)."""
    return _encoder.encode(body)


def signed_bytes(payload: bytes) -> bytes:
    """The exact bytes the organisation key signs for ``payload``."""
    return REVOCATION_CONTEXT + b"\0" + payload


def sign_list(body: RevocationList, key: Ed25519PrivateKey) -> SignedRevocations:
    """Sign ``body`` with the organisation key held in memory."""
    payload = payload_of(body)
    return SignedRevocations(payload=payload, signature=key.sign(signed_bytes(payload)))


def verify_list(signed: SignedRevocations, *, org_pub: bytes) -> RevocationList:
    """Check the organisation's signature and decode the list.

    Args:
        signed: the list as received.
        org_pub: the raw 32-byte organisation public key the caller trusts.

    Raises:
        RevocationError: not signed by ``org_pub`` (another key, or altered), or a payload
            that is not a well-formed list.
    """
    try:
        Ed25519PublicKey.from_public_bytes(org_pub).verify(signed.signature,
                                                           signed_bytes(signed.payload))
    except (InvalidSignature, ValueError):
        raise RevocationError(
            "the revocation list is not signed by this organisation's key (signed by another "
            "key, or altered); sign it with the organisation key (`hw-org revocations`)"
        ) from None
    try:
        body = _decoder.decode(signed.payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise RevocationError("the signed revocation list's content is not a valid list; "
                              "sign a new one with `hw-org revocations`") from None
    _check_times(body)
    return body


class Offer(StrEnum):
    """What became of a signed list offered to a holder (:func:`consider`)."""

    NEWER = "newer"      # accepted: higher sequence than the one held (or none held)
    SAME = "same"        # the list already held (same sequence, same content): nothing to do
    OLDER = "older"      # lower sequence than the one held: ignored, never go back
    CONFLICT = "conflict"  # same sequence, different content: ignored (keep the first)


def consider(held: RevocationList | None, offered: RevocationList) -> Offer:
    """Whether a verified ``offered`` list replaces the ``held`` one (highest sequence wins)."""
    if held is None or offered.sequence > held.sequence:
        return Offer.NEWER
    if offered.sequence < held.sequence:
        return Offer.OLDER
    return Offer.SAME if offered == held else Offer.CONFLICT


@dataclass(frozen=True)
class Stale:
    """The held list is too old to act on (or there is none): why, and what to do."""

    message: str


def freshness(held: RevocationList | None, *, now: datetime, grace: timedelta
              ) -> Stale | None:
    """``None`` while ``now < next_update + grace``; else a :class:`Stale` saying why.

    Raises:
        ValueError: ``now`` is naive (a bug in the caller).
    """
    if now.tzinfo is None:
        raise ValueError("freshness() needs a timezone-aware `now`")
    if held is None:
        return Stale(
            "no signed revocation list: this computer has not yet received the organisation's "
            "signed list of revoked technicians, so it cannot tell whether the technician is "
            "still trusted; the support organisation must publish one (`hw-org revocations`, "
            "then `hw-server revocations load`), then retry")
    limit = held.next_update + grace
    if now < limit:
        return None
    return Stale(
        f"stale revocation list: this computer's signed list of revoked technicians "
        f"(number {held.sequence}) was due to be replaced at "
        f"{held.next_update.isoformat()} and the grace of this computer's policy ended at "
        f"{limit.isoformat()}, so no technician can be trusted; the support organisation must "
        f"sign a new list (`hw-org revocations`, then `hw-server revocations load`), or "
        f"check this computer's clock, then retry")
