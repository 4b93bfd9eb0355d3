"""Built-in probe ``smart``: disk health through smartmontools, and kernel I/O errors.

``read`` runs ``smartctl --scan-open --json`` (:func:`parse_scan`), then
``smartctl -i -H -A --json [-d TYPE] DEVICE`` for each disk found (:func:`parse_device`),
and on Linux the last :data:`KERNEL_LOG_LINES` lines of this boot's kernel log
(``journalctl -k -b``, :func:`parse_kernel_log`). Readings::

    {"devices": [{device, type, protocol, model, serial_hash, firmware, capacity_bytes,
                  rotation_rate, health_passed, reallocated_sectors, pending_sectors,
                  offline_uncorrectable, nvme_critical_warning, nvme_media_errors,
                  nvme_percentage_used, nvme_available_spare, power_on_hours,
                  temperature_c, smartctl_exit_status, error}, ...],
     "devices_skipped": n,
     "io_errors": {"sda": {"count": n, "last": "<kernel line>"}, ...},   # Linux, when readable
     "kernel_log_lines": n}

A value the disk does not report is ``None`` (an NVMe disk has no ATA attributes). A disk
smartctl cannot open (no privileges) carries ``error`` and no health values. Serial numbers
are not read out: ``serial_hash`` is the first 12 hex digits of their SHA-256, enough to
tell disks apart between two runs. ``io_errors`` is absent where the kernel log cannot be
read (not Linux, no journald, no permission).

Findings (``docs/findings.md#smart``, category hardware, none remotely fixable):
``disk.smart_failing``, ``disk.sectors_reallocated``, ``disk.sectors_pending``,
``disk.nvme_worn``, ``disk.io_errors``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from plugins import hookimpl
from plugins.api import NotAvailable, Probe, ProbeContext, finding, number
from proto.messages import Category, Finding, Severity

NAME = "smart"
VERSION = "1"

#: Seconds each smartctl call may take.
SMARTCTL_TIMEOUT_S = 15.0
#: Seconds journalctl may take.
JOURNAL_TIMEOUT_S = 5.0
#: At most this many disks are read (the rest are counted in ``devices_skipped``).
MAX_DEVICES = 16
#: How many of the newest kernel log lines are searched for I/O errors.
KERNEL_LOG_LINES = 2000
#: At most this many devices are listed under ``io_errors``.
MAX_IO_ERROR_DEVICES = 32
#: Reallocated sectors (ATA attribute 5) above zero is a warning ...
REALLOCATED_WARNING = 1
#: ... and this many or more is critical.
REALLOCATED_CRITICAL = 100
#: Pending (ATA 197) or offline-uncorrectable (ATA 198) sectors at or above this: warning.
PENDING_WARNING = 1
#: NVMe "percentage used" (of the rated endurance) at or above this is a warning.
NVME_WORN_PERCENT = 90.0
#: Kernel "I/O error" lines naming a device, at or above this count: warning.
IO_ERRORS_WARNING = 1

ATTR_REALLOCATED = 5
ATTR_PENDING = 197
ATTR_OFFLINE_UNCORRECTABLE = 198

SMART_FAILING = "disk.smart_failing"
SECTORS_REALLOCATED = "disk.sectors_reallocated"
SECTORS_PENDING = "disk.sectors_pending"
NVME_WORN = "disk.nvme_worn"
IO_ERRORS = "disk.io_errors"
FINDING_CODES: tuple[str, ...] = (
    SMART_FAILING, SECTORS_REALLOCATED, SECTORS_PENDING, NVME_WORN, IO_ERRORS,
)

_MAX_TEXT = 200
#: smartctl exit status bits 0 and 1: bad command line, device could not be opened.
_EXIT_UNUSABLE = 0b11
_IO_ERROR = re.compile(r"i/o error", re.IGNORECASE)
_DEVICE_PATTERNS = (
    re.compile(r"\bdev(?:ice)?[\s:]+([A-Za-z][A-Za-z0-9_-]*)"),  # "I/O error, dev sda, ..."
    re.compile(r"^\s*(?:\[[^\]]*\]\s*)?([A-Za-z][A-Za-z0-9_-]*):\s"),  # "nvme0n1: I/O Cmd..."
)


# -- parsing (pure) ----------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return value[:_MAX_TEXT] if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _error_message(doc: Mapping[str, Any]) -> str:
    for message in _dict(doc.get("smartctl")).get("messages") or []:
        if isinstance(message, Mapping) and message.get("severity") == "error":
            return _text(message.get("string")) or "error"
    return ""


def parse_scan(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Disks from ``smartctl --scan-open --json``: ``[{name, type, protocol, open_error}]``.

    ``open_error`` is ``None`` unless smartctl could not open the disk while scanning.
    """
    devices: list[dict[str, Any]] = []
    for item in doc.get("devices") or []:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            continue
        devices.append({
            "name": item["name"][:_MAX_TEXT],
            "type": _text(item.get("type")),
            "protocol": _text(item.get("protocol")),
            "open_error": _text(item.get("open_error")),
        })
    return devices


def _ata_raw(doc: Mapping[str, Any], attribute: int) -> int | None:
    for row in _dict(doc.get("ata_smart_attributes")).get("table") or []:
        if isinstance(row, Mapping) and row.get("id") == attribute:
            return _int(_dict(row.get("raw")).get("value"))
    return None


def serial_hash(serial: str) -> str:
    """A short, stable stand-in for a serial number (the number itself is not reported)."""
    return hashlib.sha256(serial.strip().encode("utf-8")).hexdigest()[:12]


def parse_device(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One disk's readings from ``smartctl -i -H -A --json`` (see the module docstring)."""
    device = _dict(doc.get("device"))
    smartctl = _dict(doc.get("smartctl"))
    nvme = _dict(doc.get("nvme_smart_health_information_log"))
    status = _dict(doc.get("smart_status"))
    serial = doc.get("serial_number")
    exit_status = _int(smartctl.get("exit_status"))
    passed = status.get("passed")
    entry: dict[str, Any] = {
        "device": _text(device.get("name")),
        "type": _text(device.get("type")),
        "protocol": _text(device.get("protocol")),
        "model": _text(doc.get("model_name")),
        "serial_hash": serial_hash(serial) if isinstance(serial, str) and serial else None,
        "firmware": _text(doc.get("firmware_version")),
        "capacity_bytes": _int(_dict(doc.get("user_capacity")).get("bytes")),
        "rotation_rate": _int(doc.get("rotation_rate")),
        "health_passed": passed if isinstance(passed, bool) else None,
        "reallocated_sectors": _ata_raw(doc, ATTR_REALLOCATED),
        "pending_sectors": _ata_raw(doc, ATTR_PENDING),
        "offline_uncorrectable": _ata_raw(doc, ATTR_OFFLINE_UNCORRECTABLE),
        "nvme_critical_warning": _int(nvme.get("critical_warning")),
        "nvme_media_errors": _int(nvme.get("media_errors")),
        "nvme_percentage_used": _int(nvme.get("percentage_used")),
        "nvme_available_spare": _int(nvme.get("available_spare")),
        "power_on_hours": _int(_dict(doc.get("power_on_time")).get("hours")),
        "temperature_c": _int(_dict(doc.get("temperature")).get("current")),
        "smartctl_exit_status": exit_status,
    }
    if exit_status is not None and exit_status & _EXIT_UNUSABLE:
        entry["error"] = _error_message(doc) or f"smartctl exit status {exit_status}"
    return entry


def _device_of(line: str) -> str:
    for pattern in _DEVICE_PATTERNS:
        match = pattern.search(line)
        if match:
            return match.group(1)[:64]
    return "unknown"


def parse_kernel_log(lines: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Kernel log lines -> ``{device: {"count": n, "last": line}}`` for "I/O error" lines.

    The device is the kernel's name (``sda``, ``sda1``, ``nvme0n1``), or ``"unknown"``.
    """
    found: dict[str, dict[str, Any]] = {}
    for line in lines:
        if not _IO_ERROR.search(line):
            continue
        device = _device_of(line)
        if device not in found and len(found) >= MAX_IO_ERROR_DEVICES:
            continue
        entry = found.setdefault(device, {"count": 0, "last": ""})
        entry["count"] += 1
        entry["last"] = line.strip()[:_MAX_TEXT]
    return found


# -- reading -----------------------------------------------------------------------------


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a command (argument list, no shell), output as text."""
    return subprocess.run(
        argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False,
    )


def _smartctl_json(argv: list[str]) -> Mapping[str, Any]:
    """smartctl's JSON output. Its exit status is a bit mask of findings, not a failure
    signal, so the output is parsed whatever the status."""
    try:
        done = _run(argv, SMARTCTL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"{' '.join(argv[1:])} did not answer within {SMARTCTL_TIMEOUT_S:g} s"
        ) from exc
    try:
        doc = json.loads(done.stdout)
    except ValueError as exc:
        raise RuntimeError(
            f"smartctl printed no JSON (exit status {done.returncode}); "
            "smartmontools 7.0 or later is needed"
        ) from exc
    if not isinstance(doc, Mapping):
        raise RuntimeError("smartctl printed JSON that is not an object")
    return doc


def _kernel_log() -> list[str] | None:
    """The newest kernel log lines of this boot, or ``None`` when they cannot be read."""
    journalctl = shutil.which("journalctl") if sys.platform.startswith("linux") else None
    if journalctl is None:
        return None
    argv = [journalctl, "-k", "-b", "--no-pager", "-q", "-o", "cat", "-n", str(KERNEL_LOG_LINES)]
    try:
        done = _run(argv, JOURNAL_TIMEOUT_S)
    except (subprocess.TimeoutExpired, OSError):
        return None
    lines = done.stdout.splitlines()
    # No line at all means the log was not readable (no journald, no permission): a
    # booted kernel always logs something.
    if done.returncode != 0 or not lines:
        return None
    return lines[-KERNEL_LOG_LINES:]


def read(ctx: ProbeContext) -> dict[str, Any]:
    """Ask smartctl about every disk it finds; search the kernel log for I/O errors.

    Raises:
        NotAvailable: smartctl is not installed.
        RuntimeError: smartctl hung or printed no JSON.
    """
    smartctl = shutil.which("smartctl")
    if smartctl is None:
        raise NotAvailable("smartmontools not installed")
    found = parse_scan(_smartctl_json([smartctl, "--scan-open", "--json"]))
    devices: list[dict[str, Any]] = []
    for item in found[:MAX_DEVICES]:
        argv = [smartctl, "-i", "-H", "-A", "--json"]
        if item["type"]:
            argv += ["-d", item["type"]]
        entry = parse_device(_smartctl_json([*argv, item["name"]]))
        entry["device"] = entry["device"] or item["name"]
        if item["open_error"] and "error" not in entry and entry["health_passed"] is None:
            entry["error"] = item["open_error"]
        devices.append(entry)
    readings: dict[str, Any] = {
        "devices": devices,
        "devices_skipped": max(0, len(found) - MAX_DEVICES),
    }
    lines = _kernel_log()
    if lines is not None:
        readings["io_errors"] = parse_kernel_log(lines)
        readings["kernel_log_lines"] = len(lines)
    return readings


# -- evaluating (pure) -------------------------------------------------------------------


def _label(disk: Mapping[str, Any]) -> str:
    device = disk.get("device") if isinstance(disk.get("device"), str) else "?"
    model = disk.get("model")
    return f"{model} ({device})" if isinstance(model, str) and model else str(device)


def _identity(disk: Mapping[str, Any]) -> dict[str, Any]:
    return {key: disk.get(key) for key in ("device", "model", "serial_hash", "protocol")}


def _disk_findings(disk: Mapping[str, Any]) -> list[Finding]:
    findings: list[Finding] = []
    label = _label(disk)
    if disk.get("health_passed") is False:
        findings.append(finding(
            SMART_FAILING, Severity.CRITICAL, Category.HARDWARE,
            f"Disk {label} reports that it is failing (SMART health check): back up its "
            "data now and have the disk replaced.",
            f"磁盘 {label} 的自检（SMART）报告其即将损坏：请立即备份数据并更换磁盘。",
            {
                **_identity(disk),
                "health_passed": False,
                "nvme_critical_warning": disk.get("nvme_critical_warning"),
                "smartctl_exit_status": disk.get("smartctl_exit_status"),
                "threshold": "SMART overall health not passed",
            },
        ))
    reallocated = number(disk, "reallocated_sectors")
    if reallocated is not None and reallocated >= REALLOCATED_WARNING:
        critical = reallocated >= REALLOCATED_CRITICAL
        findings.append(finding(
            SECTORS_REALLOCATED, Severity.CRITICAL if critical else Severity.WARNING,
            Category.HARDWARE,
            f"Disk {label} has replaced {reallocated:.0f} damaged sector(s) with spares: "
            "its surface is wearing out; back up its data and plan to replace it.",
            f"磁盘 {label} 已用备用扇区替换了 {reallocated:.0f} 个损坏扇区：盘面正在老化；"
            "请备份数据并计划更换磁盘。",
            {
                **_identity(disk),
                "reallocated_sectors": int(reallocated),
                "threshold": REALLOCATED_CRITICAL if critical else REALLOCATED_WARNING,
            },
        ))
    pending = number(disk, "pending_sectors")
    uncorrectable = number(disk, "offline_uncorrectable")
    worst = max((v for v in (pending, uncorrectable) if v is not None), default=None)
    if worst is not None and worst >= PENDING_WARNING:
        findings.append(finding(
            SECTORS_PENDING, Severity.WARNING, Category.HARDWARE,
            f"Disk {label} has sectors it cannot read ({pending or 0:.0f} pending, "
            f"{uncorrectable or 0:.0f} uncorrectable): some data may already be lost; "
            "back it up now.",
            f"磁盘 {label} 存在无法读取的扇区（待处理 {pending or 0:.0f} 个，"
            f"无法纠正 {uncorrectable or 0:.0f} 个）：部分数据可能已丢失；请立即备份。",
            {
                **_identity(disk),
                "pending_sectors": disk.get("pending_sectors"),
                "offline_uncorrectable": disk.get("offline_uncorrectable"),
                "threshold": PENDING_WARNING,
            },
        ))
    used = number(disk, "nvme_percentage_used")
    if used is not None and used >= NVME_WORN_PERCENT:
        findings.append(finding(
            NVME_WORN, Severity.WARNING, Category.HARDWARE,
            f"SSD {label} has used {used:.0f}% of its rated write endurance: plan to "
            "replace it and keep backups current.",
            f"固态硬盘 {label} 已用掉其额定写入寿命的 {used:.0f}%：请计划更换，并保持备份最新。",
            {
                **_identity(disk),
                "nvme_percentage_used": int(used),
                "nvme_available_spare": disk.get("nvme_available_spare"),
                "nvme_media_errors": disk.get("nvme_media_errors"),
                "threshold_percent": NVME_WORN_PERCENT,
            },
        ))
    return findings


def evaluate(readings: Mapping[str, Any]) -> list[Finding]:
    """Findings from ``smart`` readings (pure): per disk, then per device in the kernel log."""
    findings: list[Finding] = []
    devices = readings.get("devices")
    for disk in devices if isinstance(devices, list) else []:
        if isinstance(disk, Mapping) and not disk.get("error"):
            findings.extend(_disk_findings(disk))
    io_errors = readings.get("io_errors")
    for device, entry in (io_errors.items() if isinstance(io_errors, Mapping) else []):
        count = number(entry, "count") if isinstance(entry, Mapping) else None
        if not isinstance(device, str) or count is None or count < IO_ERRORS_WARNING:
            continue
        findings.append(finding(
            IO_ERRORS, Severity.WARNING, Category.HARDWARE,
            f"The system logged {count:.0f} read/write error(s) on disk {device} since it "
            "started: the disk, its cable or its controller may be failing.",
            f"系统自启动以来在磁盘 {device} 上记录了 {count:.0f} 次读写错误："
            "磁盘、数据线或控制器可能有故障。",
            {
                "device": device,
                "count": int(count),
                "last": entry.get("last"),
                "kernel_log_lines": readings.get("kernel_log_lines"),
                "threshold": IO_ERRORS_WARNING,
            },
        ))
    return findings


@hookimpl
def hw_probes() -> list[Probe]:
    return [Probe(NAME, VERSION, read, "Disk health (SMART) and kernel disk I/O errors",
                  timeout=60.0)]


@hookimpl
def hw_evaluate(probe: str, readings: Mapping[str, Any]) -> list[Finding]:
    return evaluate(readings) if probe == NAME else []
