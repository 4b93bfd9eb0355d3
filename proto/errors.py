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
    CertificateError              a technician certificate that does not check out (``reason``:
                                  a :class:`CertReason`)
    CommandRefused                a signed command that will not run (``reason``: a
                                  :class:`RefusalReason`; the text says what to do)

Messages never contain key material or payload bytes: only sizes, types and states.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


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


# -- signed things that do not check out (not wire errors: the connection stays) ------


class CertReason(StrEnum):
    """Why a certificate was refused (stable strings: they appear in logs and docs)."""

    MALFORMED = "malformed"
    NOT_USER = "not_user_certificate"
    UNTRUSTED = "untrusted_issuer"
    BAD_SIGNATURE = "bad_signature"
    WRONG_PRINCIPAL = "wrong_principal"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    NOT_ED25519 = "not_ed25519"
    UNSUPPORTED_OPTION = "unsupported_critical_option"
    BAD_ROLES = "bad_roles"


class CertificateError(Exception):
    """A certificate that does not check out.

    ``reason`` is the machine-readable cause; ``message`` (also ``str(exc)``) says what
    happened and what to do. It never contains key material or certificate bytes.
    """

    def __init__(self, reason: CertReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class RefusalReason(StrEnum):
    """Why a command was refused (stable strings: they appear in logs and docs)."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    UNTRUSTED_CERTIFICATE = "untrusted_certificate"
    CERTIFICATE_EXPIRED = "certificate_expired"
    WRONG_TECHNICIAN = "wrong_technician"
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    WRONG_AGENT = "wrong_agent"
    WRONG_CASE = "wrong_case"
    WRONG_ACTION = "wrong_action"
    REPLAYED = "replayed"
    BUSY = "busy"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_ROLE = "wrong_role"


REFUSAL_MESSAGES: dict[RefusalReason, str] = {
    RefusalReason.MALFORMED:
        "the signed command could not be decoded; send it again from an up-to-date hw-tech",
    RefusalReason.BAD_SIGNATURE:
        "the command's signature does not match its contents and the technician's "
        "certificate, so it was altered on the way; sign and send it again",
    RefusalReason.UNTRUSTED_CERTIFICATE:
        "the technician certificate does not chain to the organisation key this agent "
        "trusts; sign with a certificate from this organisation (`hw-server tech add`)",
    RefusalReason.CERTIFICATE_EXPIRED:
        "the technician certificate is outside its validity period; ask an operator for a "
        "new one (`hw-server tech add`) or check the clocks",
    RefusalReason.WRONG_TECHNICIAN:
        "the command names a technician the certificate is not issued to; sign as yourself",
    RefusalReason.REVOKED:
        "the technician certificate that signed the command has been revoked; ask an operator "
        "for a new one (`hw-server tech add`)",
    RefusalReason.EXPIRED:
        "the command expired before the agent could run it; sign and send it again",
    RefusalReason.NOT_YET_VALID:
        "the command is dated in the future beyond the allowed clock skew; correct the "
        "technician's or the agent's clock and send it again",
    RefusalReason.LIFETIME_TOO_LONG:
        "the command stays valid for longer than the 10 minutes allowed; sign it again with "
        "an earlier expiry",
    RefusalReason.WRONG_AGENT:
        "the command is addressed to another agent; send it to the agent that owns the case",
    RefusalReason.WRONG_CASE:
        "the command was signed for another case; sign it again for this case",
    RefusalReason.WRONG_ACTION:
        "the signed action differs from the action requested; sign the action you request",
    RefusalReason.REPLAYED:
        "this command was already received once (same nonce); sign a new command to repeat "
        "the action",
    RefusalReason.BUSY:
        "too many commands are in flight on this agent; retry shortly",
    RefusalReason.WRONG_AUDIENCE:
        "the fan-out command is addressed to another customer's agents; sign it for the "
        "audience you mean (`hw-tech ping --all` or `--customer NAME`)",
    RefusalReason.WRONG_ROLE:
        "the technician certificate that signed the command lacks the role this action "
        "needs; a technician with that role must do it (`docs/security.md#roles`)",
}


class CommandRefused(Exception):
    """A command the agent will not run.

    ``reason`` is the machine-readable cause; ``message`` (also ``str(exc)``) is one
    sentence saying what was wrong and what to do. It never contains payload or key bytes.
    A refusal caused by the certificate chains the :class:`~proto.certs.CertificateError`.
    """

    def __init__(self, reason: RefusalReason, message: str | None = None) -> None:
        message = message if message is not None else REFUSAL_MESSAGES[reason]
        super().__init__(message)
        self.reason = reason
        self.message = message
