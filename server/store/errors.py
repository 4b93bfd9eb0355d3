"""The store's exceptions; every message says what happened and what to do, never secrets,
keys or payloads::

    StoreError          base; also: bad input, database unavailable or busy
    ├── TokenRefused    an enrollment token that is unknown, already used or expired (.reason)
    ├── NotFound        no such agent, technician or case (or not the caller's case)
    └── Conflict        already exists: agent id, public key, technician, token secret
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["Conflict", "NotFound", "StoreError", "TokenRefused"]


class StoreError(Exception):
    """Base class of store errors; the text says what happened and what to do."""


class TokenRefused(StoreError):
    """An enrollment token cannot be redeemed; ``reason`` is "unknown", "used" or "expired"."""

    MESSAGES: Final = {
        "unknown": "this enrollment token is not known to the server; check it was copied "
        "completely, or ask HelloWord support for a new one",
        "used": "this enrollment token was already used; ask HelloWord support for a new one",
        "expired": "this enrollment token has expired; ask HelloWord support for a new one",
    }

    def __init__(self, reason: Literal["unknown", "used", "expired"]) -> None:
        super().__init__(self.MESSAGES[reason])
        self.reason = reason


class NotFound(StoreError):
    """No such agent, technician or case."""


class Conflict(StoreError):
    """The thing being created already exists."""

