"""A busy server answers agents 503 with Retry-After at once, and the agent reads it (a real
server and real TLS connections; the gate's arithmetic is in test_admission.py)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agent.connection import open_ws
from agent.errors import Unreachable
from server import cli
from server.app import Server
from server.config import ServerConfig
from server.store import Store


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "S"
    assert cli.main(["init", "--home", str(home), "--listen", "127.0.0.1:0"]) == 0
    return home


@pytest.fixture
async def server(home: Path) -> AsyncIterator[Server]:
    cfg = ServerConfig.load(home)
    store = await Store.open(cfg.db_url)
    srv = Server(cfg, store)
    ws_server = await srv.start()
    try:
        yield srv
    finally:
        await srv.shutdown(ws_server)
        ws_server.close()
        await ws_server.wait_closed()
        await srv.writer.close()
        await store.close()


def _client_ctx(home: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=home / "ca.crt")
    return ctx


async def test_a_busy_server_answers_503_with_retry_after_and_the_agent_reads_it(
        server: Server) -> None:
    server._gate.limit = 1
    ctx = _client_ctx(server.cfg.home)
    url = f"wss://127.0.0.1:{server.port}/agent"
    slow = await connect(url, ssl=ctx)  # in its handshake: never says hello
    try:
        with pytest.raises(Unreachable) as refused:
            await open_ws(url, ctx)
        assert refused.value.retry_after is not None and refused.value.retry_after >= 1
        assert "busy" in str(refused.value) and "retry" in str(refused.value)
    finally:
        await slow.close()
    await _slots_free(server)  # the server notices the close, the slot is free again
    ok = await open_ws(url, ctx)
    await ok.close()
    await _slots_free(server)
    # technicians are not subject to the agents' limit
    held = await connect(url, ssl=ctx)
    try:
        tech = await connect(f"wss://127.0.0.1:{server.port}/tech", ssl=ctx)
        await tech.close()
    finally:
        await held.close()


async def _slots_free(server: Server) -> None:
    for _ in range(200):
        if server._gate.in_progress == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the handshake slot was not freed after the connection closed")


async def test_technician_handshakes_have_their_own_gate(server: Server) -> None:
    """A flood of /tech handshakes is answered 503 + Retry-After like the agents', and an
    agent still gets in: neither takes the other's places."""
    server.node.tech_gate.limit = server.node.tech_gate.per_peer = 1
    ctx = _client_ctx(server.cfg.home)
    base = f"wss://127.0.0.1:{server.port}"
    slow = await connect(f"{base}/tech", ssl=ctx)  # in its handshake: never says hello
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{base}/tech", ssl=ctx)
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"]
        assert b"technician" in refused.value.response.body
        agent = await open_ws(f"{base}/agent", ctx)
        await agent.close()
    finally:
        await slow.close()
    for _ in range(200):  # the place is free again once the connection is gone
        if server.node.tech_gate.in_progress == 0:
            break
        await asyncio.sleep(0.05)
    tech = await connect(f"{base}/tech", ssl=ctx)
    await tech.close()
