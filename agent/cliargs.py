"""What ``hw-agent``'s command modules share: the home directory, the event loop, the type
and bounds of every argument (argparse ``type=`` functions) and safe printing."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO

from proto.argtypes import FloatRange, IntRange, name_arg
from proto.textsafe import printable, safe_repr

from .errors import AgentError
from .home import AgentHome


def _home(args: argparse.Namespace) -> AgentHome:
    home = getattr(args, "home", None) or os.environ.get("HW_HOME")
    if not home:
        raise AgentError("no home directory: pass --home DIR or set HW_HOME")
    return AgentHome(Path(home))


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# -- argument types: every option's bounds in one place (docs/security.md#hostile-input) --

CASE_RE = re.compile(r"^HW-[0-9]{8}-[0-9]{4,6}\Z")
TICKET_RE = re.compile(r"^TK-[0-9]{8}-[0-9]{4,6}\Z")
RETRY_MIN = FloatRange(0, 600, "seconds")
RETRY_MAX = FloatRange(0, 3600, "seconds")
SLOT = IntRange(1, 3)  # proto.messages.TicketInfo: at most three slots
note_text = name_arg("note", 4096, min_length=0)
tech_name = name_arg("technician name", 128)  # proto.messages.Name


def case_number(text: str) -> str:
    """argparse type: a case number like HW-20261126-0007."""
    if not CASE_RE.match(text.strip().upper()):
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a case number (like "
                                         "HW-20261126-0007; `hw-agent help` prints yours)")
    return text.strip().upper()


def ticket_id(text: str) -> str:
    """argparse type: an on-site ticket like TK-20261126-0001."""
    if not TICKET_RE.match(text.strip().upper()):
        raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not an on-site ticket (like "
                                         "TK-20261126-0001; see `hw-agent visit show`)")
    return text.strip().upper()


def out(text: str, file: TextIO | None = None) -> None:
    """Print a line that may hold text from the server or a technician, its control and
    format characters shown as escapes (:func:`proto.textsafe.printable`)."""
    print(printable(text), file=file)


def scope_list(text: str) -> str:
    """argparse type: consent scopes separated by commas (checked here, passed on as given
    to the running agent, which parses them again)."""
    from proto.messages import Scope

    known = {s.value for s in Scope}
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in known]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            (f"unknown scope {safe_repr(unknown[0])}; " if unknown else "")
            + f"--scopes takes a comma-separated list of: {', '.join(sorted(known))}")
    return ",".join(dict.fromkeys(names))
