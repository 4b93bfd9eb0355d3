"""Benchmark: on-site quotes per second, and concurrent bookings per second on SQLite with
zero double bookings.

    .venv/bin/python bench/booking.py [--quotes N] [--tickets N] [--techs N]

Quotes: ``server.onsite.quote.quote`` (eligibility, coverage tier, China working-day
calendar, slot classification, pricing) for N (city, slot) pairs cycling over every covered
city and the next 30 days. Baseline, same run: the working-day lookup alone
(``WorkCalendar.add_working_days`` for the tier's lead), which every quote needs.

Bookings: a fresh SQLite store (WAL, the server's settings), T field technicians in 成都 and
N escalated tickets; then every ticket is booked concurrently (asyncio.gather, as many
technician/customer requests at once) onto the same first slot date — the slot times of the
policy over the next working days, so technicians, hours and daily capacity are contended.
Reported: bookings/s, how many succeeded, how many were told the slot was taken, and the
double bookings found by SQL afterwards (two tickets of one technician sharing an hour:
must be 0). Baseline, same run and store: one INSERT transaction per ticket into a
primary-keyed table (the floor of one durable write per booking).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa

from server.onsite.calendar import WorkCalendar
from server.onsite.coverage import cities, nearest_base
from server.onsite.policy import load_policy
from server.onsite.quote import quote
from server.onsite.tickets import OnsiteDesk, SlotTaken
from server.store import Store

CN = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=CN)


def bench_quotes(n: int) -> tuple[float, float]:
    policy = load_policy()
    cal = WorkCalendar(policy)
    covered = [c for c in cities() if policy.tier(c.tier).covered]
    dist = {c.name: nearest_base(c, policy.bases)[1] for c in covered}
    slots = [NOW + timedelta(days=d, hours=h) for d in range(1, 31) for h in (0, 4)]
    t0 = time.perf_counter()
    for i in range(n):
        c = covered[i % len(covered)]
        quote(policy=policy, calendar=cal, customer_kind="individual", contract=None, city=c,
              distance_km=dist[c.name], service="hardware-repair", when=slots[i % len(slots)],
              urgent=False, now=NOW, case_state="needs-onsite")
    quotes = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(n):
        c = covered[i % len(covered)]
        cal.add_working_days(NOW.date(), policy.tier(c.tier).lead_working_days)
    base = n / (time.perf_counter() - t0)
    return quotes, base


async def bench_bookings(n_tickets: int, n_techs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hw-bench-booking-") as tmp:
        store = await Store.open(f"sqlite+aiosqlite:///{Path(tmp) / 'store.db'}")
        try:
            desk = OnsiteDesk(store, load_policy())
            for i in range(n_techs):
                await desk.add_field_tech(name=f"tech{i:02d}", base="成都",
                                          skills=["hardware-repair"], capacity=2, now=NOW)
            tickets = []
            for i in range(n_tickets):
                agent = f"ag-{i:05d}"
                secret = agent.encode().ljust(32, b"\0")
                await store.add_enroll_token(secret_hash=secret, customer=f"c{i}",
                                             kind="individual", city="成都",
                                             expires_at=NOW + timedelta(days=1), now=NOW)
                await store.redeem_enroll_token(
                    secret_hash=secret, now=NOW, agent_id=agent,
                    public_key=os.urandom(32), hostname="pc", os="Linux", software="bench")
                case, _ = await store.open_case(agent_id=agent, description="fan",
                                                request_id=f"oc-{i}", now=NOW)
                await store.set_case_state(case.number, "needs-onsite", actor="bench",
                                           now=NOW)
                t, _ = await desk.escalate(case.number, reason="bench", actor="bench", now=NOW)
                tickets.append(t)
            starts = sorted({s.start for t in tickets for s in t.slots})
            # every ticket asks for one of the first slots: heavy contention by design
            wanted = [starts[i % min(len(starts), 3)] for i in range(n_tickets)]
            t0 = time.perf_counter()
            results = await asyncio.gather(*(
                desk.book(t.ticket, start=w, accepted_by="phone", actor="bench", now=NOW)
                for t, w in zip(tickets, wanted, strict=True)), return_exceptions=True)
            elapsed = time.perf_counter() - t0
            ok = sum(1 for r in results if not isinstance(r, BaseException))
            taken = sum(1 for r in results if isinstance(r, SlotTaken))
            other = [r for r in results if isinstance(r, BaseException)
                     and not isinstance(r, SlotTaken)]
            async with store._engine.connect() as conn:
                doubles = (await conn.exec_driver_sql(
                    "SELECT COUNT(*) FROM (SELECT technician, booked_start FROM tickets "
                    "WHERE state = 'booked' GROUP BY technician, booked_start "
                    "HAVING COUNT(*) > 1)")).scalar_one()
                over_capacity = (await conn.exec_driver_sql(
                    "SELECT COUNT(*) FROM (SELECT technician, date(booked_start, '+8 hours') "
                    "AS d FROM tickets WHERE state = 'booked' GROUP BY technician, d "
                    "HAVING COUNT(*) > 2)")).scalar_one()
            # baseline: one durable INSERT transaction per ticket, same concurrency
            bench_t = sa.table("bench_rows", sa.column("k"))
            async with store._write_engine.begin() as conn:
                await conn.exec_driver_sql("CREATE TABLE bench_rows (k TEXT PRIMARY KEY)")

            async def insert(k: str) -> None:
                async with store._write_engine.begin() as conn:
                    await conn.execute(sa.insert(bench_t).values(k=k))

            t0 = time.perf_counter()
            await asyncio.gather(*(insert(t.ticket) for t in tickets))
            base = time.perf_counter() - t0
        finally:
            await store.close()
    if other:
        raise SystemExit(f"unexpected booking errors: {other[:3]}")
    return {"attempts": n_tickets, "booked": ok, "taken": taken, "seconds": elapsed,
            "per_s": n_tickets / elapsed, "doubles": doubles, "over_capacity": over_capacity,
            "base_per_s": n_tickets / base}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quotes", type=int, default=5000)
    ap.add_argument("--tickets", type=int, default=200)
    ap.add_argument("--techs", type=int, default=10)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.2f}")
    q, qb = bench_quotes(args.quotes)
    print(f"quotes: {q:,.0f}/s over {args.quotes} quotes "
          f"(baseline, working-day lookup alone: {qb:,.0f}/s; quote costs {qb / q:.1f}x)")
    b = asyncio.run(bench_bookings(args.tickets, args.techs))
    print(f"bookings: {b['attempts']} concurrent requests for 3 slots with {args.techs} "
          f"technicians (capacity 2/day): {b['booked']} booked, {b['taken']} told the slot "
          f"is taken, in {b['seconds']:.2f} s = {b['per_s']:,.0f} requests/s")
    print(f"  double bookings: {b['doubles']}; days over capacity: {b['over_capacity']}")
    print(f"  baseline, one INSERT transaction per request, same concurrency: "
          f"{b['base_per_s']:,.0f}/s (booking costs {b['base_per_s'] / b['per_s']:.1f}x)")
    return 0 if b["doubles"] == 0 and b["over_capacity"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
