"""plugins.processes: runaway, memory-hog and zombie rules on recorded readings; a real
busy child process shows up in the CPU top list."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from plugins import NotAvailable, ProbeContext, processes
from proto.messages import Category, ProbeReport, ProbeStatus, Severity

RECORDED: dict[str, Any] = json.loads(
    (Path(__file__).parent / "fixtures" / "readings_processes_vm.json").read_text("utf-8")
)


def recorded() -> dict[str, Any]:
    """Readings of the idle 2-core, 24 GiB Linux VM (no zombies, nothing busy)."""
    return copy.deepcopy(RECORDED)


def test_recorded_readings_have_no_finding() -> None:
    readings = recorded()
    assert readings["top_cpu"] and readings["top_memory"]
    assert processes.evaluate(readings) == []


@pytest.mark.parametrize("cpu", [0.0, 89.9, 90.0, 100.0, 199.5])
def test_runaway_boundary(cpu: float) -> None:
    readings = recorded()
    readings["top_cpu"][0]["cpu_percent"] = cpu
    findings = processes.evaluate(readings)
    if cpu < processes.RUNAWAY_CPU_PERCENT:
        assert findings == []
        return
    (f,) = findings
    assert (f.code, f.severity, f.category) == (
        "processes.runaway", Severity.WARNING, Category.SOFTWARE
    )
    assert f.remote_fixable is True and f.fixers == ["process.terminate"]
    top = readings["top_cpu"][0]
    assert (f.evidence["pid"], f.evidence["name"], f.evidence["cpu_percent"]) == (
        top["pid"], top["name"], cpu
    )
    assert f.evidence["threshold_cpu_percent"] == 90.0
    assert top["name"] in f.summary and top["name"] in f.summary_zh


def test_one_runaway_finding_per_busy_process() -> None:
    readings = recorded()
    for entry, cpu in zip(readings["top_cpu"], [100.0, 95.0, 10.0], strict=False):
        entry["cpu_percent"] = cpu
    found = [f.evidence["pid"] for f in processes.evaluate(readings)]
    assert found == [readings["top_cpu"][0]["pid"], readings["top_cpu"][1]["pid"]]


@pytest.mark.parametrize("percent", [49.99, 50.0, 80.0])
def test_memory_hog_boundary(percent: float) -> None:
    readings = recorded()
    hog = readings["top_memory"][0]
    hog["memory_percent"] = percent
    hog["rss"] = int(readings["memory_total"] * percent / 100)
    findings = processes.evaluate(readings)
    if percent < processes.MEMORY_HOG_PERCENT:
        assert findings == []
        return
    (f,) = findings
    assert (f.code, f.severity, f.category) == (
        "processes.memory_hog", Severity.WARNING, Category.SOFTWARE
    )
    assert f.fixers == ["process.terminate"] and f.remote_fixable is True
    assert f.evidence["rss"] == hog["rss"] and f.evidence["pid"] == hog["pid"]
    assert f.evidence["memory_total"] == readings["memory_total"]
    assert f.evidence["threshold_percent"] == 50.0


@pytest.mark.parametrize(
    ("count", "severity"),
    [(0, None), (1, Severity.INFO), (19, Severity.INFO), (20, Severity.WARNING)],
)
def test_zombies_boundary(count: int, severity: Severity | None) -> None:
    readings = recorded()
    readings["zombie_count"] = count
    readings["zombies"] = [
        {"pid": 5000 + i, "name": "defunct-child", "ppid": 4999}
        for i in range(min(count, processes.MAX_ZOMBIES))
    ]
    findings = processes.evaluate(readings)
    if severity is None:
        assert findings == []
        return
    (f,) = findings
    assert (f.code, f.severity, f.category) == ("processes.zombies", severity, Category.SOFTWARE)
    assert f.remote_fixable is False
    assert f.evidence["zombie_count"] == count
    assert len(f.evidence["zombies"]) == min(count, processes.MAX_ZOMBIES)
    assert f.evidence["threshold_warning_count"] == 20


def test_windows_has_no_zombie_count_and_junk_is_skipped() -> None:
    readings = recorded()
    readings["zombie_count"] = None
    readings["top_cpu"] += ["junk", None, {"pid": 9, "cpu_percent": "lots"}]
    assert processes.evaluate(readings) == []
    assert processes.evaluate({"top_cpu": "junk", "top_memory": 3}) == []
    assert processes.evaluate({}) == []


def test_read_here_is_wire_ready() -> None:
    (probe,) = processes.hw_probes()
    try:
        readings = probe.run(ProbeContext())
    except NotAvailable as exc:
        pytest.skip(f"process list not visible here: {exc}")
    assert 0 < len(readings["top_cpu"]) <= processes.TOP_N
    assert 0 < len(readings["top_memory"]) <= processes.TOP_N
    rss = [entry["rss"] for entry in readings["top_memory"]]
    assert rss == sorted(rss, reverse=True)
    cpu = [entry["cpu_percent"] for entry in readings["top_cpu"]]
    assert cpu == sorted(cpu, reverse=True)
    if sys.platform != "win32":
        assert readings["zombie_count"] >= 0
    report = ProbeReport(
        probe=probe.name, version=probe.version, status=ProbeStatus.OK,
        readings=readings, findings=processes.evaluate(readings),
    )
    wire = msgspec.json.encode(report)
    assert msgspec.json.decode(wire, type=ProbeReport) == report


BUSY = "import sys\nprint('ready', flush=True)\nwhile True:\n    pass\n"


def test_busy_child_shows_up_in_top_cpu() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", BUSY], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        # Other work on the machine may crowd one sample; a few tries, no timing assertion.
        for _ in range(5):
            readings = processes.read(ProbeContext())
            pids = [entry["pid"] for entry in readings["top_cpu"]]
            if child.pid in pids:
                break
        assert child.pid in pids
        entry = next(e for e in readings["top_cpu"] if e["pid"] == child.pid)
        assert entry["cpu_percent"] > 0
        assert entry["rss"] and entry["rss"] > 0
        runaway = [
            f for f in processes.evaluate(readings) if f.evidence.get("pid") == child.pid
        ]
        # The child is runaway when it got >= 90 % of a core in the sample (usual, not
        # guaranteed on a loaded machine); if so, the finding must name it correctly.
        if entry["cpu_percent"] >= processes.RUNAWAY_CPU_PERCENT:
            assert [f.code for f in runaway] == ["processes.runaway"]
        else:
            assert runaway == []
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
