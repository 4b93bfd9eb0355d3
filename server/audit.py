"""The audit log's hash chain: canonical encoding, entry hashes and chain checking (no I/O).

Each audit entry carries ``prev_hash`` (the ``hash`` of the entry before it, or
:data:`GENESIS` for the first) and its own ``hash``::

    hash = SHA-256( b"helloword-audit-v1"
                    || field(prev_hash) || field(str(id)) || field(at) || field(actor)
                    || field(event) || field(subject) || field(detail) )
    field(b) = len(b) as 4 bytes big-endian || b          (text fields in UTF-8)

where ``at`` is RFC 3339 UTC with microseconds (``2026-11-25T02:00:00.000000Z``) and
``detail`` is canonical JSON (:func:`canonical_detail`: sorted keys, no spaces, UTF-8, no
NaN/Infinity). Length prefixes make the encoding unambiguous: no two different entries encode
to the same bytes. The store keeps ``detail`` exactly as canonicalised here, so a verifier
hashes the stored text as it is. ``docs/operations.md#audit`` describes the format for
anyone re-checking the log with their own tools.

:class:`ChainChecker` walks entries in id order and names the first broken link. A chain
detects an edited, deleted or reordered entry, but not a truncated tail: whoever can delete
the newest entries leaves a shorter, valid chain. Record the head hash elsewhere to catch that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "DETAIL_MAX_BYTES",
    "GENESIS",
    "HASH_SIZE",
    "ChainChecker",
    "canonical_detail",
    "entry_hash",
    "rfc3339_utc",
]

HASH_SIZE: Final = 32
GENESIS: Final = bytes(HASH_SIZE)
"""The ``prev_hash`` of the first entry."""
DETAIL_MAX_BYTES: Final = 64 * 1024
"""Largest canonical ``detail`` accepted; an audit entry records facts, not payloads."""

_DOMAIN: Final = b"helloword-audit-v1"


def rfc3339_utc(at: datetime) -> str:
    """``at`` as RFC 3339 UTC with microseconds, e.g. ``2026-11-25T02:00:00.000000Z``.

    Raises:
        ValueError: ``at`` is naive.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("audit times must be timezone-aware (UTC), got a naive datetime")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_detail(detail: Mapping[str, Any] | None) -> str:
    """Canonical JSON of ``detail``: sorted keys, compact, non-ASCII kept, no NaN.

    Raises:
        ValueError: ``detail`` holds something JSON cannot represent (bytes, NaN, a set,
            non-string keys), or is larger than :data:`DETAIL_MAX_BYTES`.
    """
    if detail is None:
        detail = {}
    if not isinstance(detail, Mapping):
        raise ValueError("audit detail must be a mapping of names to JSON values")
    if not all(isinstance(key, str) for key in detail):
        raise ValueError("audit detail keys must be strings")
    try:
        text = json.dumps(
            dict(detail),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"audit detail must hold only JSON values (str, int, float, bool, None, lists "
            f"and string-keyed objects): {exc}"
        ) from None
    if len(text.encode("utf-8")) > DETAIL_MAX_BYTES:
        raise ValueError(
            f"audit detail is larger than {DETAIL_MAX_BYTES} bytes; record a summary, "
            "not the payload"
        )
    return text


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def entry_hash(
    *,
    prev_hash: bytes,
    id: int,
    at: datetime,
    actor: str,
    event: str,
    subject: str,
    detail_json: str,
) -> bytes:
    """The SHA-256 hash of one entry (see the module docstring for the encoding).

    ``detail_json`` is the stored canonical JSON text, hashed as it is.
    """
    digest = hashlib.sha256(_DOMAIN)
    for part in (
        prev_hash,
        str(id).encode("ascii"),
        rfc3339_utc(at).encode("ascii"),
        actor.encode("utf-8"),
        event.encode("utf-8"),
        subject.encode("utf-8"),
        detail_json.encode("utf-8"),
    ):
        digest.update(_field(part))
    return digest.digest()


class ChainChecker:
    """Check a chain fed one entry at a time, oldest first; remembers the first problem.

    Call :meth:`feed` for every entry in id order. After the first broken link, further
    entries are counted but not judged. ``reason`` reads like
    ``"entry 17: its hash does not match its contents (edited?)"``.
    """

    def __init__(self) -> None:
        self.entries = 0
        self.head = GENESIS
        self.first_bad_id: int | None = None
        self.reason = ""
        self._prev_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_id is None

    def feed(self, *, id: int, prev_hash: bytes | None, hash: bytes | None,
             computed: bytes | None) -> bool:
        """Judge one entry; ``computed`` is its hash recomputed from its contents.

        ``computed`` is ``None`` when the contents cannot be hashed at all (unreadable).
        Returns whether the chain is still intact.
        """
        self.entries += 1
        if self.first_bad_id is not None:
            return False
        problem = ""
        if hash is None or len(hash) != HASH_SIZE or computed is None or hash != computed:
            problem = "its hash does not match its contents (edited?)"
        elif prev_hash != self.head:
            if self._prev_id is None:
                problem = "does not start the log (earlier entries deleted?)"
            else:
                problem = f"does not follow entry {self._prev_id} (deleted or reordered?)"
        if problem:
            self.first_bad_id = id
            self.reason = f"entry {id}: {problem}"
            return False
        assert hash is not None
        self.head = hash
        self._prev_id = id
        return True
