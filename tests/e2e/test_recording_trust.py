"""Issue 13, recordings: the server takes no agent's word on them.

Real server and agent processes, real TLS, real SSH tunnels; the hostile agent is a raw
websocket client that proves an enrolled agent's key (its own, or the honest agent's
stolen one) and sends whatever ``recording`` frames it likes.

- break 2(b): a recording for a tunnel the server never brokered is refused and audited;
  one for a real tunnel is attributed from the server's record (technician, key), never
  from the message; a v2 agent (no tunnel field) is matched strictly or refused;
- break 2(c): per-tunnel, per-minute and per-hour-bytes quotas, with a clear refusal that
  the agent's outbox takes as final, audited once a minute during a flood;
- break 3: malformed recordings are refused on arrival; ``hw-tech recording`` never writes
  to a terminal (exit 2) unless ``--raw``, and ``--out`` writes 0600;
- sealed at rest: the store holds no session bytes; ``hw-tech`` opens them with the
  recording key (the server runs without it), says what to do without it or with a wrong
  one; a plaintext row from an older store still reads, marked as not encrypted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pty
import re
import shutil
import sqlite3
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from websockets.asyncio.client import ClientConnection, connect

from proto import messages as m
from proto import sealed
from proto.session import ClientSession
from tests.harness import BIN, Harness, Proc, wait_until

pytestmark = pytest.mark.e2e

MARKER_CMD = "echo sec$((40+2))ret"  # the session prints sec42ret; the command line does not
MARKER = b"sec42ret"


@dataclass
class World:
    h: Harness
    server: Proc
    home: Path          # the honest agent's home
    agent: Proc
    case: str
    alice: Path
    bob: Path
    rogue: Path         # a second enrolled agent, no hw-agent running: the hostile one
    rogue_case: str


def _configure(h: Harness, **settings: int) -> None:
    path = h.server_home / "config.toml"
    text = path.read_text(encoding="utf-8")
    for key, value in settings.items():  # replaced where init wrote it, else added
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        if not n:
            text += f"{key} = {value}\n"
    path.write_text(text, encoding="utf-8")


def _setup(h: Harness, tmp_path: Path, **settings: int) -> World:
    init = h.run("hw-server", "init", "--home", str(h.server_home), "--listen",
                 f"127.0.0.1:{h.port}").stdout
    assert "move it OFF this server" in init and "offline/recording.key" in init
    _configure(h, **settings)
    key = h.server_home / "offline" / "recording.key"
    assert key.stat().st_mode & 0o777 == 0o600 and (h.server_home / "recording.pub").is_file()
    server = h.start_server()
    home = h.enroll("A")
    user_home = tmp_path / "customer-home"
    user_home.mkdir(exist_ok=True)
    agent = h.start_agent(home, env={"HOME": str(user_home), "SHELL": "/bin/sh"})
    case = h.help(home).splitlines()[0]
    # bob reads recordings as an auditor (recordings are readable by the session's technician,
    # supervisors and auditors only)
    alice, bob = h.add_tech("alice"), h.add_tech("bob", roles=("remote", "auditor"))
    # The auditors' key goes to alice, off the server: the server runs without it.
    shutil.move(key, alice / "recording.key")
    rogue = h.enroll("ROGUE", customer="Mallory")
    rogue_case = asyncio.run(_open_case(h, rogue))
    return World(h, server, home, agent, case, alice, bob, rogue, rogue_case)


# -- a raw agent connection -----------------------------------------------------------


async def _connect(h: Harness, home: Path, versions: tuple[int, int] = (1, 3)
                   ) -> tuple[ClientConnection, ClientSession]:
    state = json.loads((home / "agent.json").read_text())
    key = serialization.load_pem_private_key((home / "agent.key").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    ctx = ssl.create_default_context(cafile=str(h.server_home / "ca.crt"))
    ws = await connect(f"wss://127.0.0.1:{h.port}/agent", ssl=ctx, compression=None,
                       max_size=None)
    s = ClientSession(role=m.Role.AGENT, identity=state["agent_id"], versions=versions)
    await ws.send(s.hello(software="test", mode=m.Mode.CALL), text=True)
    s.receive(await ws.recv(decode=False))
    await ws.send(s.prove(key.sign(s.proof_payload())), text=True)
    s.receive(await ws.recv(decode=False))
    return ws, s


async def _ask(ws: ClientConnection, s: ClientSession, msg: m.AnyMessage) -> m.AnyMessage:
    await ws.send(s.send(msg), text=True)
    while True:
        reply = s.receive(await ws.recv(decode=False))
        if not isinstance(reply, m.Revocations | m.SignedRevocations | m.Ping):
            return reply


async def _open_case(h: Harness, home: Path) -> str:
    ws, s = await _connect(h, home)
    try:
        reply = await _ask(ws, s, m.OpenCase(id="oc-rogue", description="rogue"))
    finally:
        await ws.close()
    assert isinstance(reply, m.CaseOpened)
    return reply.case


async def _send_all(h: Harness, home: Path, msgs: list[m.Recording],
                    versions: tuple[int, int] = (1, 3)) -> list[m.AnyMessage]:
    ws, s = await _connect(h, home, versions)
    try:
        return [await _ask(ws, s, msg) for msg in msgs]
    finally:
        await ws.close()


def _send(w: World, home: Path, *msgs: m.Recording, versions: tuple[int, int] = (1, 3)
          ) -> list[m.AnyMessage]:
    return asyncio.run(_send_all(w.h, home, list(msgs), versions))


def cast(text: str = "hello\r\n", size: int = 0) -> bytes:
    head = {"version": 2, "width": 80, "height": 24}
    out = [json.dumps(head), json.dumps([0.1, "o", text])]
    if size:
        out.append(json.dumps([0.2, "o", "x" * size]))
    return ("\n".join(out) + "\n").encode()


def rec(rid: str, case: str, *, tunnel: str | None, tech: str = "alice",
        data: bytes | None = None, started: datetime | None = None) -> m.Recording:
    now = datetime.now(UTC)
    return m.Recording(id=rid, case=case, tech=tech, kind=m.RecordingKind.SHELL,
                       started_at=started or now, ended_at=now,
                       data=cast() if data is None else data, tunnel=tunnel)


def refused(reply: m.AnyMessage, words: str) -> bool:
    return (isinstance(reply, m.Error) and reply.code is m.ErrorCode.REFUSED
            and words in reply.message)


# -- reading the server's store and audit ---------------------------------------------


def _db(w: World, query: str, *args: Any) -> list[Any]:
    db = sqlite3.connect(w.h.server_home / "store.db")
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


def _audit(w: World, event: str) -> list[dict[str, Any]]:
    out = w.h.run("hw-server", "audit", "show", "--home", str(w.h.server_home), "--json",
                  "--limit", "1000", check=False)
    if out.returncode != 0:  # an older audit show without --limit
        out = w.h.run("hw-server", "audit", "show", "--home", str(w.h.server_home), "--json")
    return [e for e in json.loads(out.stdout) if e["event"] == event]


def _listed(w: World, case: str) -> list[dict[str, Any]]:
    return list(w.h.tech_json(w.alice, "recording", case, "--list")["recordings"])


def _session(w: World, cmd: str = MARKER_CMD) -> str:
    """A real SSH session of alice on the honest agent; the tunnel id the server recorded,
    once its recording arrived."""
    before = {r[0] for r in _db(w, "SELECT tunnel_id FROM tunnels")}
    p = w.h.run("hw-tech", "--home", str(w.alice), "ssh", w.case, "--", cmd, check=False)
    assert p.returncode == 0, p.stderr
    new = wait_until(lambda: {r[0] for r in _db(w, "SELECT tunnel_id FROM tunnels")} - before,
                     what="the tunnel on record")
    (tunnel,) = new
    wait_until(lambda: _db(w, "SELECT 1 FROM recordings WHERE tunnel_id = ?", tunnel),
               what="the session's recording")
    return str(tunnel)


def _any_tunnel(w: World) -> str:
    """A tunnel on record (a real session first if there is none yet)."""
    rows = _db(w, "SELECT tunnel_id FROM tunnels ORDER BY opened_at LIMIT 1")
    return str(rows[0][0]) if rows else _session(w)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("rectrust")
    h = Harness(tmp)
    try:
        w = _setup(h, tmp)
        w.h.grant(w.home, w.case, "alice", scopes="shell")
        yield w
    finally:
        h.stop_all()


# -- break 2(b): only brokered tunnels, attributed from the server's record ------------


def test_a_recording_for_a_tunnel_that_never_existed_is_refused_and_audited(
        world: World) -> None:
    w = world
    forged = _send(w, w.rogue, rec("rec-forged1", w.rogue_case, tunnel=None),
                   rec("rec-forged2", w.rogue_case, tunnel="tn-00112233aabbccdd"))
    assert refused(forged[0], "brokered no tunnel"), forged[0]
    assert refused(forged[1], "did not broker"), forged[1]
    assert _listed(w, w.rogue_case) == []
    assert not _db(w, "SELECT 1 FROM recordings WHERE recording_id LIKE 'rec-forged%'")
    reasons = {(e["detail"]["recording"], e["detail"]["reason"])
               for e in _audit(w, "recording.refused")}
    assert {("rec-forged1", "no_such_tunnel"), ("rec-forged2", "no_such_tunnel")} <= reasons


def test_a_real_session_is_recorded_with_the_servers_attribution(world: World) -> None:
    w = world
    tunnel = _session(w)
    row = _db(w, "SELECT agent_id, case_number, tech, key_fingerprint, closed_at FROM "
                 "tunnels WHERE tunnel_id = ?", tunnel)[0]
    assert row[1:3] == (w.case, "alice") and row[3].startswith("SHA256:")
    listed = [r for r in _listed(w, w.case) if r["tunnel"] == tunnel]
    assert len(listed) == 1 and listed[0]["tech"] == "alice" and listed[0]["sealed"] is True
    # Another agent naming that real tunnel: not its tunnel.
    (other,) = _send(w, w.rogue, rec("rec-other", w.rogue_case, tunnel=tunnel))
    assert refused(other, "did not broker"), other
    # The honest agent's key, stolen: the tunnel is real, the attribution is a lie.
    lie, wrong_case, ok = _send(
        w, w.home, rec("rec-lie", w.case, tunnel=tunnel, tech="bob"),
        rec("rec-wrongcase", w.rogue_case, tunnel=tunnel),
        rec("rec-same-tunnel", w.case, tunnel=tunnel))
    assert refused(lie, "another technician"), lie
    assert refused(wrong_case, "did not broker"), wrong_case
    assert isinstance(ok, m.Ack), ok
    stored = _db(w, "SELECT tech, key_fingerprint, tunnel_id FROM recordings "
                    "WHERE recording_id = 'rec-same-tunnel'")
    assert stored == [("alice", row[3], tunnel)], "attribution from the tunnel's record"


def test_a_v2_agent_is_matched_strictly_to_one_tunnel(world: World) -> None:
    w = world
    if not _db(w, "SELECT 1 FROM tunnels"):
        _session(w)
    tunnels = _db(w, "SELECT tunnel_id FROM tunnels")
    assert len(tunnels) == 1, "this test starts with one tunnel on record"
    (one,) = _send(w, w.home, rec("rec-v2-one", w.case, tunnel=None), versions=(1, 2))
    assert isinstance(one, m.Ack), one
    assert _db(w, "SELECT tunnel_id, tech FROM recordings WHERE recording_id = "
                  "'rec-v2-one'") == [(tunnels[0][0], "alice")]
    # Two of alice's tunnels on this case open around now: which one is unknown.
    _session(w, "true")
    (two,) = _send(w, w.home, rec("rec-v2-two", w.case, tunnel=None), versions=(1, 2))
    assert refused(two, "tunnels on case"), two
    (bob,) = _send(w, w.home, rec("rec-v2-bob", w.case, tunnel=None, tech="bob"),
                   versions=(1, 2))
    assert refused(bob, "brokered no tunnel"), bob
    old = datetime.now(UTC) - timedelta(days=1)
    (yesterday,) = _send(w, w.home, rec("rec-v2-old", w.case, tunnel=None, started=old),
                         versions=(1, 2))
    assert refused(yesterday, "brokered no tunnel"), yesterday


# -- break 3: validated on arrival; never raw to a terminal ---------------------------


def test_malformed_recordings_are_refused_on_arrival(world: World) -> None:
    w = world
    tunnel = _any_tunnel(w)
    bad = [b"\x1b]52;c;aGVsbG8=\x07 raw bytes, not a cast\n",
           b'{"version": 1, "width": 80, "height": 24}\n',
           cast()[:-1],
           b'{"version": 2, "width": 80, "height": 24}\n[0.1, "z", "x"]\n']
    replies = _send(w, w.home, *[rec(f"rec-bad{i}", w.case, tunnel=tunnel, data=d)
                                 for i, d in enumerate(bad)])
    for reply in replies:
        assert refused(reply, "not a well-formed shell recording"), reply
    assert not _db(w, "SELECT 1 FROM recordings WHERE recording_id LIKE 'rec-bad%'")
    assert {e["detail"]["reason"] for e in _audit(w, "recording.refused")
            if e["detail"]["recording"].startswith("rec-bad")} == {"malformed"}


def _on_a_terminal(w: World, *args: str) -> tuple[int, str]:
    master, slave = pty.openpty()
    try:
        p = subprocess.run([str(BIN / "hw-tech"), "--home", str(w.alice), "recording",
                            w.case, *args], stdout=slave, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, env=w.h.env, timeout=120)
        os.close(slave)
        slave = -1
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        return p.returncode, p.stderr.decode() + seen.decode(errors="replace")
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


def test_hw_tech_recording_never_writes_to_a_terminal(world: World) -> None:
    w = world
    tunnel = _any_tunnel(w)
    osc52 = cast("\x1b]0;pwned\x07\x1b[2J\x1b]52;c;ZWNobyBwd25lZA==\x07")
    (ack,) = _send(w, w.home, rec("rec-osc52", w.case, tunnel=tunnel, data=osc52))
    assert isinstance(ack, m.Ack), ack  # well-formed: the escapes are the reader's problem
    code, text = _on_a_terminal(w, "--id", "rec-osc52")
    assert code == 2 and "--out FILE" in text and "--raw" in text
    assert "\x1b]52" not in text
    code, text = _on_a_terminal(w, "--id", "rec-osc52", "--raw")
    assert code == 0 and "\\u001b]52;c;" in text, "an explicit --raw writes it"
    out = w.h.root / "osc52.cast"
    w.h.run("hw-tech", "--home", str(w.alice), "recording", w.case, "--id", "rec-osc52",
            "--out", str(out))
    assert out.read_bytes() == osc52 and out.stat().st_mode & 0o777 == 0o600


# -- sealed at rest ---------------------------------------------------------------------


def test_recordings_are_sealed_at_rest_and_open_with_the_recording_key(world: World) -> None:
    w = world
    assert not (w.h.server_home / "offline" / "recording.key").exists()
    stored = b"".join(p.read_bytes() for p in w.h.server_home.glob("store.db*"))
    assert MARKER not in stored, "a copy of the database reveals no session"
    assert _db(w, "SELECT count(*) FROM recordings WHERE sealed = 0") == [(0,)]
    def agents_own() -> list[str]:  # the agent's ids: rec- + 16 hex digits
        return [r["id"] for r in _listed(w, w.case)
                if re.fullmatch(r"rec-[0-9a-f]{16}", r["id"])]

    if not agents_own():
        _session(w)
    first = agents_own()[-1]  # the oldest: the marker session
    out = w.h.root / "marker.cast"
    w.h.run("hw-tech", "--home", str(w.alice), "recording", w.case, "--id", first,
            "--out", str(out))
    assert MARKER in out.read_bytes()
    # Without the key: what to do. With a wrong key: which key it needs.
    p = w.h.run("hw-tech", "--home", str(w.bob), "recording", w.case, "--id", first,
                "--out", str(out), check=False)
    assert p.returncode == 2 and "--key FILE" in p.stderr and "recording.key" in p.stderr
    wrong = w.h.root / "wrong.key"
    wrong.write_bytes(sealed.private_pem(X25519PrivateKey.generate()))
    p = w.h.run("hw-tech", "--home", str(w.bob), "recording", w.case, "--id", first,
                "--key", str(wrong), check=False)
    assert p.returncode == 1 and "sealed to recording key" in p.stderr, p.stderr
    p = w.h.run("hw-tech", "--home", str(w.bob), "recording", w.case, "--id", first,
                "--key", str(w.alice / "recording.key"), "--out", str(out), check=False)
    assert p.returncode == 0 and MARKER in out.read_bytes()


def test_a_plaintext_recording_from_an_older_store_reads_marked_not_encrypted(
        world: World) -> None:
    w = world
    data = cast("from before sealing\r\n")
    db = sqlite3.connect(w.h.server_home / "store.db")
    try:
        with db:
            db.execute(
                "INSERT INTO recordings (recording_id, agent_id, case_number, tech, kind, "
                "started_at, ended_at, size, sha256, data, received_at) VALUES "
                "('rec-legacy', ?, ?, 'alice', 'shell', '2026-01-01 00:00:00.000000', NULL, "
                "?, ?, ?, '2026-01-01 00:00:01.000000')",
                (_db(w, "SELECT agent_id FROM cases WHERE number = ?", w.case)[0][0], w.case,
                 len(data), hashlib.sha256(data).digest(), data))
    finally:
        db.close()
    legacy = [r for r in _listed(w, w.case) if r["id"] == "rec-legacy"]
    assert legacy and legacy[0]["sealed"] is False and legacy[0]["tunnel"] is None
    table = w.h.run("hw-tech", "--home", str(w.bob), "recording", w.case, "--list").stdout
    assert "no (stored before sealing)" in table and "sealed" in table
    p = w.h.run("hw-tech", "--home", str(w.bob), "recording", w.case, "--id", "rec-legacy")
    assert p.stdout.encode() == data, "no key needed for a plaintext row"


# -- break 2(c): quotas --------------------------------------------------------------------


def test_a_flood_of_recordings_is_cut_by_the_per_minute_quota(harness: Harness,
                                                               tmp_path: Path) -> None:
    w = _setup(harness, tmp_path, recordings_per_minute=5)
    w.h.grant(w.home, w.case, "alice", scopes="shell")
    tunnel = _session(w, "true")  # 1 recording
    replies = _send(w, w.home, *[rec(f"rec-flood{i:02d}", w.case, tunnel=tunnel,
                                     data=cast(size=4000)) for i in range(60)])
    acks = [r for r in replies if isinstance(r, m.Ack)]
    assert len(acks) == 4, "5 a minute, the session's own included"
    assert all(refused(r, "recordings_per_minute") for r in replies[4:])
    assert _db(w, "SELECT count(*) FROM recordings") == [(5,)]
    audited = [e for e in _audit(w, "recording.refused")
               if e["detail"]["reason"] == "quota_rate"]
    assert len(audited) == 1, "a flood is audited once a minute, not once a recording"
    # The honest agent's next recording is refused too, and its outbox lets go of it.
    p = w.h.run("hw-tech", "--home", str(w.alice), "ssh", w.case, "--", "true", check=False)
    assert p.returncode == 0, p.stderr

    def outbox_empty() -> bool:
        db = sqlite3.connect(w.home / "agent.db")
        try:
            return db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0 and \
                "refused by the server" in w.h.run("hw-agent", "log", "--home",
                                                   str(w.home)).stdout
        finally:
            db.close()

    wait_until(outbox_empty, what="the refused recording to leave the agent's outbox")


def test_per_tunnel_and_per_hour_byte_quotas(harness: Harness, tmp_path: Path) -> None:
    w = _setup(harness, tmp_path, recordings_per_tunnel=3,
               recording_bytes_per_hour=250_000)
    w.h.grant(w.home, w.case, "alice", scopes="shell")
    first = _session(w, "true")  # 1 on this tunnel
    replies = _send(w, w.home, *[rec(f"rec-big{i}", w.case, tunnel=first,
                                     data=cast(size=100_000)) for i in range(3)])
    assert [type(r) for r in replies[:2]] == [m.Ack, m.Ack]
    assert refused(replies[2], "recordings_per_tunnel"), replies[2]
    second = _session(w, "true")
    (over,) = _send(w, w.home, rec("rec-big-over", w.case, tunnel=second,
                                   data=cast(size=100_000)))
    assert refused(over, "recording_bytes_per_hour"), over
    (small,) = _send(w, w.home, rec("rec-small", w.case, tunnel=second))
    assert isinstance(small, m.Ack), "under the byte budget still fits"
    assert {e["detail"]["reason"] for e in _audit(w, "recording.refused")} == \
        {"quota_tunnel", "quota_bytes"}


# -- no recording key: nothing stored in the clear, nothing lost ---------------------------


def test_without_a_recording_key_recordings_wait_in_the_agents_outbox(
        harness: Harness, tmp_path: Path) -> None:
    h = harness
    h.run("hw-server", "init", "--home", str(h.server_home), "--listen",
          f"127.0.0.1:{h.port}")
    (h.server_home / "recording.pub").unlink()  # a home from before sealing
    shutil.rmtree(h.server_home / "offline")
    h.start_server()
    home = h.enroll("A")
    user_home = tmp_path / "customer-home"
    user_home.mkdir()
    env = {"HOME": str(user_home), "SHELL": "/bin/sh"}
    agent = h.start_agent(home, env)
    case = h.help(home).splitlines()[0]
    alice = h.add_tech("alice")
    h.grant(home, case, "alice", scopes="shell")
    p = h.run("hw-tech", "--home", str(alice), "ssh", case, "--", "echo", "kept", check=False)
    assert p.returncode == 0, p.stderr

    def outbox() -> int:
        db = sqlite3.connect(home / "agent.db")
        try:
            return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        finally:
            db.close()

    server_log = h.root / "server.log"
    wait_until(lambda: "held back" in server_log.read_text(), what="the held-back recording")
    assert outbox() == 1, "not refused: kept by the agent"
    db = sqlite3.connect(h.server_home / "store.db")
    try:
        assert db.execute("SELECT count(*) FROM recordings").fetchone()[0] == 0
    finally:
        db.close()
    made = h.run("hw-server", "recording-key", "--home", str(h.server_home)).stdout
    assert "move it OFF this server" in made
    again = h.run("hw-server", "recording-key", "--home", str(h.server_home), check=False)
    assert again.returncode != 0 and "--replace" in again.stderr
    shutil.move(h.server_home / "offline" / "recording.key", alice / "recording.key")
    agent.stop()
    h.start_agent(home, env)  # the reconnect sends the outbox again
    wait_until(lambda: outbox() == 0, what="the recording to be stored")
    listed = h.tech_json(alice, "recording", case, "--list")["recordings"]
    assert len(listed) == 1 and listed[0]["sealed"] is True
    assert "kept" in h.run("hw-tech", "--home", str(alice), "recording", case).stdout
