"""Benchmark: the full built-in probe run (network checks excluded) against a bare psutil
snapshot of the same metrics.

    .venv/bin/python bench/probes.py [--rounds N]

Measured: ``agent.runner.run_probes`` with the real plugin manager (built-ins only,
autoload off, every probe but ``network``, whose DNS and TCP checks wait on the network):
plugin hooks, worker threads, timeouts, sanitising, evaluation. The runner runs probes
concurrently, so the two 0.2 s samples (cpu, processes) overlap there and not in the
baseline.
Baseline: the same psutil and stdlib calls made one after another in plain code, with the
same CPU sampling interval (``plugins.cpu.SAMPLE_INTERVAL_S``). Both are timed in every
round, alternating which goes first. Goal: median ratio (runner / baseline) <= 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from agent.runner import list_probes, run_probes
from plugins import PLUGINS_ENV, get_plugin_manager
from plugins.api import ProbeContext
from plugins.cpu import SAMPLE_INTERVAL_S
from proto.messages import ProbeStatus

GOAL = 1.5


def bare_snapshot() -> dict[str, Any]:
    """The metrics the built-in probes read, read sequentially with no framework."""
    out: dict[str, Any] = {}
    boot = psutil.boot_time()
    out["system"] = (
        platform.system(), platform.release(), platform.version(), platform.machine(),
        socket.gethostname(), boot, time.time() - boot,
        datetime.now().astimezone().utcoffset(), platform.python_version(),
        metadata.version("helloword-support"),
    )
    out["cpu"] = (
        psutil.cpu_percent(interval=SAMPLE_INTERVAL_S, percpu=True),
        psutil.cpu_count(), psutil.cpu_count(logical=False),
        os.getloadavg() if hasattr(os, "getloadavg") else None,
        psutil.cpu_freq(),
    )
    out["memory"] = (psutil.virtual_memory(), psutil.swap_memory())
    mounts = []
    for part in psutil.disk_partitions(all=False):
        usage = psutil.disk_usage(part.mountpoint)
        inodes = os.statvfs(part.mountpoint) if hasattr(os, "statvfs") else None
        mounts.append((part, usage, inodes))
    out["disk"] = mounts
    procs = list(psutil.process_iter(["name"]))
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(SAMPLE_INTERVAL_S)
    sample = []
    for p in procs:
        try:
            sample.append((p.pid, p.info["name"], p.cpu_percent(None), p.memory_info().rss,
                           p.status()))
        except psutil.Error:
            pass
    out["processes"] = sample
    out["thermal"] = (getattr(psutil, "sensors_temperatures", dict)(),
                      getattr(psutil, "sensors_fans", dict)())
    out["power"] = getattr(psutil, "sensors_battery", lambda: None)()
    out["services"] = Path("/run/systemd/system").is_dir()
    out["smart"] = shutil.which("smartctl")
    return out


def summary(samples: list[float]) -> tuple[float, float]:
    """Median and 90th percentile, in milliseconds."""
    p90 = statistics.quantiles(samples, n=10, method="inclusive")[8]
    return statistics.median(samples) * 1000, p90 * 1000


async def measure(rounds: int) -> tuple[list[float], list[float]]:
    pm = get_plugin_manager(autoload=False)
    context = ProbeContext(server_time=datetime.now(UTC), agent_version="bench")
    names = [name for name, _v, _s in list_probes(pm) if name != "network"]

    async def one_run() -> float:
        start = time.perf_counter()
        reports = await run_probes(pm, context=context, names=names)
        elapsed = time.perf_counter() - start
        bad = [r for r in reports if r.status not in (ProbeStatus.OK, ProbeStatus.NOT_AVAILABLE)]
        if bad:
            raise SystemExit(f"probe failed during the benchmark: {bad}")
        return elapsed

    def one_bare() -> float:
        start = time.perf_counter()
        bare_snapshot()
        return time.perf_counter() - start

    await one_run()  # warm-up: imports, first psutil calls, thread start
    one_bare()
    runner_times: list[float] = []
    bare_times: list[float] = []
    for i in range(rounds):
        if i % 2:
            bare_times.append(one_bare())
            runner_times.append(await one_run())
        else:
            runner_times.append(await one_run())
            bare_times.append(one_bare())
    return runner_times, bare_times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20)")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")
    os.environ.pop(PLUGINS_ENV, None)  # built-in probes only

    runner_times, bare_times = asyncio.run(measure(args.rounds))
    run_med, run_p90 = summary(runner_times)
    bare_med, bare_p90 = summary(bare_times)
    ratio = run_med / bare_med
    print(f"built-in probes, {args.rounds} rounds, cpu sample {SAMPLE_INTERVAL_S} s, "
          f"{psutil.cpu_count()} CPUs, Python {platform.python_version()} on {sys.platform}")
    print(f"{'':28}{'median ms':>12}{'p90 ms':>12}")
    print(f"{'run_probes (built-ins)':28}{run_med:12.1f}{run_p90:12.1f}")
    print(f"{'bare psutil, sequential':28}{bare_med:12.1f}{bare_p90:12.1f}")
    print(f"ratio runner/bare: median {ratio:.2f}x, p90 {run_p90 / bare_p90:.2f}x "
          f"(goal <= {GOAL}x: {'met' if ratio <= GOAL else 'NOT met'})")
    print(f"runner overhead at the median: {run_med - bare_med:+.1f} ms")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
