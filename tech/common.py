"""What every ``hw-tech`` command shares: the profile, one call to the server, signing a
command for a case, and printing (JSON, tables, times, agent-supplied text made safe).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import msgspec

from proto import messages as m
from proto.textsafe import printable, safe_json_dumps
from proto.timefmt import human_time

from .cliargs import CASE_RE as CASE_RE  # re-exported for the command modules
from .cliargs import case_number as case_number
from .client import Profile, TechClient
from .errors import TechError


def _profile(args: argparse.Namespace) -> Profile:
    home = getattr(args, "home", None) or os.environ.get("HW_HOME")
    if not home:
        raise TechError("no home directory: pass --home DIR or set HW_HOME")
    return Profile.load(Path(home))


def _call(args: argparse.Namespace, make: Callable[[str], Any]) -> Any:
    profile = _profile(args)

    async def go() -> Any:
        async with TechClient(profile) as client:
            return await client.call(make(client.new_id()))

    return asyncio.run(go())


def _act(args: argparse.Namespace, action: m.Action, cmd_args: dict[str, Any],
         make: Callable[[str, m.SignedCommand], Any]) -> Any:
    """Sign a command for the case's agent and send the request built by ``make``."""
    profile = _profile(args)

    async def go() -> Any:
        async with TechClient(profile) as client:
            agent_id = await client.agent_of(args.case)
            signed = client.sign(agent_id=agent_id, case=args.case, action=action,
                                 args=cmd_args)
            return await client.call(make(client.new_id(), signed))

    return asyncio.run(go())


def _dump(value: Any) -> None:
    """``--json`` output: control and format characters escaped as ``\\uXXXX``
    (:func:`proto.textsafe.safe_json_dumps`), so a hostile value cannot drive the terminal."""
    print(safe_json_dumps(msgspec.to_builtins(value)))


def _out(text: str, file: TextIO | None = None) -> None:
    """Print a line that may hold agent-supplied text, its control and format characters
    shown as escapes (:func:`proto.textsafe.printable`): a hostile agent must not drive or
    mislead the technician's terminal."""
    print(printable(text), file=file)


def _width(text: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _table(rows: list[list[str]], header: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[printable(str(c), keep_newlines=False) for c in r] for r in [header, *rows]]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths, strict=True))
              .rstrip())


def _when(dt: Any) -> str:
    """A time for the technician: their own local time with its UTC offset (``--json``
    keeps UTC)."""
    return human_time(dt)
