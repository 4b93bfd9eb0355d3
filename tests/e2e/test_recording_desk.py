"""The server's recording desk (server/recordings.py) under faults and races.

Real server process, real TLS; the agent is a raw websocket client proving an enrolled
agent's key (tests/e2e/test_recording_trust.py). The brokered tunnel a recording must name
is put in the store through the store's own API (what server/tunnel.py writes when it
brokers one), so no SSH session is needed to reach the checks under test.

- a damaged ``recording.pub`` holds recordings back as a missing one does (``internal``:
  they stay in the agent's outbox), logged once, the connection kept; installing a good key
  lets the resend through;
- concurrent connections of one agent cannot pass a recording quota together.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from proto import messages as m
from proto import sealed
from server.config import ServerConfig
from server.store import Store
from tests.e2e.test_recording_trust import _ask, _connect, _open_case, cast
from tests.harness import Harness

pytestmark = pytest.mark.e2e

TUNNEL = "tn-00000000deadbeef"


def _set(h: Harness, **settings: int) -> None:
    """Set ``settings`` in the server's config.toml (replaced if written, else added)."""
    cfg = h.server_home / "config.toml"
    text = cfg.read_text(encoding="utf-8")
    for key, value in settings.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        if not n:
            text += f"{key} = {value}\n"
    cfg.write_text(text, encoding="utf-8")


def _agent_with_tunnel(h: Harness) -> tuple[Path, str]:
    """An enrolled agent (no hw-agent running), a case of it, and tunnel :data:`TUNNEL` of
    alice to it on that case, on record as the tunnel broker records one."""
    home = h.enroll("A")
    case = asyncio.run(_open_case(h, home))
    db = sqlite3.connect(h.server_home / "store.db")
    try:
        (agent_id,) = db.execute("SELECT agent_id FROM cases WHERE number = ?", (case,)
                                 ).fetchone()
    finally:
        db.close()

    async def broker() -> None:
        store = await Store.open(ServerConfig.load(h.server_home).db_url)
        try:
            await store.tunnel_opened(tunnel_id=TUNNEL, agent_id=agent_id, case=case,
                                      tech="alice", key_fingerprint="SHA256:test",
                                      now=datetime.now(UTC) - timedelta(seconds=5))
        finally:
            await store.close()

    asyncio.run(broker())
    return home, case


def _rec(rid: str, case: str, size: int = 0) -> m.Recording:
    now = datetime.now(UTC)
    return m.Recording(id=rid, case=case, tech="alice", kind=m.RecordingKind.SHELL,
                       started_at=now - timedelta(seconds=1), ended_at=now,
                       data=cast(size=size), tunnel=TUNNEL)


def _stored(h: Harness) -> list[str]:
    db = sqlite3.connect(h.server_home / "store.db")
    try:
        return [r[0] for r in db.execute("SELECT recording_id FROM recordings")]
    finally:
        db.close()


def _held_back(reply: m.AnyMessage) -> bool:
    return (isinstance(reply, m.Error) and reply.code is m.ErrorCode.INTERNAL
            and "outbox" in reply.message)


def test_a_damaged_recording_key_holds_recordings_back_without_dropping_the_agent(
        harness: Harness, tmp_path: Path) -> None:
    h = harness
    h.init_server()
    (h.server_home / "recording.pub").write_text("-----BEGIN PUBLIC KEY-----\ndamaged\n")
    server = h.start_server()
    home, case = _agent_with_tunnel(h)

    async def one_connection(*msgs: m.Recording) -> list[m.AnyMessage]:
        ws, s = await _connect(h, home)
        try:
            replies = [await _ask(ws, s, msg) for msg in msgs]
            # the connection still serves the agent's other messages
            replies.append(await _ask(ws, s, m.OpenCase(id="oc-after", description="x")))
            return replies
        finally:
            await ws.close()

    first = asyncio.run(one_connection(_rec("rec-dmg1", case), _rec("rec-dmg2", case)))
    assert _held_back(first[0]) and _held_back(first[1]), first
    assert isinstance(first[2], m.CaseOpened), first[2]
    (again, _) = asyncio.run(one_connection(_rec("rec-dmg1", case)))  # the resend
    assert _held_back(again), again
    assert _stored(h) == [], "nothing stored unsealed"
    log = server.text()
    assert log.count("cannot use the recording key") == 1, "logged once, not per recording"
    assert "recording-key" in log and "--replace" in log  # what to do
    assert "Traceback" not in log
    # The operator installs a good key: the agent's resend goes through, sealed.
    good = tmp_path / "recording.pub"
    good.write_bytes(sealed.public_pem(X25519PrivateKey.generate().public_key()))
    h.run("hw-server", "recording-key", "--home", str(h.server_home), "--replace",
          "--pub", str(good))
    (kept, _) = asyncio.run(one_connection(_rec("rec-dmg1", case)))
    assert isinstance(kept, m.Ack), kept
    assert _stored(h) == ["rec-dmg1"]


def test_concurrent_connections_of_one_agent_cannot_pass_a_quota_together(
        harness: Harness) -> None:
    h = harness
    h.init_server()
    # 8 call sessions of one agent at once: above the default cap of 4 calls (a rogue agent
    # is held to it; here the lock is what is tested)
    _set(h, recordings_per_tunnel=1, max_calls_per_agent=8)
    h.start_server()
    home, case = _agent_with_tunnel(h)
    n = 8

    async def race() -> list[m.AnyMessage]:
        conns = await asyncio.gather(*[_connect(h, home) for _ in range(n)])
        try:
            return list(await asyncio.gather(*[
                _ask(ws, s, _rec(f"rec-race{i}", case, size=200_000))
                for i, (ws, s) in enumerate(conns)]))
        finally:
            await asyncio.gather(*[ws.close() for ws, _ in conns])

    replies = asyncio.run(race())
    acks = [r for r in replies if isinstance(r, m.Ack)]
    assert len(acks) == 1, replies
    assert all(isinstance(r, m.Error) and r.code is m.ErrorCode.REFUSED
               and "recordings_per_tunnel" in r.message
               for r in replies if not isinstance(r, m.Ack)), replies
    assert len(_stored(h)) == 1
