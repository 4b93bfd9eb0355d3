"""What recording sent requests costs the store, per relayed command, vs the same writes without.

Issue 13 (break 2a): the relay records every request it sends (``requests`` table) and a result
is stored only if it answers one. Per command that is one more INSERT, in the batch that already
appends the command's audit entry, and one SELECT and one UPDATE by primary key in the batch that
stores the result. This bench drives the store in-process the way the server's hot path does (the
group-committed writer, SQLite fast path, one command at a time as bench/rtt.py sends them):

- baseline: job 1 audits the command; job 2 stores the result with its audit entry and case move;
- checked:  job 1 audits the command and records the request; job 2 checks the request, stores
  the result, marks the request answered.

Both run alternately in the same process on the same database file (rounds of ``--commands``),
so machine load hits both alike; it prints the CPU time (process, all threads) and the wall time
per command of each, and the difference.

    .venv/bin/python bench/requests.py [--commands 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.store import Store  # noqa: E402
from server.writer import Writer  # noqa: E402

T0 = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


async def command(store: Store, writer: Writer, case: str, n: int, checked: bool) -> None:
    """One relayed command's writes: audit (+ request record), then the result."""
    request_id, now = f"rq-{n}", T0 + timedelta(microseconds=n)

    async def sent(conn: Any) -> None:
        await store.append_audit_in(conn, event="command", actor="tech:alice", subject=case,
                                    detail={"action": "diag", "agent": "ag-1",
                                            "verdict": "relayed", "request": request_id,
                                            "args": {}}, now=now)
        if checked:
            await store.record_request_in(conn, request_id=request_id, agent_id="ag-1",
                                          case=case, action="diag", now=now)

    await writer.submit(sent)
    await writer.submit(lambda conn: store.store_result_in(
        conn, msg_id=f"rs-{n}", request_id=request_id, case=case, agent_id="ag-1",
        action="diag", ok=True, payload=b'[{"probe":"noop","version":"1","status":"ok"}]',
        error="", now=now, case_state="diagnosed",
        audit_detail={"action": "diag", "request": request_id, "result": f"rs-{n}",
                      "ok": True, "error": ""}, answers_request=checked))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(f"sqlite+aiosqlite:///{Path(tmp) / 'store.db'}")
        writer = Writer(store)
        try:
            secret = b"s".ljust(32, b"\0")
            await store.add_enroll_token(secret_hash=secret, customer="Li Wei",
                                         kind="individual", city="Chengdu",
                                         expires_at=T0 + timedelta(days=1), now=T0)
            await store.redeem_enroll_token(secret_hash=secret, now=T0, agent_id="ag-1",
                                            public_key=b"k" * 32, hostname="pc", os="Linux",
                                            software="bench")
            case, _ = await store.open_case(agent_id="ag-1", description="bench",
                                            request_id="o1", now=T0)
            n = 0
            cpu: dict[bool, list[float]] = {False: [], True: []}
            wall: dict[bool, list[float]] = {False: [], True: []}
            for _round in range(args.rounds):
                for checked in (False, True):
                    c0, w0 = time.process_time(), time.perf_counter()
                    for _ in range(args.commands):
                        n += 1
                        await command(store, writer, case.number, n, checked)
                    cpu[checked].append((time.process_time() - c0) / args.commands * 1e3)
                    wall[checked].append((time.perf_counter() - w0) / args.commands * 1e3)
        finally:
            await writer.close()
            await store.close()
    print(f"{args.commands} commands x {args.rounds} rounds each, alternating, SQLite fast path "
          "(group-committed writer, one command at a time)")
    for checked, name in ((False, "baseline (no request record)"),
                          (True, "checked (request recorded, result checked)")):
        print(f"{name:<44} CPU {statistics.median(cpu[checked]):.3f} ms/command   "
              f"wall {statistics.median(wall[checked]):.3f} ms/command")
    d_cpu = statistics.median(cpu[True]) - statistics.median(cpu[False])
    d_wall = statistics.median(wall[True]) - statistics.median(wall[False])
    print(f"{'added by the request record':<44} CPU {d_cpu:+.3f} ms/command   "
          f"wall {d_wall:+.3f} ms/command")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
