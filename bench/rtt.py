"""Round trip technician -> server -> agent -> no-op probe -> back, vs a raw websockets echo.

Each request is a signed command (Ed25519 over the payload, OpenSSH certificate chain to the
org key checked by the server and again by the agent, replay cache, consent grant lookup),
the result is stored once in the server's SQLite store and audited on both sides.

Starts a real hw-server and hw-agent (processes, TLS, SQLite store) and a raw `websockets`
TLS echo server (a process too), then times N sequential requests of each from one client
process. Prints p50/p99 of each, the ratios, and the CPU time each process spent per
request (``/proc``: user + system time of the hw-server, hw-agent and relay processes over the
timed requests, divided by their number). Goals (issue 12): p50 <= 3x the raw two-hop relay
of the same run; hw-server CPU <= 0.5 ms per command.

    .venv/bin/python bench/rtt.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import connect  # noqa: E402

from proto import messages as m  # noqa: E402
from tech.client import Profile, TechClient  # noqa: E402
from tests.harness import Harness, free_port, wait_until  # noqa: E402

ECHO_SERVER = """
import asyncio, ssl, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for msg in ws:
        await ws.send(msg)
async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), ssl=ctx, compression=None):
        print("ready", flush=True)
        await asyncio.Future()
try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


RELAY_SERVER = """
import asyncio, ssl, sys
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    cctx = ssl.create_default_context(cafile=sys.argv[4])
    async def relay(ws):
        async with connect(sys.argv[5], ssl=cctx, compression=None) as up:
            async for msg in ws:
                await up.send(msg)
                await ws.send(await up.recv())
    async with serve(relay, "127.0.0.1", int(sys.argv[1]), ssl=ctx, compression=None):
        print("ready", flush=True)
        await asyncio.Future()
try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds the process ``pid`` has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class CpuMeter:
    """CPU seconds a few processes spend between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.used: dict[str, float] = {}
        self.system: dict[str, float] = {}
        self._at: dict[str, tuple[float, float]] = {}

    def start(self) -> None:
        self._at = {name: cpu_times(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        for name, pid in self.pids.items():
            user, system = cpu_times(pid)
            self.used[name] = user + system - sum(self._at[name])
            self.system[name] = system - self._at[name][1]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def time_echo(port: int, cafile: Path, n: int, data: bytes, meter: CpuMeter | None = None
                    ) -> list[float]:
    """Sequential round trips of one frame (a real signed RunDiag) to ``port``."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(cafile))
    async with connect(f"wss://127.0.0.1:{port}", ssl=ctx, compression=None) as ws:
        for _ in range(50):
            await ws.send(data, text=True)
            await ws.recv(decode=False)
        out = []
        if meter is not None:
            meter.start()
        for _ in range(n):
            t0 = time.perf_counter()
            await ws.send(data, text=True)
            await ws.recv(decode=False)
            out.append(time.perf_counter() - t0)
        if meter is not None:
            meter.stop()
        return out


def sample_frame(tech: Path, case: str) -> bytes:
    """A signed RunDiag frame of the size the real round trip sends."""
    from proto import codec

    client = TechClient(Profile.load(tech))
    signed = client.sign(agent_id="ag-" + "0" * 20, case=case, action=m.Action.DIAG,
                         args={"probes": ["noop"]})
    return codec.encode(m.RunDiag(id="tq-000000000000", case=case, command=signed))


async def time_rtt(tech: Path, case: str, n: int, meter: CpuMeter) -> list[float]:
    """Signed, consent-checked diag round trips; each command is signed inside the timing."""
    async with TechClient(Profile.load(tech)) as client:
        agent_id = await client.agent_of(case)

        def diag(rid: str) -> m.RunDiag:
            signed = client.sign(agent_id=agent_id, case=case, action=m.Action.DIAG,
                                 args={"probes": ["noop"]})
            return m.RunDiag(id=rid, case=case, command=signed)

        for i in range(50):
            await client.call(diag(f"w{i}"))
        out = []
        meter.start()
        for i in range(n):
            t0 = time.perf_counter()
            reply = await client.call(diag(f"r{i}"))
            out.append(time.perf_counter() - t0)
            assert isinstance(reply, m.DiagDone) and reply.result.ok
        meter.stop()
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hw-bench-") as tmp:
        h = Harness(Path(tmp))
        h.env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), h.env["PYTHONPATH"]])
        echo = relay = None
        try:
            h.init_server()
            server = h.start_server()
            home = h.enroll("A")
            agent = h.start_agent(home, env={"HW_PLUGINS": "noopprobe"})
            case = h.help(home).splitlines()[0]
            tech = h.add_tech("bench")
            h.grant(home, case, "bench", duration="8h")
            port, relay_port = free_port(), free_port()
            cert, key = str(h.server_home / "server.crt"), str(h.server_home / "server.key")
            echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port), cert, key],
                                    stdout=subprocess.PIPE, text=True)
            relay = subprocess.Popen([sys.executable, "-c", RELAY_SERVER, str(relay_port), cert,
                                      key, str(h.server_home / "ca.crt"),
                                      f"wss://127.0.0.1:{port}"],
                                     stdout=subprocess.PIPE, text=True)
            for proc in (echo, relay):
                out = proc.stdout
                assert out is not None
                wait_until(lambda out=out: out.readline().strip() == "ready", what="baseline")
            loop_run = asyncio.run
            try:
                import uvloop
                loop_run = uvloop.run
            except ImportError:
                pass
            frame = sample_frame(tech, case)
            base = loop_run(time_echo(port, h.server_home / "ca.crt", args.requests, frame))
            relay_cpu = CpuMeter({"relay": relay.pid, "echo": echo.pid})
            hop2 = loop_run(time_echo(relay_port, h.server_home / "ca.crt", args.requests,
                                      frame, relay_cpu))
            ours_cpu = CpuMeter({"server": server.popen.pid, "agent": agent.popen.pid})
            ours = loop_run(time_rtt(tech, case, args.requests, ours_cpu))
        finally:
            for proc in (echo, relay):
                if proc is not None:
                    proc.terminate()
                    proc.wait()
            h.stop_all()
    ms = 1000.0
    print(f"requests: {args.requests} sequential, after 50 warm-up, on {os.cpu_count()} cores")
    print(f"raw websockets TLS echo    p50 {pct(base, .5) * ms:7.3f} ms   p99 "
          f"{pct(base, .99) * ms:7.3f} ms   mean {statistics.fmean(base) * ms:.3f} ms")
    print(f"raw websockets TLS relay   p50 {pct(hop2, .5) * ms:7.3f} ms   p99 "
          f"{pct(hop2, .99) * ms:7.3f} ms   (client->relay->echo->relay->client: our "
          "path's shape, no work)")
    print(f"signed, consent-checked    p50 {pct(ours, .5) * ms:7.3f} ms   p99 "
          f"{pct(ours, .99) * ms:7.3f} ms   mean {statistics.fmean(ours) * ms:.3f} ms")
    ratio = pct(ours, .5) / pct(hop2, .5)
    print(f"ratio p50: {ratio:.2f}x the raw two-hop relay (goal <= 3x: "
          f"{'met' if ratio <= 3 else 'not met'}); {pct(ours, .5) / pct(base, .5):.2f}x the "
          "raw echo")
    n = args.requests
    per = {name: used / n * ms for name, used in {**relay_cpu.used, **ours_cpu.used}.items()}
    kernel = {name: used / n * ms for name, used in {**relay_cpu.system, **ours_cpu.system}.items()}
    print(f"CPU per request (of it in the kernel): hw-server {per['server']:.3f} ms "
          f"({kernel['server']:.3f}; goal <= 0.5 ms: "
          f"{'met' if per['server'] <= 0.5 else 'not met'}), hw-agent {per['agent']:.3f} ms "
          f"({kernel['agent']:.3f}); baseline: relay process {per['relay']:.3f} ms "
          f"({kernel['relay']:.3f}), echo process {per['echo']:.3f} ms ({kernel['echo']:.3f})")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
