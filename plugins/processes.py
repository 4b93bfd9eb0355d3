"""Built-in probe ``processes``: top CPU and memory users, runaway processes, zombies.

Readings::

    {"sample_interval_s": 0.2, "logical_cores": n, "memory_total": bytes,
     "process_count": n,
     "top_cpu":    [{pid, name, cpu_percent, rss, memory_percent}, ...],   # at most TOP_N
     "top_memory": [{pid, name, cpu_percent, rss, memory_percent}, ...],   # at most TOP_N
     "zombie_count": n | None, "zombies": [{pid, name, ppid}, ...]}        # at most MAX_ZOMBIES

``cpu_percent`` is the share of *one* core over the sample (a process busy on two cores
shows 200). ``rss``/``memory_percent`` are ``None`` for a process whose memory the agent
may not read. ``zombie_count`` is ``None`` on Windows, which has no zombie processes.
Command lines and user names are not read (privacy).

Findings (``docs/findings.md#processes``): ``processes.runaway``, ``processes.zombies``,
``processes.memory_hog``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import psutil

from plugins import hookimpl
from plugins.api import NotAvailable, Probe, ProbeContext, finding, number
from proto.messages import Category, Finding, Severity

NAME = "processes"
VERSION = "1"

#: Seconds over which each process's CPU use is sampled.
SAMPLE_INTERVAL_S = 0.2
#: How many processes each top list holds.
TOP_N = 5
#: A process using at least this percent of one core over the sample is a runaway.
RUNAWAY_CPU_PERCENT = 90.0
#: At least this many zombie processes is a warning (fewer: info).
ZOMBIES_WARNING_COUNT = 20
#: At most this many zombies are listed in the readings (all are counted).
MAX_ZOMBIES = 20
#: One process whose resident memory is at least this percent of the total is a memory hog.
MEMORY_HOG_PERCENT = 50.0

RUNAWAY = "processes.runaway"
ZOMBIES = "processes.zombies"
MEMORY_HOG = "processes.memory_hog"
FINDING_CODES: tuple[str, ...] = (RUNAWAY, ZOMBIES, MEMORY_HOG)
TERMINATE_FIXER = "process.terminate"

_EXPECTED = (psutil.NoSuchProcess, psutil.AccessDenied, OSError)
_MAX_NAME = 128


def _entry(proc: psutil.Process, cpu: float, memory_total: int) -> dict[str, Any]:
    name = proc.info.get("name")
    rss: int | None
    try:
        rss = int(proc.memory_info().rss)
    except _EXPECTED:
        rss = None
    return {
        "pid": proc.pid,
        "name": (name or "?")[:_MAX_NAME],
        "cpu_percent": round(cpu, 1),
        "rss": rss,
        "memory_percent": (
            round(rss / memory_total * 100, 2) if rss is not None and memory_total else None
        ),
    }


def read(ctx: ProbeContext) -> dict[str, Any]:
    """Sample every process's CPU use over :data:`SAMPLE_INTERVAL_S` seconds.

    Raises:
        NotAvailable: the process list is empty (a sandbox that hides it).
    """
    procs: list[psutil.Process] = []
    zombies: list[dict[str, Any]] = []
    zombie_count = 0
    for proc in psutil.process_iter(["name", "status", "ppid"]):
        if proc.pid == 0:  # Windows "System Idle Process", some BSDs' kernel: not a program
            continue
        if proc.info.get("status") == psutil.STATUS_ZOMBIE:
            zombie_count += 1
            if len(zombies) < MAX_ZOMBIES:
                zombies.append({
                    "pid": proc.pid,
                    "name": (proc.info.get("name") or "?")[:_MAX_NAME],
                    "ppid": proc.info.get("ppid"),
                })
            continue
        try:
            proc.cpu_percent(None)  # starts this process's sample
        except _EXPECTED:
            continue
        procs.append(proc)
    if not procs:
        raise NotAvailable("the process list is not visible here")
    time.sleep(SAMPLE_INTERVAL_S)
    memory_total = int(psutil.virtual_memory().total)
    sampled: list[tuple[float, psutil.Process]] = []
    for proc in procs:
        try:
            sampled.append((proc.cpu_percent(None), proc))
        except _EXPECTED:  # ended during the sample, or became unreadable
            continue
    by_cpu = sorted(sampled, key=lambda item: item[0], reverse=True)[:TOP_N]
    top_cpu = [_entry(proc, cpu, memory_total) for cpu, proc in by_cpu]
    rss_of: list[tuple[int, float, psutil.Process]] = []
    for cpu, proc in sampled:
        try:
            rss_of.append((int(proc.memory_info().rss), cpu, proc))
        except _EXPECTED:
            continue
    by_rss = sorted(rss_of, key=lambda item: item[0], reverse=True)[:TOP_N]
    top_memory = [_entry(proc, cpu, memory_total) for _, cpu, proc in by_rss]
    has_zombies = sys.platform != "win32"
    return {
        "sample_interval_s": SAMPLE_INTERVAL_S,
        "logical_cores": psutil.cpu_count(logical=True),
        "memory_total": memory_total,
        "process_count": len(sampled) + zombie_count,
        "top_cpu": top_cpu,
        "top_memory": top_memory,
        "zombie_count": zombie_count if has_zombies else None,
        "zombies": zombies if has_zombies else [],
    }


def _entries(readings: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = readings.get(key)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _label(entry: Mapping[str, Any]) -> str:
    name = entry.get("name")
    return f"{name if isinstance(name, str) else '?'} (PID {entry.get('pid')})"


def _process_evidence(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {key: entry.get(key) for key in ("pid", "name", "cpu_percent", "rss", "memory_percent")}


def evaluate(readings: Mapping[str, Any]) -> list[Finding]:
    """Findings from ``processes`` readings (pure): one runaway / memory hog per process."""
    findings: list[Finding] = []
    seen: set[object] = set()
    for entry in _entries(readings, "top_cpu"):
        cpu = number(entry, "cpu_percent")
        if cpu is None or cpu < RUNAWAY_CPU_PERCENT or entry.get("pid") in seen:
            continue
        seen.add(entry.get("pid"))
        findings.append(
            finding(
                RUNAWAY,
                Severity.WARNING,
                Category.SOFTWARE,
                f"The program {_label(entry)} keeps a processor core {cpu:.0f}% busy: "
                "it may be stuck; close it, or end it remotely.",
                f"程序 {_label(entry)} 持续占用一个处理器核心的 {cpu:.0f}%："
                "可能已失去响应；请关闭它，或远程结束它。",
                {
                    **_process_evidence(entry),
                    "sample_interval_s": readings.get("sample_interval_s"),
                    "threshold_cpu_percent": RUNAWAY_CPU_PERCENT,
                },
                remote_fixable=True,
                fixers=[TERMINATE_FIXER],
            )
        )
    seen.clear()
    for entry in _entries(readings, "top_memory"):
        percent = number(entry, "memory_percent")
        if percent is None or percent < MEMORY_HOG_PERCENT or entry.get("pid") in seen:
            continue
        seen.add(entry.get("pid"))
        gib = (number(entry, "rss") or 0.0) / 1024**3
        findings.append(
            finding(
                MEMORY_HOG,
                Severity.WARNING,
                Category.SOFTWARE,
                f"The program {_label(entry)} uses {percent:.0f}% of the memory "
                f"({gib:.1f} GiB): close it, or end it remotely.",
                f"程序 {_label(entry)} 占用了 {percent:.0f}% 的内存（{gib:.1f} GiB）："
                "请关闭它，或远程结束它。",
                {
                    **_process_evidence(entry),
                    "memory_total": readings.get("memory_total"),
                    "threshold_percent": MEMORY_HOG_PERCENT,
                },
                remote_fixable=True,
                fixers=[TERMINATE_FIXER],
            )
        )
    count = number(readings, "zombie_count")
    if count is not None and count > 0:
        warning = count >= ZOMBIES_WARNING_COUNT
        findings.append(
            finding(
                ZOMBIES,
                Severity.WARNING if warning else Severity.INFO,
                Category.SOFTWARE,
                f"{count:.0f} ended process(es) were not collected by their parent program "
                "(zombies): harmless in small numbers; many point to a faulty program.",
                f"有 {count:.0f} 个已结束的进程未被其父程序回收（僵尸进程）："
                "少量无害；数量多说明某个程序有缺陷。",
                {
                    "zombie_count": int(count),
                    "zombies": [dict(z) for z in _entries(readings, "zombies")[:MAX_ZOMBIES]],
                    "threshold_warning_count": ZOMBIES_WARNING_COUNT,
                },
            )
        )
    return findings


@hookimpl
def hw_probes() -> list[Probe]:
    return [Probe(NAME, VERSION, read, "Top CPU and memory users, runaway processes, zombies")]


@hookimpl
def hw_evaluate(probe: str, readings: Mapping[str, Any]) -> list[Finding]:
    return evaluate(readings) if probe == NAME else []
