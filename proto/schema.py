"""JSON Schema of every message, built from the structs (``docs/protocol.md#messages``).

The schema is derived, never written by hand: :func:`message_schema` asks msgspec for the
schema of :data:`proto.messages.AnyMessage` (and of the enrollment token), so it says
exactly what :func:`proto.codec.decode` accepts. ``docs/protocol.schema.json`` is its
committed rendering; a test fails when that file is stale.

Sans-I/O like the rest of ``proto``: the command line that prints or writes the file is
``docs/make_schema.py`` (``make schema``).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import msgspec

from . import MAX_FRAME_SIZE, MAX_VERSION, MIN_VERSION
from .messages import AnyMessage
from .token import PREFIX, EnrollToken

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def message_schema() -> dict[str, Any]:
    """The JSON Schema of one frame: any message, discriminated by ``"type"``.

    Every struct (messages, nested values, enums, and the enrollment token's JSON body,
    ``EnrollToken``) is a component under ``$defs``. Keys are sorted at every level and
    docstrings are normalised with :func:`inspect.cleandoc`, so the result is the same on
    every Python version and run.
    """
    (frame, token), defs = msgspec.json.schema_components((AnyMessage, EnrollToken))
    schema: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT,
        "title": "HelloWord Remote Support wire protocol",
        "description": (
            "One websocket text frame carries one JSON object matching this schema; the "
            "\"type\" field names the message. Bytes fields are standard base64 with "
            "padding. See docs/protocol.md."
        ),
        **frame,
        "$defs": defs,
        "x-helloword": {
            "min_version": MIN_VERSION,
            "max_version": MAX_VERSION,
            "max_frame_size": MAX_FRAME_SIZE,
            "enroll_token": {
                "description": (
                    f"An enrollment token is {PREFIX!r} followed by unpadded base64url of "
                    "a JSON object matching this schema (docs/protocol.md#enrollment-token)."
                ),
                "prefix": PREFIX,
                "schema": token,
            },
        },
    }
    normalised: dict[str, Any] = _normalise(schema)
    return normalised


def render(schema: dict[str, Any]) -> str:
    """Pretty JSON as committed: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _normalise(value: Any) -> Any:
    """Sort object keys recursively and clean docstring indentation out of descriptions."""
    if isinstance(value, dict):
        out = {}
        for key in sorted(value):
            item = value[key]
            if key == "description" and isinstance(item, str):
                item = inspect.cleandoc(item)
            out[key] = _normalise(item)
        return out
    if isinstance(value, list):
        return [_normalise(item) for item in value]
    return value
