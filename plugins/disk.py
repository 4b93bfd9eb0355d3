"""Built-in probe ``disk``: space and inodes of each mounted local file system.

Readings: ``{"mounts": [{mountpoint, device, fstype, total, used, free, percent,
inodes_total, inodes_free, inodes_percent}, ...], "mounts_skipped": n}``. A mount that
cannot be read carries ``error`` (the exception type) instead of the sizes. Inode
counts are ``None`` where the platform or file system has none (Windows, btrfs).

Findings (``docs/findings.md#disk``): ``disk.almost_full``, ``disk.inodes_low``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import psutil

from plugins import hookimpl
from plugins.api import Probe, ProbeContext, finding, number
from proto.messages import Category, Finding, Severity

NAME = "disk"
VERSION = "1"

#: Space used at or above this percent is a warning.
FULL_WARNING_PERCENT = 90.0
#: Space used at or above this percent is critical.
FULL_CRITICAL_PERCENT = 97.0
#: Inodes used at or above this percent is a warning.
INODES_WARNING_PERCENT = 90.0
#: Inodes used at or above this percent is critical.
INODES_CRITICAL_PERCENT = 97.0
#: At most this many mounts are read (the rest are counted in ``mounts_skipped``).
MAX_MOUNTS = 64
#: File systems that hold no user data (or whose usage says nothing about the disk).
PSEUDO_FSTYPES = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devfs",
    "devpts", "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "nullfs",
    "overlay", "proc", "pstore", "ramfs", "securityfs", "squashfs", "sysfs", "tmpfs",
    "tracefs", "fdescfs", "linprocfs", "procfs",
})

ALMOST_FULL = "disk.almost_full"
INODES_LOW = "disk.inodes_low"
FINDING_CODES: tuple[str, ...] = (ALMOST_FULL, INODES_LOW)
CLEANUP_FIXER = "disk.cleanup"


def _wanted(part: Any) -> bool:
    if not part.fstype or part.fstype.lower() in PSEUDO_FSTYPES:
        return False  # pseudo file system, or a Windows drive with no medium
    if "cdrom" in part.opts:
        return False
    if part.mountpoint.startswith("/snap/"):
        return False  # Linux snap packages: read-only images, always 100% full
    # macOS: the APFS helper volumes; user data lives in /System/Volumes/Data
    return not (
        part.mountpoint.startswith("/System/Volumes/")
        and part.mountpoint != "/System/Volumes/Data"
    )


def _inodes(path: str) -> tuple[int | None, int | None]:
    statvfs = getattr(os, "statvfs", None)  # not on Windows
    if statvfs is None:
        return None, None
    st = statvfs(path)
    if st.f_files <= 0:  # the file system does not count inodes (btrfs, some FUSE)
        return None, None
    return int(st.f_files), int(st.f_ffree)


def _mount(mountpoint: str, device: str, fstype: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"mountpoint": mountpoint, "device": device, "fstype": fstype}
    try:
        usage = psutil.disk_usage(mountpoint)
        inodes_total, inodes_free = _inodes(mountpoint)
    except OSError as exc:
        entry["error"] = type(exc).__name__
        return entry
    entry.update(total=usage.total, used=usage.used, free=usage.free, percent=usage.percent)
    entry["inodes_total"] = inodes_total
    entry["inodes_free"] = inodes_free
    entry["inodes_percent"] = (
        round((inodes_total - inodes_free) / inodes_total * 100, 1)
        if inodes_total and inodes_free is not None
        else None
    )
    return entry


def read(ctx: ProbeContext) -> dict[str, Any]:
    """Read each local file system once (bind mounts of one device are read once).

    Where no local file system is listed (a container whose root is an overlay), the
    root file system (``/``, or the system drive on Windows) is read instead.
    """
    parts = sorted(
        (p for p in psutil.disk_partitions(all=False) if _wanted(p)),
        key=lambda p: len(p.mountpoint),
    )
    seen: set[str] = set()
    unique = []
    for part in parts:
        if part.device in seen:
            continue
        seen.add(part.device)
        unique.append(part)
    mounts = [_mount(p.mountpoint, p.device, p.fstype) for p in unique[:MAX_MOUNTS]]
    if not mounts:
        mounts = [_mount(os.path.abspath(os.environ.get("SystemDrive", "") + os.sep), "", "")]
    return {"mounts": mounts, "mounts_skipped": max(0, len(unique) - MAX_MOUNTS)}


def _where(mount: Mapping[str, Any]) -> str:
    value = mount.get("mountpoint")
    return value if isinstance(value, str) else "?"


def _almost_full(mount: Mapping[str, Any], used: float) -> Finding | None:
    if used < FULL_WARNING_PERCENT:
        return None
    critical = used >= FULL_CRITICAL_PERCENT
    free_gib = (number(mount, "free") or 0.0) / 1024**3
    keys = ("mountpoint", "device", "fstype", "total", "used", "free", "percent")
    return finding(
        ALMOST_FULL,
        Severity.CRITICAL if critical else Severity.WARNING,
        Category.SOFTWARE,
        f"Disk {_where(mount)} is {used:.0f}% full ({free_gib:.1f} GiB free): "
        "delete or move files, or run the disk clean-up.",
        f"磁盘 {_where(mount)} 已用 {used:.0f}%（剩余 {free_gib:.1f} GiB）："
        "请删除或移走文件，或运行磁盘清理。",
        {
            **{key: mount.get(key) for key in keys},
            "threshold_percent": FULL_CRITICAL_PERCENT if critical else FULL_WARNING_PERCENT,
        },
        remote_fixable=True,
        fixers=[CLEANUP_FIXER],
    )


def _inodes_low(mount: Mapping[str, Any], used: float) -> Finding | None:
    if used < INODES_WARNING_PERCENT:
        return None
    critical = used >= INODES_CRITICAL_PERCENT
    keys = ("mountpoint", "device", "fstype", "inodes_total", "inodes_free", "inodes_percent")
    return finding(
        INODES_LOW,
        Severity.CRITICAL if critical else Severity.WARNING,
        Category.SOFTWARE,
        f"Disk {_where(mount)} has used {used:.0f}% of its file entries (inodes): no new "
        "file can be created once none are left; look for folders with very many small files.",
        f"磁盘 {_where(mount)} 的文件索引节点（inode）已用 {used:.0f}%：用尽后将无法创建新文件；"
        "请查找含有大量小文件的文件夹。",
        {
            **{key: mount.get(key) for key in keys},
            "threshold_percent": (
                INODES_CRITICAL_PERCENT if critical else INODES_WARNING_PERCENT
            ),
        },
    )


def evaluate(readings: Mapping[str, Any]) -> list[Finding]:
    """Findings from ``disk`` readings (pure): at most one of each code per mount."""
    mounts = readings.get("mounts")
    if not isinstance(mounts, list):
        return []
    findings: list[Finding] = []
    for mount in mounts:
        if not isinstance(mount, Mapping):
            continue
        percent = number(mount, "percent")
        inodes = number(mount, "inodes_percent")
        for found in (
            _almost_full(mount, percent) if percent is not None else None,
            _inodes_low(mount, inodes) if inodes is not None else None,
        ):
            if found is not None:
                findings.append(found)
    return findings


@hookimpl
def hw_probes() -> list[Probe]:
    return [Probe(NAME, VERSION, read, "Space and inodes of local file systems")]


@hookimpl
def hw_evaluate(probe: str, readings: Mapping[str, Any]) -> list[Finding]:
    return evaluate(readings) if probe == NAME else []
