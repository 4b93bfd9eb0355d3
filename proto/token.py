"""The enrollment token: one copy-pasteable line (``docs/protocol.md#enrollment-token``).

``hwe1.`` followed by base64url (no padding) of a JSON object carrying the server URL(s),
a one-time secret, its expiry, the SHA-256 fingerprint of the server's CA certificate and
the organisation's Ed25519 public key. The secret is the only confidential part; the
fingerprint lets the agent pin the CA before trusting anything the server says.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from .errors import TokenError

PREFIX = "hwe1."
MAX_TOKEN_LENGTH = 4096

Url = Annotated[str, Meta(pattern=r"^wss://[^\s/]+(/[^\s]*)?(?!\n)$", max_length=512)]


class EnrollToken(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    urls: Annotated[list[Url], Meta(min_length=1, max_length=8)]
    secret: Annotated[bytes, Meta(min_length=16, max_length=64)]
    expires: datetime
    ca_sha256: Annotated[bytes, Meta(min_length=32, max_length=32)]
    org_pub: Annotated[bytes, Meta(min_length=32, max_length=32)]
    customer: Annotated[str, Meta(max_length=128)] = ""


_decoder = msgspec.json.Decoder(EnrollToken)
_B64URL = re.compile(r"[A-Za-z0-9_-]+\Z")


def encode_token(token: EnrollToken) -> str:
    """Render ``token`` as one line."""
    raw = msgspec.json.encode(token)
    return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_token(text: str, *, now: datetime) -> EnrollToken:
    """Parse a token line and check its expiry against ``now``.

    Raises:
        TokenError: malformed, truncated or expired; the text says what to do.
    """
    text = text.strip()
    if len(text) > MAX_TOKEN_LENGTH or not text.startswith(PREFIX):
        raise TokenError("this is not a HelloWord enrollment token (it should start with "
                         f"{PREFIX!r}); copy the whole line from `hw-server enroll-token`")
    if now.tzinfo is None:
        raise ValueError("decode_token() needs a timezone-aware `now`")
    body = text[len(PREFIX):]
    try:
        if not _B64URL.match(body):
            raise ValueError("characters outside base64url")
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        token = _decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise TokenError("the enrollment token is damaged or incomplete; copy the whole line "
                         "again from `hw-server enroll-token`") from None
    if token.expires.tzinfo is None:
        raise TokenError("the enrollment token has no time zone on its expiry; ask for a new one")
    if token.expires <= now:
        raise TokenError(f"the enrollment token expired at {token.expires.isoformat()}; ask "
                         "HelloWord support for a new one")
    return token
