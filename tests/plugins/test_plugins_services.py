"""plugins.services: parsing ``systemctl list-units`` output and one finding per failed
unit; ``read`` with only the subprocess call replaced."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from plugins import NotAvailable, ProbeContext, services
from proto.messages import Category, ProbeReport, ProbeStatus, Severity

FIXTURES = Path(__file__).parent / "fixtures"
FAILED_UNITS = (FIXTURES / "systemctl_failed_units.txt").read_text("utf-8")


def test_parse_units_fixture() -> None:
    units = services.parse_units(FAILED_UNITS)
    assert [u["unit"] for u in units] == [
        "cups.service", "nginx.service", "systemd-networkd-wait-online.service",
        "smartd.service",
    ]
    assert units[0] == {
        "unit": "cups.service", "load": "loaded", "active": "failed", "sub": "failed",
        "description": "CUPS Scheduler",
    }
    assert units[3]["description"].startswith("Self Monitoring")


@pytest.mark.parametrize("text", ["", "\n\n", "garbage\n", "0 loaded units listed.\n"])
def test_parse_units_empty_or_junk(text: str) -> None:
    assert services.parse_units(text) == []


def test_no_failed_unit_no_finding() -> None:
    assert services.evaluate({"failed": [], "failed_count": 0}) == []
    assert services.evaluate({}) == []
    assert services.evaluate({"failed": "junk"}) == []


def test_one_finding_per_failed_unit() -> None:
    units = services.parse_units(FAILED_UNITS)
    readings = {"failed": [*units, units[0], "junk", {"unit": ""}], "failed_count": 4}
    findings = services.evaluate(readings)
    assert [f.evidence["unit"] for f in findings] == [u["unit"] for u in units]
    for f, unit in zip(findings, units, strict=True):
        assert (f.code, f.severity, f.category) == (
            "services.failed", Severity.WARNING, Category.SOFTWARE
        )
        assert f.remote_fixable is True and f.fixers == ["service.restart"]
        assert f.evidence["active"] == "failed"
        assert unit["unit"] in f.summary and unit["unit"] in f.summary_zh


class FakeRun:
    """Stands in for ``subprocess.run`` only: records the call, answers as systemctl."""

    def __init__(self, stdout: str = "", returncode: int = 0, stderr: str = "") -> None:
        self.answer = (stdout, returncode, stderr)
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        assert kwargs.get("timeout"), "every call has a timeout"
        assert "shell" not in kwargs
        stdout, code, stderr = self.answer
        return subprocess.CompletedProcess(argv, code, stdout, stderr)


@pytest.fixture
def systemd_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pretend systemd is the init system (its run directory and systemctl exist)."""
    monkeypatch.setattr(services, "SYSTEMD_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")


@pytest.mark.usefixtures("systemd_here")
def test_read_parses_systemctl_output(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRun(FAILED_UNITS)
    monkeypatch.setattr(subprocess, "run", fake)
    readings = services.read(ProbeContext())
    assert fake.calls == [["/usr/bin/systemctl", *services.COMMAND]]
    assert readings["failed_count"] == 4
    assert [u["unit"] for u in readings["failed"]][:2] == ["cups.service", "nginx.service"]
    assert len(services.evaluate(readings)) == 4


@pytest.mark.usefixtures("systemd_here")
def test_read_systemctl_without_running_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "run", FakeRun(
        returncode=1,
        stderr="System has not been booted with systemd as init system (PID 1). Can't operate.\n"
               "Failed to connect to bus: Host is down\n",
    ))
    with pytest.raises(NotAvailable, match="systemd not present"):
        services.read(ProbeContext())


@pytest.mark.usefixtures("systemd_here")
def test_read_systemctl_failure_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "run", FakeRun(returncode=4, stderr="boom\n"))
    with pytest.raises(RuntimeError, match="exited with 4: boom"):
        services.read(ProbeContext())


@pytest.mark.usefixtures("systemd_here")
def test_read_systemctl_hang_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", hang)
    with pytest.raises(RuntimeError, match="did not answer"):
        services.read(ProbeContext())


def test_no_systemctl_is_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(NotAvailable, match="systemd not present"):
        services.read(ProbeContext())


def test_read_here_is_wire_ready() -> None:
    (probe,) = services.hw_probes()
    try:
        readings = probe.run(ProbeContext())
    except NotAvailable as exc:
        report = ProbeReport(
            probe=probe.name, version=probe.version, status=ProbeStatus.NOT_AVAILABLE,
            error=str(exc),
        )
        assert report.error == "systemd not present"
    else:
        assert readings["failed_count"] >= len(readings["failed"])
        report = ProbeReport(
            probe=probe.name, version=probe.version, status=ProbeStatus.OK,
            readings=readings, findings=services.evaluate(readings),
        )
    wire = msgspec.json.encode(report)
    assert msgspec.json.decode(wire, type=ProbeReport) == report
