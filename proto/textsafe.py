"""Text that is safe to show on a terminal, and the checks for names typed at the CLIs.

A value that came from a peer (an agent's hostname, a case description, a finding) or from
the command line can hold characters that drive or mislead a terminal: C0 and C1 controls
(``ESC``, ``U+009B`` CSI, ``BEL``), bidirectional overrides (``U+202E``), zero-width and
other format characters. ``json.dumps(..., ensure_ascii=False)`` leaves C1 and format
characters raw, and ``print`` writes them as they are. Every CLI prints through this module:

- :func:`safe_json_dumps` for ``--json``: each unsafe code point becomes ``\\uXXXX`` (a
  surrogate pair above U+FFFF); the JSON decodes to the same values.
- :func:`printable` for human output: each unsafe code point is shown as its Python escape
  (``\\x1b``, ``\\u202e``), visible and inert.
- :func:`safe_repr` to echo a user's value in an error message.
- :func:`check_name` for names and short texts given on the command line: no unsafe
  characters, within a length (argparse ``type=`` helpers of each package call it).

"Unsafe" is one rule, :func:`is_unsafe`: Unicode categories Cc (controls), Cf (format:
bidi overrides and isolates, zero-width characters, the BOM), Cs (lone surrogates, which
cannot even be written as UTF-8), Zl and Zp (line and paragraph separators).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from typing import Any

__all__ = ["UNSAFE_CATEGORIES", "check_name", "is_unsafe", "printable", "safe_json_dumps",
           "safe_repr"]

UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

# Printable ASCII is never unsafe: only the other characters are looked up.
_CANDIDATE_RE = re.compile(r"[^\x20-\x7e]")


def is_unsafe(ch: str) -> bool:
    """Whether the one character ``ch`` may drive or mislead a terminal (see the module)."""
    return unicodedata.category(ch) in UNSAFE_CATEGORIES


def _replace(text: str, escape: Callable[[int], str], *, keep_newlines: bool) -> str:
    def one(match: re.Match[str]) -> str:
        ch = match.group(0)
        if (ch == "\n" and keep_newlines) or not is_unsafe(ch):
            return ch
        return escape(ord(ch))

    return _CANDIDATE_RE.sub(one, text)


def _first_unsafe(text: str) -> str | None:
    return next((ch for ch in _CANDIDATE_RE.findall(text) if is_unsafe(ch)), None)


def _json_escape(cp: int) -> str:
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    cp -= 0x10000
    return f"\\u{0xD800 | (cp >> 10):04x}\\u{0xDC00 | (cp & 0x3FF):04x}"


def safe_json_dumps(value: Any, *, indent: int | None = 2, **kw: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, indent=indent, **kw)`` with every unsafe code
    point written as a ``\\uXXXX`` escape.

    Other non-ASCII text (Chinese names) stays readable. Outside strings, JSON text holds
    only spaces, newlines and punctuation, and ``json`` already escapes C0 controls inside
    strings: so the only raw newline left is layout, kept as it is.
    """
    text = json.dumps(value, ensure_ascii=False, indent=indent, **kw)
    return _replace(text, _json_escape, keep_newlines=True)


def _show(cp: int) -> str:
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


def printable(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` for a terminal: every unsafe character shown as its escape (``\\x1b``,
    ``\\x9b``, ``\\u202e``), so it neither acts nor hides; newlines kept unless
    ``keep_newlines`` is false (a table cell)."""
    return _replace(text, _show, keep_newlines=keep_newlines)


def safe_repr(value: str, limit: int = 60) -> str:
    """A user's value quoted for an error message: ``repr`` (which escapes every unsafe
    character) of at most ``limit`` characters, with ``…`` when cut."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f"… ({len(value)} characters)"


def check_name(value: str, *, what: str, max_length: int, min_length: int = 1,
               strip: bool = True) -> str:
    """A name or short text from the command line, stripped of surrounding spaces.

    Raises:
        ValueError: empty (under ``min_length``), longer than ``max_length`` characters, or
            holding an unsafe character; the message names ``what`` and the limits, and
            quotes the value with :func:`safe_repr`.
    """
    text = value.strip() if strip else value
    if len(text) < min_length:
        raise ValueError(f"{what} must not be empty" if min_length == 1 else
                         f"{what} {safe_repr(value)} is shorter than {min_length} characters")
    if len(text) > max_length:
        raise ValueError(f"{what} is {len(text)} characters long; at most {max_length} "
                         f"are allowed ({safe_repr(value, 20)})")
    bad = _first_unsafe(text)
    if bad is not None:
        raise ValueError(f"{what} {safe_repr(value)} holds the control or format character "
                         f"U+{ord(bad):04X}; type it without")
    return text
