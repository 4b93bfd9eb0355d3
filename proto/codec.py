"""The one codec: JSON frames, validated while decoding (``docs/protocol.md#framing``)."""

from __future__ import annotations

import re

import msgspec

from . import MAX_FRAME_SIZE
from .errors import DecodeError, FrameTooLarge
from .messages import AnyMessage

_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_UNKNOWN_FIELD = re.compile(r"unknown field `[^`]*`")
_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnyMessage] = msgspec.json.Decoder(AnyMessage)


def encode(message: AnyMessage) -> bytes:
    """Encode ``message`` to one frame.

    Raises:
        FrameTooLarge: the encoded frame exceeds :data:`proto.MAX_FRAME_SIZE` (the caller
            built a message too big to send; split it or trim it).
    """
    data = _encoder.encode(message)
    if len(data) > MAX_FRAME_SIZE:
        raise FrameTooLarge(f"encoded frame is {len(data)} bytes, over the {MAX_FRAME_SIZE} limit")
    return data


def decode(data: bytes | str, *, max_size: int = MAX_FRAME_SIZE) -> AnyMessage:
    """Decode one frame into a message.

    Raises:
        DecodeError: for anything that is not exactly one valid message, including frames
            over ``max_size``. The text names the problem, never the payload.
    """
    size = len(data) if isinstance(data, bytes) or len(data) * 4 <= max_size else \
        len(data.encode("utf-8", "surrogatepass"))
    if size > max_size:
        raise FrameTooLarge(f"frame of {size} bytes is over the {max_size} byte limit")
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"invalid message: {_safe(exc)}") from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise DecodeError("frame is not a JSON message (garbage or truncated)") from None
    except Exception as exc:  # msgspec may raise others on pathological input
        raise DecodeError(f"frame could not be decoded ({type(exc).__name__})") from None


def _safe(exc: msgspec.ValidationError) -> str:
    """Validation text with quoted values masked, so it names fields, never payload."""
    text = _UNKNOWN_FIELD.sub("unknown field", _QUOTED.sub("'…'", str(exc)))
    return text if len(text) <= 200 else text[:200] + "..."
