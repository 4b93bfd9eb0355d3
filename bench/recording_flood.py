"""A rogue agent floods the server with session recordings (issue 13, break 2(c)).

Real server and agent processes: one real SSH session gives a brokered tunnel, then the
agent's own key sends ``--count`` well-formed recordings of ~500 KiB naming that tunnel, as
fast as the server answers. Run twice in the same run: with the quotas out of reach (the
baseline: what the server did before quotas, apart from validating and sealing) and with the
default quotas (``recordings_per_minute`` 20, ``recording_bytes_per_hour`` 64 MiB,
``recordings_per_tunnel`` 64). Prints, for each, how many were kept, how much the store
grew, and the seconds the flood took.

    .venv/bin/python bench/recording_flood.py [--count 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proto import messages as m  # noqa: E402
from tests.e2e.test_recording_trust import _send, _session, _setup, cast, rec  # noqa: E402
from tests.harness import Harness  # noqa: E402

UNLIMITED = {"recordings_per_minute": 10**9, "recording_bytes_per_hour": 2**40,
             "recordings_per_tunnel": 10**9}


def store_size(h: Harness) -> int:
    return sum(p.stat().st_size for p in h.server_home.glob("store.db*"))


def flood(count: int, settings: dict[str, int]) -> tuple[int, int, int, float]:
    with tempfile.TemporaryDirectory(prefix="hw-bench-rec-") as tmp:
        h = Harness(Path(tmp))
        try:
            w = _setup(h, Path(tmp), **settings)
            h.grant(w.home, w.case, "alice", scopes="shell")
            tunnel = _session(w, "true")
            before = store_size(h)
            data = cast(size=500_000)
            start = time.perf_counter()
            replies = _send(w, w.home, *[rec(f"rec-flood{i:04d}", w.case, tunnel=tunnel,
                                             data=data) for i in range(count)])
            took = time.perf_counter() - start
            kept = sum(isinstance(r, m.Ack) for r in replies)
            return kept, before, store_size(h), took
        finally:
            h.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60)
    args = parser.parse_args()
    if not 1 <= args.count <= 10_000:
        parser.error("--count takes 1..10000")
    for name, settings in (("baseline: quotas out of reach", UNLIMITED),
                           ("default quotas", {})):
        kept, before, after, took = flood(args.count, settings)
        print(f"{name:32} {kept:4}/{args.count} kept; store {before / 1e6:6.2f} MB -> "
              f"{after / 1e6:6.2f} MB; flood took {took:5.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
