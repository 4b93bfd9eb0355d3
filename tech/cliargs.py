"""The type and bounds of every ``hw-tech`` argument (argparse ``type=`` functions).

Each bound is what the protocol accepts (``proto/messages.py``), so a bad value is a usage
error (exit 2) here rather than a connection the server closes; names and texts with a
control or format character are refused (``proto/textsafe.py``).
"""

from __future__ import annotations

import argparse
import re
from datetime import date, datetime
from typing import Any

from proto import messages as m
from proto.argtypes import FloatRange, IntRange, name_arg
from proto.textsafe import check_name, safe_repr

CASE_RE = re.compile(r"^HW-[0-9]{8}-[0-9]{4,6}$")
TICKET_RE = re.compile(r"^TK-[0-9]{8}-[0-9]{4,6}$")
_ID_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,64}\Z")
_CODE_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+\Z")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")

TIMEOUT = FloatRange(0, 600, "seconds")  # proto.messages.Timeout
SATISFACTION = IntRange(1, 5)
page_size = IntRange(1, m.CASE_PAGE, "cases")  # hw-tech cases --limit
page_offset = IntRange(0, 2**31, "cases")  # hw-tech cases --offset (a next_offset)
timeout_seconds = TIMEOUT  # argparse type: how long to wait, more than 0 up to 600 s
satisfaction = SATISFACTION  # argparse type: 1 (poor) to 5 (excellent)
MAX_MINUTES = 7 * 24 * 60
JSON_INT = 2**53  # fixer arguments travel as JSON numbers: exact up to 2**53

customer_name = name_arg("customer name", 128)  # proto.messages.Name
case_state = name_arg("case state", 64)
service_name = name_arg("service", 128)
reason_text = name_arg("reason", 4096)
note_text = name_arg("note", 4096, min_length=0)
accepted_by = name_arg("--accepted-by", 128)


def case_number(text: str) -> str:
    """argparse type: a case number like HW-20261126-0007 (a usage error otherwise)."""
    if not CASE_RE.match(text):
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a case number (like "
                                         "HW-20261126-0007; see `hw-tech cases`)")
    return text


def any_case_number(text: str) -> str:
    """argparse type for SSH host names: ``hw-…`` in any case is the case number."""
    return case_number(text.upper())


def ticket_id(text: str) -> str:
    """argparse type: a ticket like TK-20261126-0001."""
    if not TICKET_RE.match(text):
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a ticket (like "
                                         "TK-20261126-0001; see `hw-tech tickets`)")
    return text


def recording_id(text: str) -> str:
    """argparse type: a recording id as `hw-tech recording --list` shows it."""
    if not _ID_RE.match(text):
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a recording id (see "
                                         "`hw-tech recording CASE --list`)")
    return text


def fixer_code(text: str) -> str:
    """argparse type: a fixer or finding code like disk.cleanup."""
    if len(text) > 64 or not _CODE_RE.match(text):
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a fixer or finding code "
                                         "(like disk.cleanup; see `hw-tech plugins CASE`)")
    return text


def probe_list(text: str) -> list[str]:
    """argparse type: probe names separated by commas."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names or len(names) > 128 or any(len(n) > 64 or not _ID_RE.match(n)
                                            for n in names):
        raise argparse.ArgumentTypeError("--probes takes probe names (up to 64 characters "
                                         "each) separated by commas; see `hw-tech plugins`")
    return names


def scope_list(text: str) -> list[str]:
    """argparse type: consent scopes separated by commas."""
    known = {s.value for s in m.Scope}
    scopes = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in scopes if s not in known]
    if not scopes or unknown:
        raise argparse.ArgumentTypeError(
            (f"unknown scope {safe_repr(unknown[0])}; " if unknown else "")
            + f"--scopes takes a comma-separated list of: {', '.join(sorted(known))}")
    return scopes


def minutes(text: str) -> float:
    """argparse type: ``20m``, ``1h``, ``90s`` or plain minutes; at most 7 days."""
    units = {"s": 1 / 60, "m": 1.0, "h": 60.0}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a duration like 20m or "
                                         "1h") from None
    if not 0 < value <= MAX_MINUTES:  # also NaN
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is out of range: give more "
                                         f"than 0 and at most 7 days ({MAX_MINUTES}m)")
    return value


def fix_arg(text: str) -> tuple[str, Any]:
    """argparse type: ``KEY=VALUE``; integers stay integers (within ±2**53)."""
    key, sep, value = text.partition("=")
    if not sep or not _KEY_RE.match(key):
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not KEY=VALUE")
    try:
        check_name(value, what=f"--arg {key}", max_length=4096, min_length=0, strip=False)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    digits = value[1:] if value[:1] == "-" else value
    if not (digits.isascii() and digits.isdigit()):
        return key, value
    if len(digits) > 16 or not -JSON_INT <= int(value) <= JSON_INT:
        raise argparse.ArgumentTypeError(f"--arg {key}: {value[:8]}… is out of range; whole "
                                         f"numbers go from -{JSON_INT} to {JSON_INT}")
    return key, int(value)


def slot_time(text: str) -> datetime:
    """argparse type: an ISO date-time from 2000 to 2099; without an offset it is China time
    (+08:00)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a date-time like "
                                         "2026-12-02T10:00 or 2026-12-02T10:00+08:00") from None
    if not date(2000, 1, 1) <= when.date() <= date(2099, 12, 31):
        raise argparse.ArgumentTypeError(f"{text} is out of range; give a date-time from "
                                         "2000 to 2099")
    if when.tzinfo is None:
        when = datetime.fromisoformat(text + "+08:00")
    return when


def yes_no(text: str) -> bool:
    """argparse type: yes or no."""
    if text.lower() in ("yes", "y", "true"):
        return True
    if text.lower() in ("no", "n", "false"):
        return False
    raise argparse.ArgumentTypeError(f"{safe_repr(text)}: answer yes or no")


def tech_name(text: str) -> str:
    """argparse type: a technician name as `hw-server tech add` makes them."""
    if not re.fullmatch(r"[a-z][a-z0-9._-]{0,63}", text):
        raise argparse.ArgumentTypeError(
            f"{safe_repr(text)} is not a technician name: 1-64 lower-case letters, digits, "
            "'.', '_' or '-', starting with a letter")
    return text
