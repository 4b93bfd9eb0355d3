"""Validation of session recordings as they arrive (sans-I/O).

Two kinds (:class:`proto.messages.RecordingKind`), both UTF-8 text of JSON lines, each line
ending in ``\\n``:

- ``shell``: asciicast v2. The first line is the header object: ``version`` 2, ``width`` and
  ``height`` positive integers (at most :data:`MAX_SIZE`); optional ``timestamp`` (integer),
  ``title`` (string), ``env`` (object of strings), ``command`` (string),
  ``idle_time_limit`` (number). Every later line is an event ``[time, code, data]``: ``time``
  a non-negative number, never smaller than the one before; ``code`` one of ``o`` (output),
  ``i`` (input), ``r`` (resize, data ``WxH``), ``m`` (marker); ``data`` a string.
- ``sftp``: one object per line: ``{"t": time, "op": OP, "path": str, ...}`` with ``OP`` one
  of ``read``/``write`` (with integer ``bytes`` >= 0), ``remove``, ``rename`` (with string
  ``to``), ``mkdir``, ``rmdir``; or the closing ``{"op": "truncated"}`` as the last line.

:func:`validate` raises :class:`RecordingInvalid` naming the first bad line and what is
wrong with it (never its content). Validation checks the structure only: what a ``data``
string holds (escape sequences included) is the reader's to render safely; ``hw-tech
recording`` therefore refuses to write a recording to a terminal.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["EVENT_CODES", "MAX_SIZE", "SFTP_OPS", "RecordingInvalid", "validate"]

#: Largest terminal width or height accepted in a header or a resize event.
MAX_SIZE = 10_000
EVENT_CODES = frozenset({"o", "i", "r", "m"})
SFTP_OPS = frozenset({"read", "write", "remove", "rename", "mkdir", "rmdir"})
_RESIZE = re.compile(r"^([0-9]{1,5})x([0-9]{1,5})$")
_HEADER_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "timestamp": int, "title": str, "env": dict, "command": str,
    "idle_time_limit": (int, float), "theme": dict,
}


class RecordingInvalid(ValueError):
    """The recording is not well-formed; the text names the line and the problem."""


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _lines(data: bytes) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordingInvalid(f"not UTF-8 text (bad byte at offset {exc.start})") from None
    if not text:
        raise RecordingInvalid("empty recording")
    if not text.endswith("\n"):
        raise RecordingInvalid("the last line does not end with a newline (cut short?)")
    return text[:-1].split("\n")


def _json(line: str, n: int) -> Any:
    try:
        return json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise RecordingInvalid(f"line {n} is not JSON") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SIZE


def _header(obj: Any) -> None:
    if not isinstance(obj, dict):
        raise RecordingInvalid("line 1 (the header) is not a JSON object")
    if obj.get("version") != 2 or isinstance(obj.get("version"), bool):
        raise RecordingInvalid("line 1 (the header) does not say version 2")
    for name in ("width", "height"):
        if not _size(obj.get(name)):
            raise RecordingInvalid(f"line 1 (the header): {name} is not an integer in "
                                   f"1..{MAX_SIZE}")
    for name, kind in _HEADER_OPTIONAL.items():
        if name in obj and (not isinstance(obj[name], kind) or isinstance(obj[name], bool)):
            raise RecordingInvalid(f"line 1 (the header): {name} has the wrong type")
    env = obj.get("env", {})
    if not all(isinstance(k, str) and isinstance(v, str | None) for k, v in env.items()):
        raise RecordingInvalid("line 1 (the header): env is not an object of strings")


def _shell(lines: list[str]) -> None:
    _header(_json(lines[0], 1))
    last = 0.0
    for n, line in enumerate(lines[1:], start=2):
        event = _json(line, n)
        if not isinstance(event, list) or len(event) != 3:
            raise RecordingInvalid(f"line {n} is not an event [time, code, data]")
        when, code, data = event
        if not _number(when):
            raise RecordingInvalid(f"line {n}: the time is not a non-negative number")
        if when < last:
            raise RecordingInvalid(f"line {n}: the time goes backwards")
        last = float(when)
        if not isinstance(code, str) or code not in EVENT_CODES:
            raise RecordingInvalid(f"line {n}: the event code is not one of "
                                   f"{', '.join(sorted(EVENT_CODES))}")
        if not isinstance(data, str):
            raise RecordingInvalid(f"line {n}: the event data is not a string")
        if code == "r":
            size = _RESIZE.match(data)
            if size is None or not all(int(g) <= MAX_SIZE for g in size.groups()):
                raise RecordingInvalid(f"line {n}: a resize event's data is not WxH")


def _sftp(lines: list[str]) -> None:
    for n, line in enumerate(lines, start=1):
        op = _json(line, n)
        if not isinstance(op, dict):
            raise RecordingInvalid(f"line {n} is not a JSON object")
        if op == {"op": "truncated"}:
            if n != len(lines):
                raise RecordingInvalid(f"line {n}: the truncation note is not the last line")
            continue
        name = op.get("op")
        if not isinstance(name, str) or name not in SFTP_OPS:
            raise RecordingInvalid(f"line {n}: op is not one of {', '.join(sorted(SFTP_OPS))}")
        if not _number(op.get("t")) or not isinstance(op.get("path"), str):
            raise RecordingInvalid(f"line {n}: t (seconds) or path (string) is missing")
        allowed = {"t", "op", "path"}
        if name in ("read", "write"):
            allowed.add("bytes")
            count = op.get("bytes")
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise RecordingInvalid(f"line {n}: a {name} needs bytes, an integer >= 0")
        elif name == "rename":
            allowed.add("to")
            if not isinstance(op.get("to"), str):
                raise RecordingInvalid(f"line {n}: a rename needs to, a string")
        extra = sorted(set(op) - allowed)
        if extra:
            raise RecordingInvalid(f"line {n}: unknown field(s) for {name}: {len(extra)}")


def validate(kind: str, data: bytes) -> None:
    """Check ``data`` is a well-formed recording of ``kind`` (``shell`` or ``sftp``).

    Raises:
        RecordingInvalid: the first problem found (line number and what is wrong).
    """
    lines = _lines(data)
    if kind == "shell":
        _shell(lines)
    elif kind == "sftp":
        _sftp(lines)
    else:
        raise RecordingInvalid(f"unknown recording kind {kind!r}")
