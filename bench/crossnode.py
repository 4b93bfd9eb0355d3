"""Cross-node command round trip (two nodes + NATS + PostgreSQL) vs single-node, same run.

Starts two real hw-server nodes on one fresh PostgreSQL database (the server of
``HW_TEST_POSTGRES_URL``, default postgres@127.0.0.1:5432) joined by the NATS server at
127.0.0.1:4222, and one agent (no-op probe plugin) connected to node A. Times N sequential
signed diag round trips from a technician on node A (single-node path: same node, same
PostgreSQL) and from one on node B (B -> NATS -> A -> agent -> A stores -> NATS -> B),
interleaved in rounds so both see the same machine load. Goal (issue 7): p50 cross-node
<= 2x single-node.

    .venv/bin/python bench/crossnode.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from rtt import pct, time_rtt  # noqa: E402

from tests import postgres  # noqa: E402
from tests.harness import Harness, free_port  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    reason = postgres.unavailable_reason_sync()
    if reason:
        print(f"skipped: {reason}")
        return 0
    url = postgres.create_database_sync()
    results: dict[str, list[float]] = {"a": [], "b": []}
    try:
        with tempfile.TemporaryDirectory(prefix="hw-bench-nodes-") as tmp:
            h = Harness(Path(tmp))
            h.env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), h.env["PYTHONPATH"]])
            try:
                pa, pb = h.port, free_port()
                h.run("hw-server", "init", "--home", str(h.server_home), "--listen",
                      f"127.0.0.1:{pa}", "--public-url", f"wss://127.0.0.1:{pa}", "--db", url)
                for name, port in (("a", pa), ("b", pb)):
                    proc = h.spawn(f"node-{name}", "hw-server", "run", "--home",
                                   str(h.server_home), "--listen", f"127.0.0.1:{port}",
                                   "--bus", "nats://127.0.0.1:4222", "--node-id", name)
                    proc.wait_log(r"listening on wss://")
                home = h.enroll("A")
                h.start_agent(home, env={"HW_PLUGINS": "noopprobe"})
                case = h.help(home).splitlines()[0]
                techs = {}
                for name, port in (("a", pa), ("b", pb)):
                    t = h.add_tech(f"bench{name}")
                    profile = t / "profile.json"
                    data = json.loads(profile.read_text())
                    data["urls"] = [f"wss://127.0.0.1:{port}"]
                    profile.write_text(json.dumps(data))
                    h.grant(home, case, f"bench{name}", duration="8h")
                    techs[name] = t
                per_round = max(1, args.requests // args.rounds)
                for _ in range(args.rounds):
                    for name in ("a", "b"):
                        results[name] += asyncio.run(time_rtt(techs[name], case, per_round))
            finally:
                h.stop_all()
    finally:
        postgres.drop_database_sync(url)
    ms = 1000.0
    a, b = results["a"], results["b"]
    print(f"requests: {len(a)} per path, sequential, in {args.rounds} interleaved rounds, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(f"single node (tech and agent on A, PostgreSQL)  p50 {pct(a, .5) * ms:7.3f} ms   "
          f"p99 {pct(a, .99) * ms:7.3f} ms")
    print(f"cross node  (tech on B, agent on A, NATS)      p50 {pct(b, .5) * ms:7.3f} ms   "
          f"p99 {pct(b, .99) * ms:7.3f} ms")
    print(f"ratio p50: {pct(b, .5) / pct(a, .5):.2f}x (goal <= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
