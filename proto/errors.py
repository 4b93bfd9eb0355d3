"""Exceptions raised by :mod:`proto`.

The tree splits *our* misuse from the *peer's* garbage, as h11 does::

    ProtocolError                 base of everything raised here; has a ``close_code``
    ├── LocalProtocolError        we tried something the state machine forbids (a bug here)
    └── RemoteProtocolError       the peer sent something wrong; close the connection
        ├── DecodeError           bytes that are not a valid message (garbage, truncated,
        │   └── FrameTooLarge     or over the size limit)
        ├── VersionMismatch       no protocol version in common; says which side to upgrade
        ├── UnexpectedMessage     a valid message not allowed in the current state
        └── AuthenticationFailed  a bad proof of key possession
    TokenError                    an enrollment token that cannot be used (not a wire error)

Messages never contain key material or payload bytes: only sizes, types and states.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Websocket close codes used by HelloWord (``docs/protocol.md#close-codes``)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    MALFORMED = 4000
    UNSUPPORTED_VERSION = 4001
    PROTOCOL_VIOLATION = 4002
    AUTH_FAILED = 4003
    ENROLL_REFUSED = 4004
    HANDSHAKE_TIMEOUT = 4008
    REPLACED = 4009


class ProtocolError(Exception):
    """Base class. ``close_code`` is the code to close the websocket with."""

    close_code: CloseCode = CloseCode.PROTOCOL_VIOLATION

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LocalProtocolError(ProtocolError):
    """We attempted an action the session state does not allow."""

    close_code = CloseCode.INTERNAL_ERROR


class RemoteProtocolError(ProtocolError):
    """The peer violated the protocol."""


class DecodeError(RemoteProtocolError):
    """The bytes received are not one valid message."""

    close_code = CloseCode.MALFORMED


class FrameTooLarge(DecodeError):
    """A frame larger than :data:`proto.MAX_FRAME_SIZE`."""

    close_code = CloseCode.MESSAGE_TOO_BIG


class VersionMismatch(RemoteProtocolError):
    """No protocol version in common with the peer."""

    close_code = CloseCode.UNSUPPORTED_VERSION


class UnexpectedMessage(RemoteProtocolError):
    """A message that is valid but not allowed in the current session state."""

    close_code = CloseCode.PROTOCOL_VIOLATION


class AuthenticationFailed(RemoteProtocolError):
    """The peer could not prove possession of its key."""

    close_code = CloseCode.AUTH_FAILED


class TokenError(Exception):
    """An enrollment token that is malformed or expired. The text says what to do."""
