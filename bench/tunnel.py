"""Bulk transfer through the full SSH tunnel vs asyncssh directly over loopback TCP.

Tunnel: ``hw-tech``'s asyncssh client -> socketpair -> TLS websocket -> ``hw-server`` relay
-> TLS websocket -> ``hw-agent`` -> socketpair -> the agent's asyncssh SFTP server (real
processes, real TLS, real grant, recording on). Direct: the same asyncssh client talking
TCP on loopback to an asyncssh SFTP server in its own process. Same cipher on both
(``--cipher``, default aes128-gcm@openssh.com), same 8 MiB SSH window (the agent's), same
SFTP upload of ``--mb`` MiB, runs interleaved.

Prints MB/s of both, the ratio (goal, issue 5: tunnel >= 0.5x direct on a 2-core machine)
and the CPU seconds the server process spent relaying (user + system) per 100 MB.

    .venv/bin/python bench/tunnel.py [--mb 100] [--runs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncssh  # noqa: E402
import psutil  # noqa: E402

from tech import ssh as techssh  # noqa: E402
from tech.client import Profile  # noqa: E402
from tests.harness import Harness, free_port  # noqa: E402

DIRECT_SERVER = """
import asyncio, os, sys
import asyncssh
class Any(asyncssh.SSHServer):
    def begin_auth(self, username): return True
    def public_key_auth_supported(self): return True
    def validate_public_key(self, username, key): return True
async def main():
    os.chdir(sys.argv[2])
    key = asyncssh.generate_private_key("ssh-ed25519")
    await asyncssh.listen("127.0.0.1", int(sys.argv[1]), server_host_keys=[key],
                          server_factory=Any, sftp_factory=True, config=None,
                          window=8 * 1024 * 1024)
    print("ready", flush=True)
    await asyncio.Future()
try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


async def _upload(conn: asyncssh.SSHClientConnection, src: Path) -> float:
    async with conn.start_sftp_client() as sftp:
        start = time.perf_counter()
        await sftp.put(str(src), "bench.bin")
        took = time.perf_counter() - start
        await sftp.remove("bench.bin")
    return took


async def direct(port: int, src: Path, key: asyncssh.SSHKey, cipher: str) -> float:
    conn = await asyncssh.connect("127.0.0.1", port, config=None, username="bench",
                                  client_keys=[key], known_hosts=None, agent_path=None,
                                  encryption_algs=[cipher], compression_algs=None,
                                  window=8 * 1024 * 1024)
    async with conn:
        return await _upload(conn, src)


async def tunnel(profile: Profile, case: str, src: Path, cipher: str) -> float:
    conn, pump = await techssh.connect(profile, case, encryption_algs=[cipher])
    try:
        async with conn:
            return await _upload(conn, src)
    finally:
        pump.cancel()


def run(coro: Any) -> float:
    """One client run; uvloop when installed (as hw-agent and hw-server use), for both."""
    try:
        import uvloop
    except ImportError:
        return float(asyncio.run(coro))
    return float(uvloop.run(coro))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100, help="MiB to upload (default 100)")
    ap.add_argument("--runs", type=int, default=2, help="runs of each, best kept (default 2)")
    ap.add_argument("--cipher", default="aes128-gcm@openssh.com")
    args = ap.parse_args()
    size = args.mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="hw-bench-tunnel-") as tmp:
        root = Path(tmp)
        src = root / "payload.bin"
        with src.open("wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1024 * 1024))
        customer = root / "customer"
        customer.mkdir()
        h = Harness(root / "h")
        h.root.mkdir()
        direct_dir = root / "direct"
        direct_dir.mkdir()
        port = free_port()
        baseline = subprocess.Popen([sys.executable, "-c", DIRECT_SERVER, str(port),
                                     str(direct_dir)], stdout=subprocess.PIPE, text=True)
        try:
            assert baseline.stdout is not None and baseline.stdout.readline().strip() == "ready"
            h.init_server()
            server = h.start_server()
            home = h.enroll("A")
            agent = h.start_agent(home, env={"HOME": str(customer)})
            case = h.help(home).splitlines()[0]
            tech = h.add_tech("alice")
            h.grant(home, case, "alice", scopes="files")
            profile = Profile.load(tech)
            key = asyncssh.read_private_key(tech / "tech.key")
            srv = psutil.Process(server.popen.pid)
            agt = psutil.Process(agent.popen.pid)
            direct_times, tunnel_times, relay_cpu, agent_cpu = [], [], [], []
            for _ in range(args.runs):  # interleaved, so both see the same machine load
                direct_times.append(run(direct(port, src, key, args.cipher)))
                s0, a0 = srv.cpu_times(), agt.cpu_times()
                tunnel_times.append(run(tunnel(profile, case, src, args.cipher)))
                s1, a1 = srv.cpu_times(), agt.cpu_times()
                relay_cpu.append((s1.user + s1.system) - (s0.user + s0.system))
                agent_cpu.append((a1.user + a1.system) - (a0.user + a0.system))
            best_direct, best_tunnel = min(direct_times), min(tunnel_times)
        finally:
            h.stop_all()
            baseline.terminate()
            baseline.wait(10)
    mb = size / 1e6
    per100 = 100e6 / size
    print(f"SFTP upload of {args.mb} MiB, cipher {args.cipher}, best of {args.runs} "
          "(interleaved; the client runs on uvloop in both)")
    print(f"  direct asyncssh over loopback TCP : {mb / best_direct:8.1f} MB/s "
          f"({best_direct:.2f} s)")
    print(f"  through the hw-server tunnel      : {mb / best_tunnel:8.1f} MB/s "
          f"({best_tunnel:.2f} s)")
    ratio = best_direct / best_tunnel
    print(f"  tunnel / direct                   : {ratio:8.2f}x   (goal >= 0.5x)")
    print(f"  hw-server CPU per 100 MB relayed  : {min(relay_cpu) * per100:8.2f} s "
          "(user + system, both directions' frames)")
    print(f"  hw-agent CPU per 100 MB           : {min(agent_cpu) * per100:8.2f} s "
          "(SSH server + websocket + recording)")
    return 0 if ratio >= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
