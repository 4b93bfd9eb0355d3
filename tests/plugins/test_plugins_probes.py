"""The built-in probes on this machine: wire-ready readings, findings that validate."""

from __future__ import annotations

import sys
from types import ModuleType

import msgspec
import pytest

from plugins import NotAvailable, ProbeContext, cpu, disk, memory, system
from plugins.api import PluginError, Probe, finding
from proto.messages import Category, ProbeReport, ProbeStatus, Severity

BUILTINS = [system, cpu, memory, disk]


@pytest.mark.parametrize("module", BUILTINS, ids=lambda m: m.NAME)
def test_probe_readings_are_wire_ready(module: ModuleType) -> None:
    (probe,) = module.hw_probes()
    assert isinstance(probe, Probe) and probe.name == module.NAME
    assert probe.runs_on(sys.platform)
    try:
        readings = probe.run(ProbeContext())
    except NotAvailable as exc:  # allowed, but it must say why
        report = ProbeReport(
            probe=probe.name, version=probe.version, status=ProbeStatus.NOT_AVAILABLE,
            error=str(exc),
        )
        assert report.error
    else:
        findings = module.evaluate(readings)
        report = ProbeReport(
            probe=probe.name, version=probe.version, status=ProbeStatus.OK,
            readings=readings, findings=findings,
        )
    # Raw readings, without the runner's sanitising, survive the wire unchanged and pass
    # the same validation the server applies.
    wire = msgspec.json.encode(report)
    assert msgspec.json.decode(wire, type=ProbeReport) == report


def test_system_readings_here() -> None:
    readings = system.read(ProbeContext())
    assert readings["os"] == "Linux" or sys.platform != "linux"
    assert readings["python_version"].startswith("3.")
    assert readings["hostname"]


def test_cpu_readings_here() -> None:
    readings = cpu.read(ProbeContext())
    assert readings["logical_cores"] >= 1
    assert len(readings["percent_per_core"]) == readings["logical_cores"]
    assert 0.0 <= readings["percent"] <= 100.0
    if sys.platform != "win32":
        assert "load1" in readings


def test_memory_readings_here() -> None:
    readings = memory.read(ProbeContext())
    assert 0 < readings["available"] <= readings["total"]
    assert 0 <= readings["available_percent"] <= 100


def test_disk_readings_here() -> None:
    readings = disk.read(ProbeContext())
    assert readings["mounts"], "at least the root file system is read"
    for mount in readings["mounts"]:
        assert mount["fstype"] not in disk.PSEUDO_FSTYPES
        if "error" not in mount:
            assert 0 <= mount["percent"] <= 100
            assert mount["used"] <= mount["total"]
    devices = [m["device"] for m in readings["mounts"] if m["device"]]
    assert len(devices) == len(set(devices)), "bind mounts of one device are read once"


@pytest.mark.parametrize(
    "code", ["disk", "Disk.full", "disk.full\n", "disk..full", "a." * 40 + "b"]
)
def test_finding_helper_refuses_bad_codes(code: str) -> None:
    with pytest.raises(PluginError, match="dotted lower-case"):
        finding(code, Severity.INFO, Category.SOFTWARE, "s", "摘要", {})


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "CPU"},
        {"name": "cpu\n"},
        {"name": ""},
        {"version": ""},
        {"timeout": 0},
        {"timeout": 601},
        {"platforms": {"linux"}},
        {"run": "not callable"},
    ],
)
def test_probe_descriptor_refuses_bad_fields(fields: dict[str, object]) -> None:
    values: dict[str, object] = {
        "name": "ok", "version": "1", "run": lambda ctx: {}, "summary": "s", **fields
    }
    with pytest.raises(PluginError):
        Probe(**values)  # type: ignore[arg-type]
