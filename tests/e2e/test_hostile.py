"""Hostile and broken peers against a real server: each gets a documented close code,
everyone else keeps being served, nothing is written to the store."""

from __future__ import annotations

import sqlite3
import ssl
from pathlib import Path

import pytest
from conftest import Running
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from proto import MAX_FRAME_SIZE, codec
from proto import messages as m
from proto.errors import CloseCode

pytestmark = pytest.mark.e2e

TABLES = ("customers", "enroll_tokens", "agents", "technicians", "cases", "case_events",
          "results")


def counts(home: Path) -> dict[str, int]:
    db = sqlite3.connect(home / "store.db")
    try:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        db.close()


async def open_raw(running: Running, path: str = "/agent") -> ClientConnection:
    ctx = ssl.create_default_context(cafile=str(running.h.server_home / "ca.crt"))
    return await connect(f"wss://127.0.0.1:{running.h.port}{path}", ssl=ctx,
                         compression=None, max_size=None)


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(5):
            await ws.recv()
    assert info.value.rcvd is not None, "the server must send a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


def hello(**kw: object) -> bytes:
    fields: dict[str, object] = {"role": m.Role.AGENT, "min_version": 1, "max_version": 1,
                                 "software": "test", "agent_id": "ag-0000"}
    fields.update(kw)
    return codec.encode(m.Hello(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(("frame", "code", "words"), [
    (b"\x00\xff garbage \x13", CloseCode.MALFORMED, "not a JSON message"),
    (codec.encode(m.Bye())[:-3], CloseCode.MALFORMED, "not a JSON message"),
    (b'{"type":"hello","role":"agent","min_version":1,"max_version":1,"software":"x",'
     b'"agent_id":"a","evil":"s3cret-payload"}', CloseCode.MALFORMED, "invalid message"),
    (b'{"type":"no_such_message"}', CloseCode.MALFORMED, "invalid message"),
    (None, CloseCode.UNSUPPORTED_VERSION, "upgrade the server"),
    (codec.encode(m.Proof(signature=b"s" * 64)), CloseCode.PROTOCOL_VIOLATION, "not allowed"),
    (b"big", CloseCode.MESSAGE_TOO_BIG, ""),
    (b"unknown-agent", CloseCode.AUTH_FAILED, "enroll again"),
])
async def test_bad_frames_close_with_documented_codes(
        running: Running, frame: bytes | None, code: CloseCode, words: str) -> None:
    before = counts(running.h.server_home)
    if frame is None:  # an agent newer than this server
        frame = hello(min_version=7, max_version=9)
    ws = await open_raw(running)
    if frame == b"big":
        await ws.send(b"{" + b" " * (MAX_FRAME_SIZE + 10) + b"}", text=True)
    elif frame == b"unknown-agent":
        await ws.send(hello(agent_id="ag-ffffffffffffffffffff"), text=True)
    else:
        await ws.send(frame, text=True)
    got, reason = await closed_with(ws)
    assert got == code
    assert words in reason
    assert "s3cret" not in reason
    assert counts(running.h.server_home) == before
    # Everyone else is still served.
    assert running.h.tech_json(running.tech, "agents")[0]["online"] is True


async def test_silent_connection_is_dropped_after_the_handshake_timeout(
        running: Running) -> None:
    ws = await open_raw(running)
    code, reason = await closed_with(ws)  # the fixture's server has handshake_timeout = 3 s
    assert code == CloseCode.HANDSHAKE_TIMEOUT
    assert "handshake not completed" in reason


async def test_technician_path_refuses_agents(running: Running) -> None:
    ws = await open_raw(running, "/tech")
    await ws.send(hello(), text=True)
    code, reason = await closed_with(ws)
    assert code == CloseCode.PROTOCOL_VIOLATION and "technicians" in reason


async def test_agent_cannot_write_into_anothers_case(running: Running) -> None:
    """An authenticated agent sending a result for a case it does not own is refused."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from proto.session import ClientSession

    h = running.h
    home = h.enroll("INTRUDER", customer="Mallory")
    import json

    state = json.loads((home / "agent.json").read_text())
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((home / "agent.key").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    before = counts(h.server_home)
    ws = await open_raw(running)
    s = ClientSession(role=m.Role.AGENT, identity=state["agent_id"])
    await ws.send(s.hello(software="test"), text=True)
    s.receive(await ws.recv(decode=False))
    await ws.send(s.prove(key.sign(s.proof_payload())), text=True)
    s.receive(await ws.recv(decode=False))
    await ws.send(s.send(m.Result(id="rs-forged", re="rq-x", case=running.case,
                                  action=m.Action.DIAG, ok=True)), text=True)
    reply = s.receive(await ws.recv(decode=False))
    while isinstance(reply, m.Revocations | m.SignedRevocations):  # pushed after welcome
        reply = s.receive(await ws.recv(decode=False))
    assert isinstance(reply, m.Error) and reply.code is m.ErrorCode.REFUSED
    await ws.close()
    assert counts(h.server_home)["results"] == before["results"]
