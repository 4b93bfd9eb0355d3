"""Built-in probe ``power``: battery charge, plugged state and wear.

Readings::

    {"percent": 0-100, "plugged": bool | None, "secsleft": s | None,
     "secsleft_unlimited": bool,
     "wear": [{name, full, full_design, unit, capacity_percent}, ...]}   # Linux only

``secsleft`` is ``None`` when the OS does not know the time left or the battery is not
discharging (``secsleft_unlimited`` says which). ``wear`` compares what the battery holds
when full with what it held new, from ``/sys/class/power_supply/BAT*/energy_full`` and
``energy_full_design`` (``unit`` ``µWh``) or ``charge_full``/``charge_full_design``
(``µAh``); it is absent on other platforms and where the OS exposes neither pair.

Raises :class:`~plugins.api.NotAvailable` ("no battery") on a machine without a battery.

Findings (``docs/findings.md#power``): ``power.battery_low``, ``power.battery_worn``,
``power.battery_failing``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from plugins import hookimpl
from plugins.api import NotAvailable, Probe, ProbeContext, finding, number
from proto.messages import Category, Finding, Severity

NAME = "power"
VERSION = "1"

#: Charge below this percent while not plugged in is a warning.
LOW_CHARGE_PERCENT = 10.0
#: Full capacity below this percent of the design capacity: the battery is worn (warning).
WORN_CAPACITY_PERCENT = 60.0
#: Full capacity below this percent of the design capacity: the battery is failing.
FAILING_CAPACITY_PERCENT = 40.0
#: At most this many batteries are read.
MAX_BATTERIES = 8

BATTERY_LOW = "power.battery_low"
BATTERY_WORN = "power.battery_worn"
BATTERY_FAILING = "power.battery_failing"
FINDING_CODES: tuple[str, ...] = (BATTERY_LOW, BATTERY_WORN, BATTERY_FAILING)

_POWER_SUPPLY = Path("/sys/class/power_supply")
_PAIRS = (
    ("energy_full", "energy_full_design", "µWh"),
    ("charge_full", "charge_full_design", "µAh"),
)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _wear(root: Path | None = None) -> list[dict[str, Any]]:
    """Full vs design capacity of each ``BAT*`` the kernel exposes (Linux)."""
    entries: list[dict[str, Any]] = []
    try:
        batteries = sorted((root or _POWER_SUPPLY).glob("BAT*"))[:MAX_BATTERIES]
    except OSError:
        return entries
    for battery in batteries:
        for full_name, design_name, unit in _PAIRS:
            full = _read_int(battery / full_name)
            design = _read_int(battery / design_name)
            if full is None or design is None or full < 0 or design <= 0:
                continue  # a design capacity of 0 means "unknown": no guess
            entries.append({
                "name": battery.name,
                "full": full,
                "full_design": design,
                "unit": unit,
                "capacity_percent": round(full / design * 100, 1),
            })
            break
    return entries


def read(ctx: ProbeContext) -> dict[str, Any]:
    """Read the battery through psutil and, on Linux, its wear from sysfs.

    Raises:
        NotAvailable: the machine has no battery (or the OS does not report one).
    """
    sensors_battery = getattr(psutil, "sensors_battery", None)
    battery = sensors_battery() if sensors_battery is not None else None
    if battery is None:
        raise NotAvailable("no battery")
    secsleft = battery.secsleft
    unlimited = secsleft == psutil.POWER_TIME_UNLIMITED
    known = isinstance(secsleft, int | float) and secsleft >= 0 and not unlimited
    readings: dict[str, Any] = {
        "percent": round(float(battery.percent), 1),
        "plugged": battery.power_plugged if isinstance(battery.power_plugged, bool) else None,
        "secsleft": int(secsleft) if known else None,
        "secsleft_unlimited": unlimited,
    }
    if sys.platform.startswith("linux"):
        wear = _wear()
        if wear:
            readings["wear"] = wear
    return readings


def _wear_finding(entry: Mapping[str, Any]) -> Finding | None:
    capacity = number(entry, "capacity_percent")
    if capacity is None or capacity >= WORN_CAPACITY_PERCENT:
        return None
    failing = capacity < FAILING_CAPACITY_PERCENT
    name = entry.get("name")
    which = f"Battery {name}" if isinstance(name, str) and name else "The battery"
    which_zh = f"电池 {name}" if isinstance(name, str) and name else "电池"
    if failing:
        summary = (
            f"{which} holds only {capacity:.0f}% of its design capacity: it is failing and "
            "must be replaced."
        )
        summary_zh = f"{which_zh}仅能容纳设计容量的 {capacity:.0f}%：电池即将失效，必须更换。"
    else:
        summary = (
            f"{which} holds only {capacity:.0f}% of its design capacity: it is worn; "
            "plan to replace it."
        )
        summary_zh = f"{which_zh}仅能容纳设计容量的 {capacity:.0f}%：电池已老化，请考虑更换。"
    return finding(
        BATTERY_FAILING if failing else BATTERY_WORN,
        Severity.CRITICAL if failing else Severity.WARNING,
        Category.HARDWARE,
        summary,
        summary_zh,
        {
            **{key: entry.get(key) for key in ("name", "full", "full_design", "unit")},
            "capacity_percent": capacity,
            "threshold_percent": FAILING_CAPACITY_PERCENT if failing else WORN_CAPACITY_PERCENT,
        },
        remote_fixable=False,
    )


def evaluate(readings: Mapping[str, Any]) -> list[Finding]:
    """Findings from ``power`` readings (pure): low charge, and wear per battery."""
    findings: list[Finding] = []
    percent = number(readings, "percent")
    if (
        percent is not None
        and percent < LOW_CHARGE_PERCENT
        and readings.get("plugged") is False  # unknown plugged state: no verdict
    ):
        findings.append(
            finding(
                BATTERY_LOW,
                Severity.WARNING,
                # Not a fault to send a technician for: the customer plugs the charger in.
                Category.CONFIGURATION,
                f"The battery is at {percent:.0f}% and the charger is not plugged in: "
                "plug it in before the computer shuts down.",
                f"电池电量仅剩 {percent:.0f}%，且未连接充电器：请在电脑关机前接上电源。",
                {
                    "percent": percent,
                    "plugged": False,
                    "secsleft": readings.get("secsleft"),
                    "threshold_percent": LOW_CHARGE_PERCENT,
                },
            )
        )
    wear = readings.get("wear")
    if isinstance(wear, list):
        for entry in wear:
            if isinstance(entry, Mapping) and (found := _wear_finding(entry)) is not None:
                findings.append(found)
    return findings


@hookimpl
def hw_probes() -> list[Probe]:
    return [Probe(NAME, VERSION, read, "Battery charge, plugged state and wear")]


@hookimpl
def hw_evaluate(probe: str, readings: Mapping[str, Any]) -> list[Finding]:
    return evaluate(readings) if probe == NAME else []
