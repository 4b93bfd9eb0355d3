"""The local control socket: how the customer's own commands reach the running agent.

``hw-agent consent grant|status|revoke`` connect to ``<home>/control.sock``, a Unix socket
in the agent's home (directory 0700, socket 0600): only the agent's user can use it. One
JSON object per line each way. Not available on Windows yet (no Unix sockets there in
asyncio); the terminal prompt and the policy file still work.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .errors import AgentError, ControlError

SOCKET_NAME = "control.sock"
MAX_LINE = 64 * 1024

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve_control(home: Path, handler: Handler) -> asyncio.AbstractServer | None:
    """Listen on the home's control socket; ``None`` where Unix sockets are unavailable."""
    if sys.platform == "win32":
        return None
    path = _prepare(home)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError
                reply = await handler(request)
            except (ValueError, UnicodeDecodeError):
                reply = {"ok": False, "error": "the request is not one JSON object per line"}
            except AgentError as exc:
                reply = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(reply, ensure_ascii=False).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(client, path=str(path), limit=MAX_LINE)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return server


def _prepare(home: Path) -> Path:
    """Owner-only home, no stale socket file; returns the socket path."""
    path = home / SOCKET_NAME
    path.unlink(missing_ok=True)
    home.chmod(0o700)
    return path


async def call(home: Path, request: dict[str, Any], *, reply_within: float = 300.0
               ) -> dict[str, Any]:
    """Send one request to the running agent and return its reply."""
    path = home / SOCKET_NAME
    if sys.platform == "win32":
        raise ControlError("the control socket is not available on Windows yet")
    try:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(f"no running agent for {home}; start `hw-agent run --home {home}` "
                           "first") from None
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), reply_within)
    finally:
        writer.close()
    if not line:
        raise ControlError("the agent closed the control connection without answering")
    reply = json.loads(line)
    if not isinstance(reply, dict):
        raise ControlError("the agent sent an unexpected reply")
    return reply
