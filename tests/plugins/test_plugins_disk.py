"""plugins.disk: space and inode rules on recorded readings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from plugins import disk
from proto.messages import Category, Severity

Recorded = Callable[[str], dict[str, Any]]


def with_root(recorded: Recorded, **changes: Any) -> dict[str, Any]:
    readings = recorded("disk")
    readings["mounts"][0].update(changes)
    return readings


def test_recorded_readings_have_no_finding(recorded: Recorded) -> None:
    assert disk.evaluate(recorded("disk")) == []


@pytest.mark.parametrize(
    ("percent", "severity"),
    [
        (89.9, None),
        (90.0, Severity.WARNING),
        (96.9, Severity.WARNING),
        (97.0, Severity.CRITICAL),
        (100.0, Severity.CRITICAL),
    ],
)
def test_almost_full_boundaries(
    recorded: Recorded, percent: float, severity: Severity | None
) -> None:
    findings = disk.evaluate(with_root(recorded, percent=percent))
    if severity is None:
        assert findings == []
        return
    (f,) = findings
    assert (f.code, f.severity, f.category) == ("disk.almost_full", severity, Category.SOFTWARE)
    assert f.remote_fixable is True
    assert f.fixers == ["disk.cleanup"]
    assert f.evidence["mountpoint"] == "/"
    assert f.evidence["percent"] == percent
    assert "/" in f.summary and "/" in f.summary_zh


@pytest.mark.parametrize(
    ("percent", "severity"),
    [
        (89.9, None),
        (90.0, Severity.WARNING),
        (97.0, Severity.CRITICAL),
    ],
)
def test_inodes_low_boundaries(
    recorded: Recorded, percent: float, severity: Severity | None
) -> None:
    findings = disk.evaluate(with_root(recorded, inodes_percent=percent))
    if severity is None:
        assert findings == []
        return
    (f,) = findings
    assert (f.code, f.severity, f.category) == ("disk.inodes_low", severity, Category.SOFTWARE)
    assert f.remote_fixable is False
    assert f.evidence["inodes_percent"] == percent
    assert f.evidence["inodes_total"] == 16777216


def test_one_finding_per_mount_and_code(recorded: Recorded) -> None:
    readings = with_root(recorded, percent=98.0, inodes_percent=99.0)
    second = dict(
        readings["mounts"][0], mountpoint="/data", device="/dev/vdb", percent=91.0,
        inodes_percent=10.0,
    )
    readings["mounts"].append(second)
    found = [(f.code, f.evidence["mountpoint"], f.severity) for f in disk.evaluate(readings)]
    assert found == [
        ("disk.almost_full", "/", Severity.CRITICAL),
        ("disk.inodes_low", "/", Severity.CRITICAL),
        ("disk.almost_full", "/data", Severity.WARNING),
    ]


def test_windows_shape_without_inodes(recorded: Recorded) -> None:
    readings = with_root(
        recorded, mountpoint="C:\\", device="C:\\", fstype="NTFS",
        inodes_total=None, inodes_free=None, inodes_percent=None, percent=95.0,
    )
    assert [f.code for f in disk.evaluate(readings)] == ["disk.almost_full"]


def test_unreadable_mount_and_junk_are_skipped(recorded: Recorded) -> None:
    readings = recorded("disk")
    readings["mounts"] += [{"mountpoint": "/mnt/x", "error": "PermissionError"}, "junk", None]
    assert disk.evaluate(readings) == []
    assert disk.evaluate({"mounts": "junk"}) == []
    assert disk.evaluate({}) == []
