"""Built-in probe ``services``: failed system services (systemd, where it is the init system).

Readings: ``{"failed": [{unit, load, active, sub, description}, ...], "failed_count": n}``;
at most :data:`MAX_UNITS` units are listed (all are counted).

Read with ``systemctl list-units --state=failed --plain --no-legend --no-pager``. On a
machine without systemd (macOS, Windows, containers, other init systems) the probe raises
:class:`~plugins.api.NotAvailable`.

Findings (``docs/findings.md#services``): ``services.failed``, one per failed unit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from plugins import hookimpl
from plugins.api import NotAvailable, Probe, ProbeContext, finding
from proto.messages import Category, Finding, Severity

NAME = "services"
VERSION = "1"

#: Seconds ``systemctl`` may take.
SYSTEMCTL_TIMEOUT_S = 5.0
#: At most this many failed units are listed in the readings.
MAX_UNITS = 50
#: The directory systemd creates when it is the running init system (``sd_booted()``).
SYSTEMD_RUN_DIR = "/run/systemd/system"
COMMAND = ("list-units", "--state=failed", "--plain", "--no-legend", "--no-pager")

FAILED = "services.failed"
FINDING_CODES: tuple[str, ...] = (FAILED,)
RESTART_FIXER = "service.restart"

_MAX_FIELD = 256


def parse_units(text: str) -> list[dict[str, str]]:
    """Units from ``systemctl list-units --plain --no-legend`` output (one unit a line:
    ``UNIT LOAD ACTIVE SUB DESCRIPTION``). Blank and malformed lines are skipped."""
    units: list[dict[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip().lstrip("●*").strip()  # some versions mark failed units with "●"
        parts = line.split(None, 4)
        if len(parts) < 4 or "." not in parts[0]:
            continue
        units.append({
            "unit": parts[0][:_MAX_FIELD],
            "load": parts[1][:_MAX_FIELD],
            "active": parts[2][:_MAX_FIELD],
            "sub": parts[3][:_MAX_FIELD],
            "description": (parts[4] if len(parts) > 4 else "")[:_MAX_FIELD],
        })
    return units


def read(ctx: ProbeContext) -> dict[str, Any]:
    """List the failed systemd units.

    Raises:
        NotAvailable: not Linux, no ``systemctl``, or systemd is not the init system.
        RuntimeError: ``systemctl`` failed or did not answer in time.
    """
    systemctl = shutil.which("systemctl") if sys.platform.startswith("linux") else None
    if systemctl is None or not os.path.isdir(SYSTEMD_RUN_DIR):
        raise NotAvailable("systemd not present")
    try:
        done = subprocess.run(
            [systemctl, *COMMAND],
            capture_output=True, text=True, errors="replace", timeout=SYSTEMCTL_TIMEOUT_S,
            env={**os.environ, "SYSTEMD_COLORS": "0", "LC_ALL": "C"}, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"systemctl did not answer within {SYSTEMCTL_TIMEOUT_S:g} s") from exc
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or [""])[0][:200]
        if "not been booted with systemd" in message or "Failed to connect to bus" in message:
            raise NotAvailable("systemd not present")
        raise RuntimeError(f"systemctl exited with {done.returncode}: {message}")
    units = parse_units(done.stdout)
    return {"failed": units[:MAX_UNITS], "failed_count": len(units)}


def evaluate(readings: Mapping[str, Any]) -> list[Finding]:
    """Findings from ``services`` readings (pure): one ``services.failed`` per unit."""
    units = readings.get("failed")
    if not isinstance(units, list):
        return []
    findings: list[Finding] = []
    seen: set[str] = set()
    for unit in units:
        if not isinstance(unit, Mapping):
            continue
        name = unit.get("unit")
        if not isinstance(name, str) or not name or name in seen:
            continue
        seen.add(name)
        description = unit.get("description")
        about = f" ({description})" if isinstance(description, str) and description else ""
        findings.append(
            finding(
                FAILED,
                Severity.WARNING,
                Category.SOFTWARE,
                f"The system service {name}{about} has failed: restart it, or read its log "
                "to see why it stopped.",
                f"系统服务 {name}{about} 运行失败：请重新启动它，或查看其日志了解停止原因。",
                {
                    **{key: unit.get(key) for key in ("unit", "load", "active", "sub")},
                    "description": description,
                    "failed_count": readings.get("failed_count"),
                    "threshold": "active state 'failed'",
                },
                remote_fixable=True,
                fixers=[RESTART_FIXER],
            )
        )
    return findings


@hookimpl
def hw_probes() -> list[Probe]:
    return [Probe(NAME, VERSION, read, "Failed system services (systemd)")]


@hookimpl
def hw_evaluate(probe: str, readings: Mapping[str, Any]) -> list[Finding]:
    return evaluate(readings) if probe == NAME else []
