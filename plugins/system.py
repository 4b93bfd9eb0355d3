"""Built-in probe ``system``: OS, host, uptime, time zone, agent version, clock skew.

Findings (``docs/findings.md#system``): ``system.clock_skew``.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import psutil

from plugins import hookimpl
from plugins.api import Probe, ProbeContext, finding, number
from proto.messages import Category, Finding, Severity

NAME = "system"
VERSION = "1"
DISTRIBUTION = "helloword-support"

#: |local clock - server clock| above this many seconds is a finding.
CLOCK_SKEW_MAX_S = 120.0

CLOCK_SKEW = "system.clock_skew"
FINDING_CODES: tuple[str, ...] = (CLOCK_SKEW,)


def agent_version() -> str:
    """Version of the installed ``helloword-support`` distribution, or ``"unknown"``."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def _zone_name() -> str | None:
    """IANA zone name (``Asia/Shanghai``) where the OS exposes one, else ``None``."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and "/" in tz and not tz.startswith("/"):
        return tz
    if sys.platform != "win32":
        target = os.path.realpath("/etc/localtime")
        marker = "zoneinfo" + os.sep
        if marker in target:
            return target.split(marker, 1)[1]
    return None


def read(ctx: ProbeContext) -> dict[str, Any]:
    """Read the system facts; ``clock_skew_s`` only when ``ctx.server_time`` is given."""
    now = time.time()
    boot = psutil.boot_time()
    local = datetime.now().astimezone()
    offset = local.utcoffset()
    readings: dict[str, Any] = {
        "os": platform.system(),
        "release": platform.release(),
        "os_version": platform.version(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "boot_time": datetime.fromtimestamp(boot, UTC).isoformat(),
        "uptime_s": round(max(0.0, now - boot), 1),
        "tz_name": _zone_name(),
        "tz_abbrev": local.tzname(),
        "tz_offset_s": int(offset.total_seconds()) if offset is not None else None,
        "python_version": platform.python_version(),
        "agent_version": ctx.agent_version or agent_version(),
    }
    if ctx.server_time is not None:
        server = ctx.server_time
        if server.tzinfo is None:  # a naive server time is UTC on the wire
            server = server.replace(tzinfo=UTC)
        readings["server_time"] = server.isoformat()
        readings["clock_skew_s"] = round(now - server.timestamp(), 3)
    return readings


def evaluate(readings: Mapping[str, Any]) -> list[Finding]:
    """Findings from ``system`` readings (pure)."""
    skew = number(readings, "clock_skew_s")
    if skew is None or abs(skew) <= CLOCK_SKEW_MAX_S:
        return []
    direction, direction_zh = ("ahead of", "快") if skew > 0 else ("behind", "慢")
    return [
        finding(
            CLOCK_SKEW,
            Severity.WARNING,
            Category.CONFIGURATION,
            f"The system clock is {abs(skew):.0f} s {direction} the server's: "
            "enable automatic time synchronisation (NTP).",
            f"系统时钟比服务器{direction_zh} {abs(skew):.0f} 秒：请开启自动时间同步（NTP）。",
            {
                "clock_skew_s": skew,
                "server_time": readings.get("server_time"),
                "threshold_s": CLOCK_SKEW_MAX_S,
            },
        )
    ]


@hookimpl
def hw_probes() -> list[Probe]:
    return [Probe(NAME, VERSION, read, "Operating system, host, uptime, time zone, clock skew")]


@hookimpl
def hw_evaluate(probe: str, readings: Mapping[str, Any]) -> list[Finding]:
    return evaluate(readings) if probe == NAME else []
