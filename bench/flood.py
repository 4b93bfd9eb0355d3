"""A technician's latency while one address floods the server with connections that never
start TLS (issue 13, break 4).

Starts a real hw-server (default limits: 256 unauthenticated connections per address, 5 s
TLS handshake timeout). Measures, in the same run, a technician on 127.0.0.1

- ``request``: one request (``list_cases``) on an open session, and
- ``session``: a new connection (TCP, TLS, hello/challenge/proof) plus that request,

first idle, then while a separate process on 127.0.0.2 opens raw TCP connections in a
bounded loop (at most ``--attempts``, ``--rate`` per second) and holds them, sending
nothing. Prints p50/p95 of
each phase, the ratio flood/idle, failed requests, and what the flooding address achieved
(accepted and held vs closed at once). Goal: no failed request, p95 <= 3x idle.

    .venv/bin/python bench/flood.py [--samples 200] [--attempts 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proto import messages as m  # noqa: E402
from tech.client import Profile, TechClient  # noqa: E402
from tech.errors import TechError  # noqa: E402
from tests.harness import Harness  # noqa: E402

FLOODER = r"""
import errno, json, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
port, attempts, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
rate = float(sys.argv[4])  # connection attempts per second at most (0: as fast as it can)
start = time.monotonic()
held, opened, refused, failed = [], 0, 0, 0
announced = False
deadline = time.monotonic() + seconds
def scan():
    global refused, held
    keep = []
    for s in held:
        try:
            gone = s.recv(1, socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            gone = False
        except OSError:
            gone = True
        if gone:
            refused += 1
            s.close()
        else:
            keep.append(s)
    held = keep
def report():
    print(json.dumps({"opened": opened, "connect_failed": failed,
                      "closed_by_server": refused, "held_at_end": len(held)}), flush=True)
try:
  while opened + failed < attempts and time.monotonic() < deadline:
      if rate and opened + failed > (time.monotonic() - start) * rate:
          time.sleep(0.001)
          continue
      s = socket.socket()
      try:
          s.bind(("127.0.0.2", 0))
          s.connect(("127.0.0.1", port))
      except OSError:
          failed += 1
          s.close()
          continue
      opened += 1
      held.append(s)
      if opened % 100 == 0:
          scan()
          if refused and not announced:
              print("refused", flush=True)
              announced = True
  while time.monotonic() < deadline:  # the attempts are spent: hold what is held
      time.sleep(0.2)
      scan()
  scan()
finally:
    report()
"""


async def requests(client: TechClient, n: int) -> tuple[list[float], int]:
    times, failed = [], 0
    for _ in range(n):
        t = time.perf_counter()
        try:
            reply = await client.call(m.ListCases(id=client.new_id()))
            assert isinstance(reply, m.CaseList)
        except TechError:
            failed += 1
            continue
        times.append(time.perf_counter() - t)
    return times, failed


async def sessions(profile: Profile, n: int) -> tuple[list[float], int]:
    times, failed = [], 0
    for _ in range(n):
        t = time.perf_counter()
        try:
            async with TechClient(profile) as client:
                await client.call(m.ListCases(id=client.new_id()))
        except TechError:
            failed += 1
            continue
        times.append(time.perf_counter() - t)
    return times, failed


async def phase(profile: Profile, samples: int) -> dict[str, tuple[list[float], int]]:
    async with TechClient(profile) as client:
        req = await requests(client, samples)
    return {"request": req, "session": await sessions(profile, max(10, samples // 4))}


def p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))] * 1000 if xs else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--attempts", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=2000.0,
                        help="connection attempts per second of the flooding address at "
                        "most (0: as fast as one process can; default 2000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        h = Harness(Path(tmp))
        try:
            h.init_server()
            server = h.start_server()
            profile = Profile.load(h.add_tech("alice"))
            idle = asyncio.run(phase(profile, args.samples))
            flooder = subprocess.Popen(
                [sys.executable, "-c", FLOODER, str(h.port), str(args.attempts), "60",
                 str(args.rate)],
                stdout=subprocess.PIPE, text=True)
            assert flooder.stdout is not None
            first = flooder.stdout.readline().strip()  # "refused": the cap is reached
            flood = asyncio.run(phase(profile, args.samples)) if first == "refused" else None
            flooder.terminate()
            out = flooder.communicate(timeout=30)[0].strip().splitlines()
            stats = json.loads(out[-1]) if out and out[-1].startswith("{") else {}
            refusals = [ln for ln in server.text().splitlines() if "before TLS" in ln]
        finally:
            h.stop_all()
    if flood is None:
        print(f"the flooding address was never refused ({first!r}); nothing to compare")
        return 1
    ok = True
    rate = f"{args.rate:g}/s" if args.rate else "as fast as it can"
    print(f"technician latency, idle vs one address flooding ({rate}, at most "
          f"{args.attempts} connection attempts), same run:")
    for kind in ("request", "session"):
        (it, ifail), (ft, ffail) = idle[kind], flood[kind]
        ratio = p(ft, 95) / p(it, 95)
        ok &= not ffail and ratio <= 3
        print(f"  {kind:8} idle p50 {p(it, 50):6.1f} ms p95 {p(it, 95):6.1f} ms | flood p50 "
              f"{p(ft, 50):6.1f} ms p95 {p(ft, 95):6.1f} ms | p95 x{ratio:.2f} | failed "
              f"{ifail}+{ffail} of {len(it) + ifail}+{len(ft) + ffail} (goal: 0, x<=3)")
    print(f"  flooding address: {stats}")
    print(f"  server summary lines: {len(refusals)}; first: "
          f"{refusals[0][:160] if refusals else '-'}")
    print(f"  median flood request: {statistics.median(flood['request'][0]) * 1000:.1f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
