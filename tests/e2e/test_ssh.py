"""SSH end to end inside the agent's websocket: hw-tech ssh, stock OpenSSH, SFTP, refusals,
revocation, recordings, and a relay whose technician stops reading."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.harness import BIN, Harness, Proc

pytestmark = pytest.mark.e2e

SSH = shutil.which("ssh")
SFTP = shutil.which("sftp")


@dataclass
class Env:
    h: Harness
    server: Proc
    home: Path
    agent: Proc
    case: str
    alice: Path
    agent_home_dir: Path


def _setup(h: Harness, tmp_path: Path) -> Env:
    h.init_server()
    server = h.start_server()
    home = h.enroll("A")
    user_home = tmp_path / "customer-home"
    user_home.mkdir()
    agent = h.start_agent(home, env={"HOME": str(user_home), "SHELL": "/bin/sh"})
    case = h.help(home).splitlines()[0]
    alice = h.add_tech("alice")
    # recordings are sealed at rest; alice opens them with the auditors' key (simple layout)
    shutil.copy(h.server_home / "offline" / "recording.key", alice / "recording.key")
    return Env(h, server, home, agent, case, alice, user_home)


@pytest.fixture
def env(harness: Harness, tmp_path: Path) -> Iterator[Env]:
    yield _setup(harness, tmp_path)


def _ssh(e: Env, *cmd: str, tech: Path | None = None, check: bool = False
         ) -> subprocess.CompletedProcess[str]:
    return e.h.run("hw-tech", "--home", str(tech or e.alice), "ssh", e.case, "--", *cmd,
                   check=check)


def _log(e: Env) -> str:
    return e.h.run("hw-agent", "log", "--home", str(e.home)).stdout


def test_hw_tech_ssh_runs_a_command_and_passes_its_status_through(env: Env) -> None:
    e = env
    e.h.grant(e.home, e.case, "alice", scopes="shell")
    p = _ssh(e, "echo", "ok")
    assert (p.returncode, p.stdout) == (0, "ok\n"), p.stderr
    p = _ssh(e, "sh -c 'echo oops >&2; exit 7'")
    assert p.returncode == 7 and "oops" in p.stderr
    log = _log(e)
    assert "session-open" in log and "session-closed" in log and "recording" in log
    listed = e.h.tech_json(e.alice, "recording", e.case, "--list")
    kinds = {r["kind"] for r in listed["recordings"]}
    assert kinds == {"shell"} and len(listed["recordings"]) == 2
    out = e.h.root / "last.cast"
    e.h.run("hw-tech", "--home", str(e.alice), "recording", e.case, "--out", str(out))
    lines = out.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and "width" in header and "height" in header
    events = [json.loads(x) for x in lines[1:]]
    assert all(ev[1] in ("o", "r") for ev in events)
    assert "oops" in "".join(ev[2] for ev in events), "the newest session's output"
    audit = e.h.run("hw-server", "audit", "show", "--home", str(e.h.server_home),
                    "--json").stdout
    assert "tunnel.closed" in audit and "recording.stored" in audit


def test_refused_before_any_shell_starts(env: Env, tmp_path: Path) -> None:
    e = env
    marker = e.agent_home_dir / "ran"
    cmd = f"touch {marker}"
    p = _ssh(e, cmd)  # no grant at all
    assert p.returncode == 1 and "no_consent" in p.stderr and "shell" in p.stderr
    e.h.grant(e.home, e.case, "alice", scopes="diagnostics")
    p = _ssh(e, cmd)  # the diagnostics scope only
    assert p.returncode == 1 and "no_consent" in p.stderr
    bob = e.h.add_tech("bob")
    e.h.grant(e.home, e.case, "alice", scopes="shell")
    p = _ssh(e, cmd, tech=bob)  # the wrong technician
    assert p.returncode == 1 and "no_consent" in p.stderr and "bob" in p.stderr
    e.h.grant(e.home, e.case, "bob", scopes="files")
    p = _ssh(e, cmd, tech=bob)  # files only: the tunnel opens, the shell channel does not
    assert p.returncode != 0 and "shell scope" in p.stderr
    assert not marker.exists(), "no shell ran for a refused technician"
    assert _ssh(e, cmd).returncode == 0 and marker.exists()


def test_stock_openssh_through_the_proxy(env: Env) -> None:
    if SSH is None:
        pytest.skip("no OpenSSH `ssh` binary on this machine")
    e = env
    e.h.grant(e.home, e.case, "alice", scopes="shell")
    config = e.h.root / "ssh_config"
    config.write_text(e.h.run("hw-tech", "--home", str(e.alice), "ssh-config").stdout)
    assert "Host hw-* HW-*" in config.read_text()
    p = subprocess.run([SSH, "-F", str(config), "-o", "BatchMode=yes", e.case.lower(),
                        "echo stock-ok; exit 3"], capture_output=True, text=True, timeout=60,
                       env={**e.h.env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"},
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 3 and p.stdout == "stock-ok\n", p.stderr
    known = (e.alice / "known_hosts").read_text()
    assert known.startswith(e.case.lower() + " ssh-ed25519 ")
    # The literal form: ProxyCommand, key and certificate on the command line.
    t = e.alice
    p = subprocess.run([SSH, "-F", "/dev/null", "-o", "BatchMode=yes",
                        "-o", f"ProxyCommand={BIN / 'hw-tech'} --home {t} proxy {e.case}",
                        "-i", str(t / "tech.key"), "-o", f"CertificateFile={t}/tech.key-cert.pub",
                        "-o", f"UserKnownHostsFile={t}/known_hosts",
                        "-o", "StrictHostKeyChecking=yes", f"alice@{e.case}", "uname -s"],
                       capture_output=True, text=True, timeout=60, env=e.h.env,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0 and p.stdout.strip() == os.uname().sysname, p.stderr


def test_sftp_ten_megabytes_up_and_down(env: Env, tmp_path: Path) -> None:
    e = env
    e.h.grant(e.home, e.case, "alice", scopes="files")
    data = secrets.token_bytes(10 * 1024 * 1024)
    src = tmp_path / "up.bin"
    src.write_bytes(data)
    back = tmp_path / "down.bin"
    if SFTP is not None:
        config = e.h.root / "ssh_config"
        config.write_text(e.h.run("hw-tech", "--home", str(e.alice), "ssh-config").stdout)
        batch = tmp_path / "batch"
        batch.write_text(f"put {src} big.bin\nget big.bin {back}\n")
        p = subprocess.run([SFTP, "-F", str(config), "-o", "BatchMode=yes", "-b", str(batch),
                            e.case.lower()], capture_output=True, text=True, timeout=120,
                           env={**e.h.env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"},
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
    else:
        asyncio.run(_asyncssh_sftp(e, src, back))
    assert hashlib.sha256((e.agent_home_dir / "big.bin").read_bytes()).digest() == \
        hashlib.sha256(data).digest()
    assert back.read_bytes() == data
    rec = e.h.tech_json(e.alice, "recording", e.case, "--list")["recordings"]
    assert [r["kind"] for r in rec] == ["sftp"]
    ops = e.h.run("hw-tech", "--home", str(e.alice), "recording", e.case).stdout
    assert '"op": "write"' in ops and '"op": "read"' in ops and str(len(data)) in ops
    assert _ssh(e, "true").returncode != 0, "files does not grant a shell"


async def _asyncssh_sftp(e: Env, src: Path, back: Path) -> None:
    from tech import ssh as techssh
    from tech.client import Profile

    conn, pump = await techssh.connect(Profile.load(e.alice), e.case)
    async with conn, conn.start_sftp_client() as sftp:
        await sftp.put(str(src), "big.bin")
        await sftp.get("big.bin", str(back))
    pump.cancel()


def test_revoking_ends_an_open_session(env: Env) -> None:
    e = env
    e.h.grant(e.home, e.case, "alice", scopes="shell")
    session = e.h.spawn("long", "hw-tech", "--home", str(e.alice), "ssh", e.case, "--",
                        "echo started; sleep 300")
    session.wait_log("started")
    status = e.h.run("hw-agent", "consent", "status", "--home", str(e.home)).stdout
    assert "remote session open: alice" in status
    e.h.run("hw-agent", "consent", "revoke", "--home", str(e.home), "--case", e.case)
    assert session.popen.wait(30) != 0
    assert "revoked consent" in session.text() and "Traceback" not in session.text()
    log = _log(e)
    assert "session-closed" in log and "revoked consent" in log
    assert "remote session open" not in e.h.run("hw-agent", "consent", "status", "--home",
                                                str(e.home)).stdout
    assert "the remote session of alice" in e.agent.text(), "the customer's terminal says so"


def test_grant_expiry_ends_an_open_session(env: Env) -> None:
    e = env
    e.h.grant(e.home, e.case, "alice", scopes="shell", duration="6s")
    session = e.h.spawn("expiring", "hw-tech", "--home", str(e.alice), "ssh", e.case, "--",
                        "echo started; sleep 300")
    session.wait_log("started")
    assert session.popen.wait(30) != 0
    assert "grant was revoked or expired" in _log(e)


def test_a_technician_who_stops_reading_does_not_grow_server_memory(env: Env) -> None:
    """A rogue agent floods its tunnel while the technician reads nothing: the relay's
    buffers stay bounded, so the flood stalls instead of filling the server's memory."""
    e = env
    e.agent.stop()  # the test plays the agent itself, with the agent's key
    rss = asyncio.run(_flood(e))
    assert rss["sent"] < 256 * 1024 * 1024, "the flood stalled on backpressure"
    assert rss["after"] - rss["before"] < 64 * 1024 * 1024, rss


async def _flood(e: Env) -> dict[str, int]:
    from agent.connection import dial
    from agent.home import AgentHome
    from proto import messages as m
    from tech import ssh as techssh
    from tech.client import Profile

    home = AgentHome(e.home)
    state = home.state()
    run = await dial(state.urls, home.ssl_context(), agent_id=state.agent_id, key=home.key(),
                     mode=m.Mode.RUN)
    server = psutil.Process(e.server.popen.pid)
    before = server.memory_info().rss
    opening = asyncio.create_task(techssh.open_tunnel(Profile.load(e.alice), e.case))
    while True:
        req = await run.recv()
        if isinstance(req, m.Request) and req.action is m.Action.TUNNEL:
            break
    link = await dial(state.urls, home.ssl_context(), agent_id=state.agent_id,
                      key=home.key(), mode=m.Mode.TUNNEL, tunnel=req.id)
    client, _opened = await opening  # the technician never reads from here on
    chunk, sent = b"\0" * 65536, 0
    try:
        while sent < 256 * 1024 * 1024:
            await asyncio.wait_for(link.ws.send(chunk, text=False), 3.0)
            sent += len(chunk)
    except TimeoutError:
        pass
    after = server.memory_info().rss
    assert client.ws is not None
    for ws in (link.ws, client.ws, run.ws):  # no polite close through a stalled relay
        ws.transport.abort()
    return {"before": before, "after": after, "sent": sent}


def test_interactive_shell_in_a_terminal_is_recorded(env: Env) -> None:
    """`hw-tech ssh CASE` in a real terminal: a pty on both ends, asciicast with its size."""
    import pty
    import select
    import time

    e = env
    e.h.grant(e.home, e.case, "alice", scopes="shell")
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(BIN / "hw-tech"), "--home", str(e.alice), "ssh", e.case],
                            stdin=slave, stdout=slave, stderr=slave, env={**e.h.env,
                                                                          "TERM": "xterm"})
    os.close(slave)
    seen = b""

    def read_until(text: bytes, timeout: float = 30.0) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text not in seen and not (text == b"PROMPT" and seen.rstrip().endswith(
                (b"$", b"#"))):
            assert time.monotonic() < deadline, f"no {text!r} in {seen[-500:]!r}"
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break

    try:
        read_until(b"PROMPT")  # the shell is up (typing earlier would be flushed by raw mode)
        os.write(master, b"echo hi-$((6*7))\r")
        read_until(b"hi-42")
        os.write(master, b"exit 0\r")
        code = proc.wait(30)
        read_until(b"", 1.0)
        assert code == 0, seen[-1500:]
    finally:
        proc.kill()
        os.close(master)
    cast = e.h.run("hw-tech", "--home", str(e.alice), "recording", e.case).stdout.splitlines()
    header = json.loads(cast[0])
    assert header["env"]["TERM"] == "xterm" and header["width"] > 0
    assert "hi-42" in "".join(json.loads(x)[2] for x in cast[1:])
