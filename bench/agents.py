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
   ``hw-agent run``: full jitter, 1 s growing x1.6 to 60 s, reset after 30 s up; a 503's
   Retry-After with jitter) and never give up.
3. **Fan-out**: one technician signs one ``ping`` for audience ``all`` (``hw-tech ping
   --all``: :class:`proto.command.FanoutCommand`) and sends it; the server checks it once,
   audits it once, sends it to every connected agent, counts the ``pong``s and answers
   ``fanout_done``. Reported, for ``--fanouts`` pings in a row: how many answered ok, the
   technician's round trip, the server's own first-send-to-last-answer time, and the
   server's CPU. Goal (issue 7): <= 2 s for 10k.
4. **One-agent commands in flight** (``--diag``): N concurrent signed ``RunDiag`` requests,
   one per agent (each signed by the technician's key for that agent and its case), sent
   through the technician gateway over ceil(N/16) technician connections (the server admits
   16 requests in flight per connection); timed from the first send to the last
   ``DiagDone``. Every request is verified, audited before it leaves, relayed, answered,
   stored with its audit entry and acknowledged the way a real one is. Reported: the time,
   the answers by kind, the server's CPU per command. Goal (issue 12): <= 20 s for 10k
   (207 s before fan-out existed).

The simulated agents speak the real protocol: TLS 1.3 with the pinned CA, hello, the
Ed25519 challenge-proof with their own key, websocket pings every 20 s (as ``hw-agent``),
and a ``Pong`` to every fan-out ``Ping`` after checking it as ``hw-agent`` does (chain to the pinned
org key, revocation, signature, audience, validity, the agent's own nonce cache) -- except
that the agents of one process share one verdict per distinct signed bytes, as the 10k
agents' own CPUs would each do that check in parallel. To a ``Request`` they answer a
``Result`` (no probes run) without checking the command or a consent grant (the real agent
does, on its own CPU; ``bench/rtt.py`` measures that path). They run no probes, keep no outbox
or log, and run many agents per
process (``--workers`` processes, uvloop) so that the server is what gets measured. At most
``--ramp`` handshakes per worker are in flight during the first connect (a fleet does not
start in one millisecond); reconnects after the restart are not limited: only the backoff
spreads them.

Set-up writes the agents straight into the server's store (bench only): one customer, N
agents with deterministic Ed25519 keys (``sha256(b"hw-bench-agent" + i)``) and one open case
each, inserted in bulk with the store's own table definitions after
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
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus  # noqa: E402

from agent.backoff import STABLE_AFTER, Backoff, parse_retry_after  # noqa: E402
from proto import MAX_FRAME_SIZE  # noqa: E402
from proto import messages as m  # noqa: E402
from proto.command import CommandRefused, ReplayCache, verify_fanout  # noqa: E402
from proto.errors import ProtocolError  # noqa: E402
from proto.session import ClientSession  # noqa: E402

SOFTWARE = "hw-bench-agent/1"
REPORT_EVERY_S = 0.2
#: bytes of the hw-server's ping frame to an agent (measured: a fan-out ping of "all"
#: with the bench technician's certificate); the baseline broadcasts a frame this size
PING_FRAME_SIZE = 1100
ORG_PUB_ENV = "HW_BENCH_ORG_PUB"  # the org key the simulated agents pin (hex), from level()

BASELINE_SERVER = """
import asyncio, logging, ssl, sys, resource
logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # clients killed at the end: noise
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
import time
from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed
conns, answers, everyone = set(), [0], asyncio.Event()
async def idle(ws):
    conns.add(ws)
    try:
        async for _ in ws:  # an answer to the fan-out frame
            answers[0] += 1
            if answers[0] == len(conns):
                everyone.set()
    except ConnectionClosed:
        pass  # the clients are killed at the end
    finally:
        conns.discard(ws)
async def fan_out(frame):  # the same frame to every connection, then wait for all answers
    answers[0] = 0
    everyone.clear()
    t0 = time.perf_counter()
    broadcast(conns, frame, text=True)
    try:
        await asyncio.wait_for(everyone.wait(), 60)
    except TimeoutError:
        pass
    return time.perf_counter() - t0
async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    async with serve(idle, "127.0.0.1", int(sys.argv[1]), ssl=ctx, compression=None,
                     max_size=1 << 20, max_queue=4, ping_interval=30, ping_timeout=20,
                     server_header=None):
        print("ready", flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            size = int(line.split()[1])  # "fanout SIZE": a frame of the ping's size
            secs = await fan_out(b'"' + b"x" * (size - 2) + b'"')
            print(f"fanout {secs:.6f} {answers[0]} {len(conns)}", flush=True)
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
    welcomes: int = 0
    busy: int = 0  # dials answered 503 + Retry-After (the server's admission control)
    timeouts: int = 0  # dials that ran into the 10 s open timeout
    connected_ever: set[int] = field(default_factory=set)


class Report(NamedTuple):
    """One worker's counters, sent to the parent every REPORT_EVERY_S."""

    connected: int = 0
    connected_ever: int = 0
    dials: int = 0
    failed_dials: int = 0
    most_attempts: int = 0
    rss: int = 0
    welcomes: int = 0
    busy: int = 0
    timeouts: int = 0


async def run_agent(i: int, url: str, ctx: ssl.SSLContext, c: Counters, ramp: asyncio.Semaphore,
                    raw: bool) -> None:
    """One simulated agent: dial, prove, answer pings, reconnect with the real backoff."""
    key = agent_key(i)
    agent_id = agent_id_for(raw_public(key))
    backoff = Backoff()  # hw-agent run's defaults: 1 s growing x1.6 to 60 s, full jitter
    replay = ReplayCache(max_entries=64)  # this agent's own nonces (fan-out pings)
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
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ProtocolError) as exc:
            c.failed_dials += 1
            wait = (parse_retry_after(exc.response.headers.get("Retry-After"))
                    if isinstance(exc, InvalidStatus) else None)  # as agent/connection.py
            if wait is not None:
                c.busy += 1
            elif isinstance(exc, TimeoutError):
                c.timeouts += 1
            await asyncio.sleep(backoff.next() if wait is None else backoff.busy(wait))
            continue
        first = False
        c.most_attempts = max(c.most_attempts, attempts)
        attempts = 0
        c.connected += 1
        c.welcomes += 1
        c.connected_ever.add(i)
        up_since = time.monotonic()
        try:
            if raw:  # the baseline: answer any frame with a small one (its fan-out)
                async for _frame in ws:
                    await ws.send(b'{"type":"pong"}', text=True)
            else:
                assert session is not None
                async for frame in ws:
                    msg = session.receive(frame)
                    if isinstance(msg, m.Ping):
                        await ws.send(session.send(check_ping(msg, replay)), text=True)
                    elif isinstance(msg, m.Request):  # --diag: answer at once, no probes
                        result = m.Result(id="rs-" + secrets.token_hex(8), re=msg.id,
                                          case=msg.case, action=msg.action, ok=True)
                        await ws.send(session.send(result), text=True)
        except (ConnectionClosed, ProtocolError, OSError):
            pass
        finally:
            c.connected -= 1
        if time.monotonic() - up_since >= STABLE_AFTER:
            backoff.reset()
        await asyncio.sleep(backoff.next())


#: signed fan-out bytes -> the verdict of verify_fanout without the replay check. Every
#: simulated agent in a worker process receives the same signed bytes; a real agent checks
#: them on its own CPU, here the worker checks them once and each agent then checks only its
#: own nonce cache (the CPU of 10k agents' signature checks is not the server's).
_verdicts: dict[tuple[bytes, bytes, str], tuple[datetime, str] | str] = {}
BENCH_CUSTOMER = "Bench Ltd"


def check_ping(msg: m.Ping, replay: ReplayCache) -> m.Pong:
    """What hw-agent does with a fan-out ping (agent/client.py ``_ping``), minus its log."""
    now = datetime.now(UTC)
    key = (msg.command.payload, msg.command.signature, msg.command.certificate)
    verdict = _verdicts.get(key)
    if verdict is None:
        try:
            ok = verify_fanout(msg.command, org_pub=bytes.fromhex(os.environ[ORG_PUB_ENV]),
                               now=now, customer=BENCH_CUSTOMER)
            verdict = (ok.command.expires_at, ok.command.nonce.hex())
        except CommandRefused as exc:
            verdict = exc.reason.value
        _verdicts[key] = verdict
    if isinstance(verdict, str):
        return m.Pong(re=msg.id, ok=False, reason=verdict)
    expires_at, nonce = verdict
    try:
        replay.check_and_add(bytes.fromhex(nonce), expires_at=expires_at, now=now)
    except CommandRefused as exc:
        return m.Pong(re=msg.id, ok=False, reason=exc.reason.value)
    return m.Pong(re=msg.id, ok=True)


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
        out.put((wid, Report(rss=me.memory_info().rss)))  # ready
        await asyncio.to_thread(go.wait)
        tasks = [asyncio.create_task(run_agent(i, url, ctx, c, sem, raw)) for i in range(lo, hi)]
        while True:
            out.put((wid, Report(c.connected, len(c.connected_ever), c.dials, c.failed_dials,
                                 c.most_attempts, me.memory_info().rss, c.welcomes, c.busy,
                                 c.timeouts)))
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
        self.latest: dict[int, Report] = {}
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
                wid, report = self.q.get_nowait()
            except queue.Empty:
                return
            self.latest[wid] = report

    def total(self, counter: str) -> int:
        self.poll()
        return sum(getattr(r, counter) for r in self.latest.values())

    def connected(self) -> int:
        return self.total("connected")

    def wait_connected(self, n: int, timeout: float, what: str, welcomes: int = 0) -> float:
        """Seconds until ``n`` agents are connected and at least ``welcomes`` connections
        were ever welcomed (raises after ``timeout``)."""
        t0 = time.monotonic()
        while self.connected() < n or self.total("welcomes") < welcomes:
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
    """Write n agents of one customer and one open case each into the store; return
    [(agent_id, case)]."""
    import sqlalchemy as sa

    from server import store as st
    from server.store import schema

    now = datetime.now(UTC)
    day = st.china_day(now)
    ids = [agent_id_for(raw_public(agent_key(i))) for i in range(n)]
    pairs = [(a, st.case_number(day, i + 1)) for i, a in enumerate(ids)]

    async def write() -> None:
        store = await st.Store.open(db_url)
        try:
            async with store._write_engine.begin() as conn:
                cid = (await conn.execute(sa.insert(schema.customers).values(
                    name="Bench Ltd", kind="enterprise", city="上海", created_at=now
                ).returning(schema.customers.c.id))).scalar_one()
                for lo in range(0, n, 2000):
                    chunk = range(lo, min(n, lo + 2000))
                    await conn.execute(sa.insert(schema.agents), [
                        {"agent_id": ids[i], "customer_id": cid,
                         "public_key": raw_public(agent_key(i)), "hostname": f"bench-{i}",
                         "os": "Linux", "software": SOFTWARE, "enrolled_at": now}
                        for i in chunk])
                    await conn.execute(sa.insert(schema.cases), [
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


async def fan_out(tech_home: Path, wait: float) -> tuple[float, m.FanoutDone]:
    """One signed fan-out ping to every online agent; (seconds until the answer, answer)."""
    from tech.client import Profile, TechClient

    async with TechClient(Profile.load(tech_home)) as client:
        signed = client.sign_fanout("all")
        t0 = time.perf_counter()
        done = await client.call(m.Fanout(id=client.new_id(), command=signed, timeout=wait))
        secs = time.perf_counter() - t0
    assert isinstance(done, m.FanoutDone)
    return secs, done


#: requests in flight per technician connection (server.app.TECH_CONCURRENCY)
TECH_CONCURRENCY = 16


async def diag_all(tech_home: Path, pairs: list[tuple[str, str]], server_pid: int
                   ) -> tuple[float, float, dict[str, int]]:
    """One signed diag request per agent, all in flight at once over ceil(N/16) technician
    connections; (seconds until the last answer, server CPU seconds, answers by kind)."""
    from proto import codec
    from tech.client import Profile, TechClient

    profile = Profile.load(tech_home)
    groups = [pairs[i:i + TECH_CONCURRENCY] for i in range(0, len(pairs), TECH_CONCURRENCY)]
    clients: list[TechClient] = []
    try:
        for _ in groups:  # connected and signed before the clock starts
            client = TechClient(profile)
            await client.__aenter__()
            clients.append(client)
        frames = [[codec.encode(m.RunDiag(
            id=f"dq-{g}-{k}", case=case, timeout=300.0,
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

        cpu0 = cpu_seconds(server_pid)
        t0 = time.perf_counter()
        await asyncio.gather(*(one(c, b) for c, b in zip(clients, frames, strict=True)))
        return time.perf_counter() - t0, cpu_seconds(server_pid) - cpu0, tally
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
        from server.pki import org_public_raw
        os.environ[ORG_PUB_ENV] = org_public_raw(h.server_home).hex()  # workers inherit it
        cafile = h.server_home / "ca.crt"
        workers = args.workers or max(2, min(8, math.ceil(n / 2500)))
        res["workers"] = workers

        if not args.no_baseline:
            port = free_port()
            baseline = subprocess.Popen(
                [sys.executable, "-c", BASELINE_SERVER, str(port),
                 str(h.server_home / "server.crt"), str(h.server_home / "server.key")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
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
            if not args.no_fanout:  # bare broadcast of a ping-sized frame, answered by all
                res["base_fanout"] = []
                assert baseline.stdin is not None
                for _ in range(args.fanouts):
                    cpu0 = cpu_seconds(baseline.pid)
                    baseline.stdin.write(f"fanout {PING_FRAME_SIZE}\n")
                    baseline.stdin.flush()
                    _, secs, answered, held = baseline.stdout.readline().split()
                    res["base_fanout"].append((float(secs), cpu_seconds(baseline.pid) - cpu0,
                                               int(answered), int(held)))
                    time.sleep(1.0)
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
        res["agent_rss_total"] = fleet.total("rss")

        if not args.no_storm:
            dials0, failed0 = fleet.total("dials"), fleet.total("failed_dials")
            welcomes0, busy0 = fleet.total("welcomes"), fleet.total("busy")
            timeouts0 = fleet.total("timeouts")
            t0 = time.monotonic()
            server.stop()
            res["storm_stop_s"] = time.monotonic() - t0
            h.procs.remove(server)
            server = h.start_server()
            t_listen = time.monotonic() - t0
            fleet.wait_connected(n, args.timeout, "reconnect storm", welcomes=welcomes0 + n)
            res["storm_back_s"] = time.monotonic() - t0
            res["storm_listen_s"] = t_listen
            res["storm_cpu_s"] = cpu_seconds(server.popen.pid)
            res["storm_dials"] = fleet.total("dials") - dials0
            res["storm_failed"] = fleet.total("failed_dials") - failed0
            res["storm_busy"] = fleet.total("busy") - busy0
            res["storm_timeouts"] = fleet.total("timeouts") - timeouts0
            res["storm_most_attempts"] = max(r.most_attempts for r in fleet.latest.values())

        if not args.no_fanout:
            import uvloop

            runs = []
            for _ in range(args.fanouts):
                cpu0 = cpu_seconds(server.popen.pid)
                secs, done = uvloop.run(fan_out(tech, 60.0))
                runs.append((secs, cpu_seconds(server.popen.pid) - cpu0, done))
                time.sleep(1.0)
            res["fanout_runs"] = runs

        if args.diag:
            import uvloop

            res["diag"] = uvloop.run(diag_all(tech, pairs, server.popen.pid))
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
              f"(old server stopped in {res['storm_stop_s']:.2f} s, new server listening "
              f"after {res['storm_listen_s']:.2f} s); server CPU "
              f"{res['storm_cpu_s']:.2f} s; {res['storm_dials']} dials, "
              f"{res['storm_failed']} failed ({res['storm_busy']} told 503 busy, retry "
              f"after N s; {res['storm_timeouts']} timed out), at most "
              f"{res['storm_most_attempts']} attempts for one agent; none gave up")
    for k, (secs, cpu, answered, held) in enumerate(res.get("base_fanout", []), 1):
        print(f"baseline fan-out {k}: bare websockets broadcast of a {PING_FRAME_SIZE}-byte "
              f"frame, {answered} of {held} answered in {secs:.3f} s; server CPU {cpu:.2f} s "
              f"({cpu / max(1, held) * 1e6:.0f} us per connection)")
    for k, (secs, cpu, done) in enumerate(res.get("fanout_runs", []), 1):
        misses = done.counts
        print(f"fan-out {k}: one signed ping to all: {done.ok} of {done.sent} agents answered "
              f"ok; technician's round trip {secs:.3f} s (server: first send to last answer "
              f"{done.seconds:.3f} s; goal <= 2 s for 10k); server CPU {cpu:.2f} s "
              f"({cpu / max(1, done.sent) * 1e6:.0f} us per agent); misses {misses}")
    if "diag" in res:
        secs, cpu, tally = res["diag"]
        print(f"one-agent diag commands: {n} signed RunDiag in flight at once (one per agent, "
              f"{math.ceil(n / TECH_CONCURRENCY)} technician connections): all answered in "
              f"{secs:.2f} s (goal <= 20 s for 10k; 207 s before fan-out existed); answers "
              f"{tally}; server CPU {cpu:.2f} s ({cpu / n * 1e3:.2f} ms per command)")


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
    parser.add_argument("--diag", action="store_true",
                        help="also send one signed diag request to every agent at once")
    parser.add_argument("--fanouts", type=int, default=3,
                        help="fan-out pings to send, one after another (default 3)")
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
