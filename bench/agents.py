"""Many simulated agents against one real hw-server: connections, reconnect storm, fan-out.

    .venv/bin/python bench/agents.py --agents 200                  # quick (about a minute)
    .venv/bin/python bench/agents.py --agents 1000,5000,10000      # the figures in BENCHMARKS.md

What is measured, for each N in ``--agents``:

1. **Connected agents**: N simulated agents connect to a fresh ``hw-server run`` (a real
   process: TLS 1.3, websockets, the agent gateway, the store). Reported: the server's RSS
   growth per connected agent and the accept time (first dial to the last ``Welcome``).
   **Baseline**, measured in the same run: a bare ``websockets`` TLS server on uvloop (same
   certificate, same websocket settings, no protocol) holding the same number of idle
   connections from the same client processes; same figures. Goal: RSS per agent <= 1.5x
   the baseline's per connection, and 20k agents within 1 GiB.
2. **Reconnect storm**: with all N connected, the server is stopped (SIGTERM) and started
   again. Reported: time from the stop until every agent is back, the new server process's
   CPU time until then, how many dials failed and the most attempts one agent needed.
   Agents retry with the real agent's policy (``agent.backoff.Backoff``, defaults of
   ``hw-agent run``: full jitter, 1 s doubling to 60 s, reset after 30 s up) and never give up.
3. **Fan-out**: the server has no message that addresses many agents at once, so this sends
   N concurrent signed ``RunDiag`` requests (one per agent, each signed by the technician's
   key for that agent and case) through the technician gateway, over ceil(N/16) technician
   connections (the server admits 16 requests in flight per connection), and times the
   last ``DiagDone``. Every request is verified, relayed, answered, stored and audited the
   way a real one is. Goal (issue 7): <= 2 s for 10k.

The simulated agents speak the real protocol: TLS 1.3 with the pinned CA, hello, the
Ed25519 challenge-proof with their own key, websocket pings every 20 s (as ``hw-agent``),
and a ``Result`` (no probes run, no findings) to every ``Request``, kept until ``Ack``ed.
They do **not** check the command's signature or a consent grant (the real agent does; the
agent's cost is not what this measures), keep no outbox or log, and run many agents per
process (``--workers`` processes, uvloop) so that the server is what gets measured. At most
``--ramp`` handshakes per worker are in flight during the first connect (a fleet does not
start in one millisecond); reconnects after the restart are not limited: only the backoff
spreads them.

Set-up writes the agents straight into the server's store (bench only): one customer, N
agents with deterministic Ed25519 keys (``sha256(b"hw-bench-agent" + i)``), and one open
case per agent, inserted in bulk with the store's own table definitions after
``hw-server init`` migrated it. Enrolling 10k agents through tokens would measure
enrollment, not connections. ``--db URL`` puts the store on PostgreSQL instead of SQLite
(the database must exist and be empty).

The machine is shared: load average and core count are printed with the figures. Each
process raises its RLIMIT_NOFILE soft limit to the hard limit; N cannot exceed what that
allows the server (about hard limit - 100 descriptors).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import multiprocessing as mp
import os
import queue
import resource
import secrets
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidHandshake  # noqa: E402

from agent.backoff import STABLE_AFTER, Backoff  # noqa: E402
from proto import MAX_FRAME_SIZE  # noqa: E402
from proto import messages as m  # noqa: E402
from proto.errors import ProtocolError  # noqa: E402
from proto.session import ClientSession  # noqa: E402

SOFTWARE = "hw-bench-agent/1"
TECH_CONCURRENCY = 16  # server.app.TECH_CONCURRENCY: requests in flight per tech connection
REPORT_EVERY_S = 0.2

BASELINE_SERVER = """
import asyncio, logging, ssl, sys, resource
logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # clients killed at the end: noise
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
from websockets.asyncio.server import serve
async def idle(ws):
    await ws.wait_closed()
async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    async with serve(idle, "127.0.0.1", int(sys.argv[1]), ssl=ctx, compression=None,
                     max_size=1 << 20, max_queue=4, ping_interval=30, ping_timeout=20,
                     server_header=None):
        print("ready", flush=True)
        await asyncio.Future()
import uvloop
uvloop.run(main())
"""


def raise_nofile() -> int:
    """Raise this process's descriptor limit to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def agent_key(i: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(b"hw-bench-agent" + i.to_bytes(4, "big")).digest())


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def agent_id_for(public_key: bytes) -> str:
    return "ag-" + hashlib.sha256(public_key).hexdigest()[:20]  # as server.app.agent_id_for


# --------------------------------------------------------------------------- worker process


@dataclass
class Counters:
    connected: int = 0
    dials: int = 0
    failed_dials: int = 0
    most_attempts: int = 0
    requests: int = 0
    acks: int = 0
    welcomes: int = 0
    connected_ever: set[int] = field(default_factory=set)


async def run_agent(i: int, url: str, ctx: ssl.SSLContext, c: Counters, ramp: asyncio.Semaphore,
                    raw: bool) -> None:
    """One simulated agent: dial, prove, answer requests, reconnect with the real backoff."""
    key = agent_key(i)
    agent_id = agent_id_for(raw_public(key))
    backoff = Backoff()  # hw-agent run's defaults: 1 s doubling to 60 s, full jitter
    attempts = 0
    first = True
    while True:
        attempts += 1
        c.dials += 1
        try:
            if first:
                async with ramp:
                    ws, session = await dial(url, ctx, agent_id, key, raw)
            else:
                ws, session = await dial(url, ctx, agent_id, key, raw)
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ProtocolError):
            c.failed_dials += 1
            await asyncio.sleep(backoff.next())
            continue
        first = False
        c.most_attempts = max(c.most_attempts, attempts)
        attempts = 0
        c.connected += 1
        c.welcomes += 1
        c.connected_ever.add(i)
        up_since = time.monotonic()
        try:
            if raw:
                await ws.wait_closed()
            else:
                assert session is not None
                async for frame in ws:
                    msg = session.receive(frame)
                    if isinstance(msg, m.Request):
                        c.requests += 1
                        result = m.Result(id="rs-" + secrets.token_hex(8), re=msg.id,
                                          case=msg.case, action=msg.action, ok=True)
                        await ws.send(session.send(result), text=True)
                    elif isinstance(msg, m.Ack):
                        c.acks += 1
        except (ConnectionClosed, ProtocolError, OSError):
            pass
        finally:
            c.connected -= 1
        if time.monotonic() - up_since >= STABLE_AFTER:
            backoff.reset()
        await asyncio.sleep(backoff.next())


async def dial(url: str, ctx: ssl.SSLContext, agent_id: str, key: Ed25519PrivateKey,
               raw: bool) -> tuple[Any, ClientSession | None]:
    ws = await connect(url, ssl=ctx, compression=None, max_size=MAX_FRAME_SIZE,
                       open_timeout=10, ping_interval=20, ping_timeout=20,
                       user_agent_header=SOFTWARE, close_timeout=5)
    if raw:
        return ws, None
    try:
        session = ClientSession(role=m.Role.AGENT, identity=agent_id)
        await ws.send(session.hello(software=SOFTWARE, mode=m.Mode.RUN), text=True)
        session.receive(await ws.recv(decode=False))  # Challenge
        await ws.send(session.prove(key.sign(session.proof_payload())), text=True)
        session.receive(await ws.recv(decode=False))  # Welcome
    except BaseException:
        await ws.close()
        raise
    return ws, session


def worker_main(wid: int, lo: int, hi: int, url: str, cafile: str, raw: bool, ramp: int,
                out: mp.Queue, go: Any) -> None:  # type: ignore[type-arg]
    raise_nofile()
    import uvloop

    async def main() -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(cafile=cafile)
        c = Counters()
        sem = asyncio.Semaphore(ramp)
        me = psutil.Process()
        out.put((wid, 0, 0, 0, 0, 0, 0, 0, me.memory_info().rss, 0))  # ready
        await asyncio.to_thread(go.wait)
        tasks = [asyncio.create_task(run_agent(i, url, ctx, c, sem, raw)) for i in range(lo, hi)]
        while True:
            out.put((wid, c.connected, len(c.connected_ever), c.dials, c.failed_dials,
                     c.most_attempts, c.requests, c.acks, me.memory_info().rss, c.welcomes))
            await asyncio.sleep(REPORT_EVERY_S)
        del tasks

    uvloop.run(main())


class Fleet:
    """``workers`` processes holding agents [0, n) between them."""

    def __init__(self, n: int, workers: int, url: str, cafile: Path, *, raw: bool,
                 ramp: int) -> None:
        ctx = mp.get_context("spawn")
        self.q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        self.go = ctx.Event()
        self.n = n
        self.latest: dict[int, tuple[int, ...]] = {}
        per = math.ceil(n / workers)
        self.procs = [ctx.Process(target=worker_main, daemon=True,
                                  args=(w, w * per, min(n, (w + 1) * per), url, str(cafile),
                                        raw, ramp, self.q, self.go))
                      for w in range(workers) if w * per < n]

    def start(self) -> None:
        """Start the processes, wait until each is ready, then let all agents dial at once."""
        for p in self.procs:
            p.start()
        while len(self.latest) < len(self.procs):
            self.poll()
            time.sleep(0.01)
        self.go.set()

    def poll(self) -> None:
        while True:
            try:
                row = self.q.get_nowait()
            except queue.Empty:
                return
            self.latest[row[0]] = row[1:]

    def total(self, column: int) -> int:
        self.poll()
        return sum(r[column] for r in self.latest.values())

    def connected(self) -> int:
        return self.total(0)

    def wait_connected(self, n: int, timeout: float, what: str, welcomes: int = 0) -> float:
        """Seconds until ``n`` agents are connected and at least ``welcomes`` connections
        were ever welcomed (raises after ``timeout``)."""
        t0 = time.monotonic()
        while self.connected() < n or self.total(8) < welcomes:
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"{what}: only {self.connected()} of {n} agents connected "
                                 f"after {timeout:.0f}s (the server is too slow for this "
                                 "many); retry with a larger --timeout or fewer --agents")
            time.sleep(0.02)
        return time.monotonic() - t0

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join(10)


# --------------------------------------------------------------------------- set-up


def bulk_enroll(db_url: str, n: int) -> list[tuple[str, str]]:
    """Write n agents and one open case each into the store; return [(agent_id, case)]."""
    import sqlalchemy as sa

    from server import store as st

    now = datetime.now(UTC)
    day = st.china_day(now)
    ids = [agent_id_for(raw_public(agent_key(i))) for i in range(n)]
    pairs = [(a, st.case_number(day, i + 1)) for i, a in enumerate(ids)]

    async def write() -> None:
        store = await st.Store.open(db_url)
        try:
            async with store._write_engine.begin() as conn:
                cid = (await conn.execute(sa.insert(st.customers).values(
                    name="Bench Ltd", kind="enterprise", city="上海", created_at=now
                ).returning(st.customers.c.id))).scalar_one()
                for lo in range(0, n, 2000):
                    chunk = range(lo, min(n, lo + 2000))
                    await conn.execute(sa.insert(st.agents), [
                        {"agent_id": ids[i], "customer_id": cid,
                         "public_key": raw_public(agent_key(i)), "hostname": f"bench-{i}",
                         "os": "Linux", "software": SOFTWARE, "enrolled_at": now}
                        for i in chunk])
                    await conn.execute(sa.insert(st.cases), [
                        {"number": pairs[i][1], "number_day": day, "number_seq": i + 1,
                         "agent_id": ids[i], "customer_id": cid, "description": "bench",
                         "state": "open", "opened_at": now, "updated_at": now,
                         "open_request_id": f"bench-{i}"}
                        for i in chunk])
        finally:
            await store.close()

    asyncio.run(write())
    return pairs


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


# --------------------------------------------------------------------------- fan-out


async def fan_out(tech_home: Path, pairs: list[tuple[str, str]]) -> tuple[float, dict[str, int]]:
    """N concurrent signed diag requests over ceil(N/16) tech connections; (seconds, tally)."""
    from proto import codec
    from server.techclient import Profile, TechClient

    profile = Profile.load(tech_home)
    groups = [pairs[i:i + TECH_CONCURRENCY] for i in range(0, len(pairs), TECH_CONCURRENCY)]
    clients: list[TechClient] = []
    try:
        for _ in groups:
            client = TechClient(profile)
            await client.__aenter__()
            clients.append(client)
        frames = [[codec.encode(m.RunDiag(
            id=f"fo-{g}-{k}", case=case, timeout=300.0,
            command=clients[g].sign(agent_id=agent, case=case, action=m.Action.DIAG,
                                    args={"probes": ["noop"]})))
            for k, (agent, case) in enumerate(group)] for g, group in enumerate(groups)]
        tally: dict[str, int] = {}

        async def one(client: TechClient, batch: list[bytes]) -> None:
            assert client.ws is not None
            for frame in batch:
                await client.ws.send(frame, text=True)
            for _ in batch:
                reply = client.session.receive(await client.ws.recv(decode=False))
                kind = ("ok" if isinstance(reply, m.DiagDone) and reply.result.ok else
                        reply.code.value if isinstance(reply, m.Error) else type(reply).__name__)
                tally[kind] = tally.get(kind, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(c, b) for c, b in zip(clients, frames, strict=True)))
        return time.perf_counter() - t0, tally
    finally:
        for client in clients:
            await client.__aexit__()


# --------------------------------------------------------------------------- one level


def level(n: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from tests.harness import Harness, free_port, wait_until

    h = Harness(root / f"n{n}")
    h.root.mkdir(parents=True)
    res: dict[str, Any] = {"agents": n}
    baseline = None
    fleet: Fleet | None = None
    try:
        settings = {"db": args.db} if args.db else {}
        h.init_server(**settings)
        t = time.perf_counter()
        pairs = bulk_enroll(_db_url(h), n)
        res["enroll_s"] = time.perf_counter() - t
        tech = h.add_tech("bench")
        cafile = h.server_home / "ca.crt"
        workers = args.workers or max(2, min(8, math.ceil(n / 2500)))
        res["workers"] = workers

        if not args.no_baseline:
            port = free_port()
            baseline = subprocess.Popen(
                [sys.executable, "-c", BASELINE_SERVER, str(port),
                 str(h.server_home / "server.crt"), str(h.server_home / "server.key")],
                stdout=subprocess.PIPE, text=True)
            assert baseline.stdout is not None
            wait_until(lambda: baseline.stdout.readline().strip() == "ready", what="baseline")
            time.sleep(0.5)
            idle = rss(baseline.pid)
            fleet = Fleet(n, workers, f"wss://127.0.0.1:{port}/", cafile, raw=True,
                          ramp=args.ramp)
            fleet.start()
            cpu0 = cpu_seconds(baseline.pid)
            res["base_accept_s"] = fleet.wait_connected(n, args.timeout, "baseline")
            res["base_accept_cpu_s"] = cpu_seconds(baseline.pid) - cpu0
            time.sleep(2.0)
            res["base_rss_idle"] = idle
            res["base_rss"] = rss(baseline.pid)
            res["base_cpu_s"] = cpu_seconds(baseline.pid)
            fleet.stop()
            fleet = None
            baseline.terminate()
            baseline.wait()
            baseline = None

        server = h.start_server()
        time.sleep(0.5)
        idle = rss(server.popen.pid)
        url = f"wss://127.0.0.1:{h.port}/agent"
        fleet = Fleet(n, workers, url, cafile, raw=False, ramp=args.ramp)
        fleet.start()
        cpu0 = cpu_seconds(server.popen.pid)
        res["accept_s"] = fleet.wait_connected(n, args.timeout, "hw-server")
        res["accept_cpu_s"] = cpu_seconds(server.popen.pid) - cpu0
        time.sleep(2.0)
        res["rss_idle"] = idle
        res["rss"] = rss(server.popen.pid)
        res["cpu_connect_s"] = cpu_seconds(server.popen.pid)
        res["agent_rss_total"] = fleet.total(7)

        if not args.no_storm:
            dials0, failed0, welcomes0 = fleet.total(2), fleet.total(3), fleet.total(8)
            t0 = time.monotonic()
            server.stop()
            h.procs.remove(server)
            server = h.start_server()
            t_listen = time.monotonic() - t0
            fleet.wait_connected(n, args.timeout, "reconnect storm", welcomes=welcomes0 + n)
            res["storm_back_s"] = time.monotonic() - t0
            res["storm_listen_s"] = t_listen
            res["storm_cpu_s"] = cpu_seconds(server.popen.pid)
            res["storm_dials"] = fleet.total(2) - dials0
            res["storm_failed"] = fleet.total(3) - failed0
            res["storm_most_attempts"] = max(r[4] for r in fleet.latest.values())

        if not args.no_fanout:
            import uvloop

            cpu0 = cpu_seconds(server.popen.pid)
            secs, tally = uvloop.run(fan_out(tech, pairs))
            res["fanout_cpu_s"] = cpu_seconds(server.popen.pid) - cpu0
            res["fanout_s"] = secs
            res["fanout_tally"] = tally
    finally:
        if fleet is not None:
            fleet.stop()
        if baseline is not None:
            baseline.terminate()
            baseline.wait()
        h.stop_all()
    return res


def _db_url(h: Any) -> str:
    from server.config import ServerConfig

    return ServerConfig.load(h.server_home).db_url


def mib(b: float) -> str:
    return f"{b / 2**20:.1f} MiB"


def report(res: dict[str, Any]) -> None:
    n = res["agents"]
    per = (res["rss"] - res["rss_idle"]) / n
    print(f"\n== {n} agents ({res['workers']} agent processes; bulk enrollment "
          f"{res['enroll_s']:.1f} s)")
    print(f"{'':34}{'accept s':>10}{'server CPU s':>14}{'RSS growth':>14}{'per conn':>13}")
    if "base_rss" in res:
        bper = (res["base_rss"] - res["base_rss_idle"]) / n
        print(f"{'bare websockets TLS (uvloop)':34}{res['base_accept_s']:10.2f}"
              f"{res['base_accept_cpu_s']:14.2f}"
              f"{mib(res['base_rss'] - res['base_rss_idle']):>14}{bper / 1024:9.1f} KiB")
    print(f"{'hw-server agent gateway':34}{res['accept_s']:10.2f}{res['accept_cpu_s']:14.2f}"
          f"{mib(res['rss'] - res['rss_idle']):>14}{per / 1024:9.1f} KiB")
    if "base_rss" in res:
        bper = (res["base_rss"] - res["base_rss_idle"]) / n
        print(f"ratio per connection: {per / bper:.2f}x the baseline (goal <= 1.5x); accept "
              f"time {res['accept_s'] / res['base_accept_s']:.2f}x")
    print(f"server RSS {mib(res['rss'])} total with {n} agents (idle {mib(res['rss_idle'])}); "
          f"20k agents at this rate: {mib(res['rss_idle'] + 20000 * per)} (goal <= 1 GiB); "
          f"simulated agents use {res['agent_rss_total'] / n / 1024:.0f} KiB each")
    if "storm_back_s" in res:
        print(f"reconnect storm: all {n} back {res['storm_back_s']:.2f} s after the stop "
              f"(new server listening after {res['storm_listen_s']:.2f} s); server CPU "
              f"{res['storm_cpu_s']:.2f} s; {res['storm_dials']} dials, "
              f"{res['storm_failed']} failed, at most {res['storm_most_attempts']} attempts "
              "for one agent; none gave up")
    if "fanout_s" in res:
        rate = n / res["fanout_s"]
        print(f"fan-out: {n} concurrent signed diag requests answered in "
              f"{res['fanout_s']:.2f} s ({rate:.0f}/s; goal <= 2 s for 10k), server CPU "
              f"{res['fanout_cpu_s']:.2f} s ({res['fanout_cpu_s'] / n * 1000:.1f} ms per "
              f"request); replies {res['fanout_tally']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="200", help="N, or a comma list of N (default 200)")
    parser.add_argument("--workers", type=int, default=0,
                        help="agent processes (default: N/2500, between 2 and 8)")
    parser.add_argument("--ramp", type=int, default=64,
                        help="handshakes in flight per agent process on first connect")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for all agents to connect")
    parser.add_argument("--db", default="", help="store URL (default: SQLite in the home)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-storm", action="store_true")
    parser.add_argument("--no-fanout", action="store_true")
    args = parser.parse_args()
    levels = [int(x) for x in args.agents.split(",")]
    hard = raise_nofile()
    if max(levels) > hard - 100:
        parser.error(f"--agents {max(levels)} needs more descriptors than RLIMIT_NOFILE "
                     f"allows ({hard}); raise the hard limit (ulimit -Hn) or use fewer agents")
    print(f"machine: {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start, RLIMIT_NOFILE {hard}, "
          f"Python {sys.version.split()[0]}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    with tempfile.TemporaryDirectory(prefix="hw-bench-agents-") as tmp:
        for n in levels:
            res = level(n, args, Path(tmp))
            report(res)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
