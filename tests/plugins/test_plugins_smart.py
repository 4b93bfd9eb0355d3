"""plugins.smart: smartctl JSON and kernel-log parsers on recorded output, the disk-health
rules, and ``read`` with only the subprocess call replaced."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from plugins import NotAvailable, ProbeContext, smart
from proto.messages import Category, ProbeReport, ProbeStatus, Severity

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / name).read_text("utf-8"))
    return doc


SSD = "smartctl_sata_ssd_healthy.json"
HDD = "smartctl_hdd_failing.json"
NVME = "smartctl_nvme_worn.json"
KERNEL_LOG = (FIXTURES / "kernel_log_io_errors.txt").read_text("utf-8")


def codes(readings: dict[str, Any]) -> list[tuple[str, Severity]]:
    return [(f.code, f.severity) for f in smart.evaluate(readings)]


def one_disk(name: str, **changes: Any) -> dict[str, Any]:
    disk = smart.parse_device(load(name))
    disk.update(changes)
    return {"devices": [disk], "devices_skipped": 0}


# -- parsers -----------------------------------------------------------------------------


def test_parse_scan() -> None:
    assert smart.parse_scan(load("smartctl_scan_open.json")) == [
        {"name": "/dev/sda", "type": "sat", "protocol": "ATA", "open_error": None},
        {"name": "/dev/sdb", "type": "sat", "protocol": "ATA", "open_error": None},
        {"name": "/dev/nvme0", "type": "nvme", "protocol": "NVMe", "open_error": None},
    ]
    (denied,) = smart.parse_scan(load("smartctl_scan_open_denied.json"))
    assert denied["open_error"] == "/dev/sda: Permission denied"
    assert smart.parse_scan({}) == []
    assert smart.parse_scan({"devices": ["junk", {"name": 3}]}) == []


def test_parse_healthy_sata_ssd() -> None:
    disk = smart.parse_device(load(SSD))
    assert disk["device"] == "/dev/sda" and disk["protocol"] == "ATA"
    assert disk["model"] == "Samsung SSD 870 EVO 500GB"
    assert disk["health_passed"] is True
    assert (disk["reallocated_sectors"], disk["pending_sectors"]) == (0, None)
    assert disk["offline_uncorrectable"] is None  # this SSD has no attribute 198
    assert disk["rotation_rate"] == 0 and disk["capacity_bytes"] == 500107862016
    assert (disk["power_on_hours"], disk["temperature_c"]) == (8123, 31)
    assert disk["nvme_percentage_used"] is None
    assert "error" not in disk


def test_serial_number_is_not_reported() -> None:
    doc = load(SSD)
    disk = smart.parse_device(doc)
    assert doc["serial_number"] not in json.dumps(disk)
    assert disk["serial_hash"] == smart.serial_hash(doc["serial_number"])
    assert len(disk["serial_hash"]) == 12
    assert smart.parse_device(load(HDD))["serial_hash"] != disk["serial_hash"]


def test_parse_failing_hdd() -> None:
    disk = smart.parse_device(load(HDD))
    assert disk["health_passed"] is False
    assert (disk["reallocated_sectors"], disk["pending_sectors"],
            disk["offline_uncorrectable"]) == (1432, 57, 12)
    assert disk["rotation_rate"] == 7200 and disk["smartctl_exit_status"] == 24
    assert "error" not in disk  # exit bits 3 and 4 are findings, not failures


def test_parse_nvme() -> None:
    disk = smart.parse_device(load(NVME))
    assert disk["protocol"] == "NVMe" and disk["health_passed"] is True
    assert (disk["nvme_critical_warning"], disk["nvme_media_errors"],
            disk["nvme_percentage_used"], disk["nvme_available_spare"]) == (0, 0, 93, 100)
    assert disk["reallocated_sectors"] is None


def test_parse_open_denied() -> None:
    disk = smart.parse_device(load("smartctl_open_denied.json"))
    assert disk["error"] == "Smartctl open device: /dev/sda failed: Permission denied"
    assert disk["health_passed"] is None
    assert smart.evaluate({"devices": [disk]}) == []


def test_parse_kernel_log() -> None:
    assert smart.parse_kernel_log(KERNEL_LOG.splitlines()) == {
        "sdb": {"count": 2, "last": "I/O error, dev sdb, sector 490514440 op 0x0:(READ) "
                                    "flags 0x0 phys_seg 1 prio class 2"},
        "sdb1": {"count": 1, "last": "Buffer I/O error on dev sdb1, logical block 61314048, "
                                     "async page read"},
        "nvme0n1": {"count": 1, "last": "nvme0n1: I/O Cmd(0x2) @ LBA 2048, 8 blocks, "
                                        "I/O Error (sct 0x2 / sc 0x81) DNR"},
    }
    assert smart.parse_kernel_log(["all quiet", ""]) == {}


def test_kernel_log_devices_are_bounded() -> None:
    lines = [f"I/O error, dev sd{i}, sector 0" for i in range(100)]
    assert len(smart.parse_kernel_log(lines)) == smart.MAX_IO_ERROR_DEVICES


# -- rules -------------------------------------------------------------------------------


def test_healthy_ssd_no_finding() -> None:
    assert smart.evaluate(one_disk(SSD)) == []


def test_failing_hdd_findings() -> None:
    findings = smart.evaluate(one_disk(HDD))
    assert [(f.code, f.severity) for f in findings] == [
        ("disk.smart_failing", Severity.CRITICAL),
        ("disk.sectors_reallocated", Severity.CRITICAL),
        ("disk.sectors_pending", Severity.WARNING),
    ]
    for f in findings:
        assert f.category == Category.HARDWARE
        assert f.remote_fixable is False and f.fixers == []
        assert f.evidence["device"] == "/dev/sdb"
        assert f.evidence["model"] == "WDC WD10EZEX-08WN4A0"
        assert "WDC WD10EZEX-08WN4A0" in f.summary and "/dev/sdb" in f.summary_zh
    assert findings[1].evidence["reallocated_sectors"] == 1432
    assert findings[1].evidence["threshold"] == 100
    assert (findings[2].evidence["pending_sectors"],
            findings[2].evidence["offline_uncorrectable"]) == (57, 12)


@pytest.mark.parametrize(
    ("reallocated", "severity"),
    [(0, None), (1, Severity.WARNING), (99, Severity.WARNING), (100, Severity.CRITICAL)],
)
def test_reallocated_boundaries(reallocated: int, severity: Severity | None) -> None:
    found = codes(one_disk(SSD, reallocated_sectors=reallocated))
    assert found == ([] if severity is None else [("disk.sectors_reallocated", severity)])


@pytest.mark.parametrize(
    ("pending", "uncorrectable", "expected"),
    [(0, 0, False), (None, None, False), (1, 0, True), (0, 1, True), (None, 3, True)],
)
def test_pending_boundaries(pending: int | None, uncorrectable: int | None,
                            expected: bool) -> None:
    found = codes(one_disk(SSD, pending_sectors=pending, offline_uncorrectable=uncorrectable))
    assert found == ([("disk.sectors_pending", Severity.WARNING)] if expected else [])


@pytest.mark.parametrize(("used", "expected"), [(89, False), (90, True), (93, True), (255, True)])
def test_nvme_worn_boundary(used: int, expected: bool) -> None:
    findings = smart.evaluate(one_disk(NVME, nvme_percentage_used=used))
    assert [f.code for f in findings] == (["disk.nvme_worn"] if expected else [])
    if expected:
        assert findings[0].severity == Severity.WARNING
        assert findings[0].evidence["nvme_percentage_used"] == used
        assert findings[0].evidence["threshold_percent"] == 90.0


def test_nvme_critical_warning_fails_health() -> None:
    doc = load(NVME)
    doc["smart_status"] = {"passed": False, "nvme": {"value": 4}}
    doc["nvme_smart_health_information_log"]["critical_warning"] = 4
    readings = {"devices": [smart.parse_device(doc)]}
    findings = smart.evaluate(readings)
    assert findings[0].code == "disk.smart_failing"
    assert findings[0].evidence["nvme_critical_warning"] == 4


def test_io_errors_findings() -> None:
    readings = {"devices": [], "io_errors": smart.parse_kernel_log(KERNEL_LOG.splitlines()),
                "kernel_log_lines": 22}
    findings = smart.evaluate(readings)
    assert [(f.code, f.evidence["device"], f.evidence["count"]) for f in findings] == [
        ("disk.io_errors", "sdb", 2), ("disk.io_errors", "sdb1", 1),
        ("disk.io_errors", "nvme0n1", 1),
    ]
    assert all(f.category == Category.HARDWARE and not f.remote_fixable for f in findings)
    assert findings[0].evidence["last"].startswith("I/O error, dev sdb")
    assert smart.evaluate({"io_errors": {"sda": {"count": 0}}}) == []
    assert smart.evaluate({"io_errors": "junk", "devices": "junk"}) == []


# -- read, with the subprocess boundary replaced -----------------------------------------


class FakeTools:
    """Stands in for ``subprocess.run`` only: answers smartctl/journalctl from fixtures."""

    def __init__(self, scan: str = "smartctl_scan_open.json", journal: str = KERNEL_LOG,
                 journal_code: int = 0) -> None:
        self.scan = scan
        self.journal = (journal, journal_code)
        self.calls: list[list[str]] = []
        self.by_device = {"/dev/sda": SSD, "/dev/sdb": HDD, "/dev/nvme0": NVME}

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert kwargs.get("timeout"), "every call has a timeout"
        assert "shell" not in kwargs
        self.calls.append(list(argv))
        if argv[0].endswith("journalctl"):
            out, code = self.journal
            return subprocess.CompletedProcess(argv, code, out, "")
        if "--scan-open" in argv:
            return subprocess.CompletedProcess(argv, 0, (FIXTURES / self.scan).read_text(), "")
        doc = load(self.by_device.get(argv[-1], "smartctl_open_denied.json"))
        code = doc["smartctl"]["exit_status"]
        return subprocess.CompletedProcess(argv, code, json.dumps(doc), "")


@pytest.fixture
def tools_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/sbin/{name}")


@pytest.mark.usefixtures("tools_installed")
def test_read_through_fake_smartctl(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTools()
    monkeypatch.setattr(subprocess, "run", fake)
    readings = smart.read(ProbeContext())
    assert fake.calls[0] == ["/usr/sbin/smartctl", "--scan-open", "--json"]
    assert fake.calls[1] == ["/usr/sbin/smartctl", "-i", "-H", "-A", "--json", "-d", "sat",
                             "/dev/sda"]
    assert fake.calls[-1][0] == "/usr/sbin/journalctl" and "2000" in fake.calls[-1]
    assert [d["device"] for d in readings["devices"]] == ["/dev/sda", "/dev/sdb", "/dev/nvme0"]
    assert readings["io_errors"]["sdb"]["count"] == 2
    assert readings["kernel_log_lines"] == len(KERNEL_LOG.splitlines())
    assert sorted({c for c, _ in codes(readings)}) == [
        "disk.io_errors", "disk.nvme_worn", "disk.sectors_pending",
        "disk.sectors_reallocated", "disk.smart_failing",
    ]
    report = ProbeReport(probe="smart", version=smart.VERSION, status=ProbeStatus.OK,
                         readings=readings, findings=smart.evaluate(readings))
    assert msgspec.json.decode(msgspec.json.encode(report), type=ProbeReport) == report


@pytest.mark.usefixtures("tools_installed")
@pytest.mark.parametrize(("journal", "code"), [("", 0), (KERNEL_LOG, 1)])
def test_unreadable_kernel_log_omits_io_errors(
    monkeypatch: pytest.MonkeyPatch, journal: str, code: int
) -> None:
    monkeypatch.setattr(subprocess, "run", FakeTools(journal=journal, journal_code=code))
    readings = smart.read(ProbeContext())
    assert "io_errors" not in readings and "kernel_log_lines" not in readings
    assert len(readings["devices"]) == 3


@pytest.mark.usefixtures("tools_installed")
def test_read_without_privileges(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTools(scan="smartctl_scan_open_denied.json")
    fake.by_device = {}  # every disk answers "Permission denied"
    monkeypatch.setattr(subprocess, "run", fake)
    readings = smart.read(ProbeContext())
    (disk,) = readings["devices"]
    assert disk["device"] == "/dev/sda" and "Permission denied" in disk["error"]
    assert [c for c, _ in codes(readings)] == ["disk.io_errors"] * 3


@pytest.mark.usefixtures("tools_installed")
def test_smartctl_hang_or_garbage_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", hang)
    with pytest.raises(RuntimeError, match="did not answer"):
        smart.read(ProbeContext())
    monkeypatch.setattr(subprocess, "run",
                        lambda argv, **kw: subprocess.CompletedProcess(argv, 1, "usage", ""))
    with pytest.raises(RuntimeError, match="no JSON"):
        smart.read(ProbeContext())


def test_no_smartctl_is_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(NotAvailable, match="smartmontools not installed"):
        smart.read(ProbeContext())


def test_read_here_is_wire_ready() -> None:
    (probe,) = smart.hw_probes()
    try:
        readings = probe.run(ProbeContext())
    except NotAvailable as exc:
        report = ProbeReport(probe=probe.name, version=probe.version,
                             status=ProbeStatus.NOT_AVAILABLE, error=str(exc))
        assert report.error
    else:
        report = ProbeReport(probe=probe.name, version=probe.version, status=ProbeStatus.OK,
                             readings=readings, findings=smart.evaluate(readings))
    assert msgspec.json.decode(msgspec.json.encode(report), type=ProbeReport) == report
