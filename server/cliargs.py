"""What ``hw-server``'s command modules share: the home directory and the event loop."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from .errors import ServerError


def _home(args: argparse.Namespace) -> Path:
    home = args.home or os.environ.get("HW_HOME")
    if not home:
        raise ServerError("no home directory: pass --home DIR or set HW_HOME")
    return Path(home)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # Windows: the stock asyncio loop
        return asyncio.run(coro)
    return uvloop.run(coro)
