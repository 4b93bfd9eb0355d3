"""The store's exceptions; every message says what happened and what to do, never secrets,
keys or payloads::

    StoreError          base; also: bad input, database unavailable or busy
    ├── TokenRefused    an enrollment token that is unknown, already used or expired (.reason)
    ├── NotFound        no such agent, technician or case (or not the caller's case)
    ├── ResultRefused   a result that answers no request sent to that agent (.reason)
    └── Conflict        already exists: agent id, public key, technician, token secret
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["Conflict", "NotFound", "ResultRefused", "StoreError", "TokenRefused"]


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


class ResultRefused(StoreError):
    """An agent's result that answers no request the server sent to that agent for that
    case and action (or one already answered by another result); ``reason`` is
    "unrequested", "wrong_case", "wrong_action" or "answered". Raised before anything is
    written."""

    MESSAGES: Final = {
        "unrequested": "the server sent this agent no request {request!r}; a result is "
        "only accepted as the answer to a request the server sent (it was not stored)",
        "wrong_case": "request {request!r} was for another case; a result must name the "
        "case of its request (it was not stored)",
        "wrong_action": "request {request!r} asked for another action; a result must name "
        "the action of its request (it was not stored)",
        "answered": "request {request!r} was already answered by another result; each "
        "request takes one result (it was not stored)",
    }

    def __init__(self, reason: Literal["unrequested", "wrong_case", "wrong_action",
                                       "answered"], request: str) -> None:
        super().__init__(self.MESSAGES[reason].format(request=request))
        self.reason = reason


class Conflict(StoreError):
    """The thing being created already exists."""

