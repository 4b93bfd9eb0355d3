"""What ``hw-agent``'s command modules share: the home directory and the event loop."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

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
