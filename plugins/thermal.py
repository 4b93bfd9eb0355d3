"""Built-in probe ``thermal``: temperatures against their marks, and fans.

Readings::

    {"sensors": [{chip, label, current, high, critical}, ...],   # °C, at most MAX_SENSORS
     "sensors_skipped": n,
     "fans": [{chip, label, rpm}, ...]}                            # where psutil has fans

``high``/``critical`` are the marks the hardware reports, ``None`` where it reports none
(a mark of 0 or below is treated as none). ``fans`` is absent where psutil cannot read
fans (macOS, Windows); it is an empty list on Linux with no fan sensor.

Raises :class:`~plugins.api.NotAvailable` ("no temperature sensors exposed") where psutil
has no temperature support (Windows, macOS) or the OS exposes no sensor (most VMs).

Findings (``docs/findings.md#thermal``): ``thermal.overheating``, ``thermal.fan_stalled``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psutil

from plugins import hookimpl
from plugins.api import NotAvailable, Probe, ProbeContext, finding, number
from proto.messages import Category, Finding, Severity

NAME = "thermal"
VERSION = "1"

#: Overheating (warning) for a sensor with no high mark, in °C.
OVERHEAT_DEFAULT_C = 90.0
#: A fan at 0 rpm is stalled when some sensor is at its high mark or at least this, in °C.
FAN_STALL_HOT_C = 70.0
#: At most this many temperature sensors (and as many fans) are read.
MAX_SENSORS = 64
#: At most this many hot sensors are quoted in a finding's evidence.
MAX_EVIDENCE_SENSORS = 8

OVERHEATING = "thermal.overheating"
FAN_STALLED = "thermal.fan_stalled"
FINDING_CODES: tuple[str, ...] = (OVERHEATING, FAN_STALLED)


def _mark(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return round(float(value), 1)
    return None


def read(ctx: ProbeContext) -> dict[str, Any]:
    """Read every temperature sensor (and fan) psutil exposes.

    Raises:
        NotAvailable: no temperature sensor is exposed on this machine or platform.
    """
    sensors_temperatures = getattr(psutil, "sensors_temperatures", None)
    temperatures = sensors_temperatures() if sensors_temperatures is not None else {}
    sensors = [
        {
            "chip": chip,
            "label": entry.label or chip,
            "current": round(float(entry.current), 1),
            "high": _mark(entry.high),
            "critical": _mark(entry.critical),
        }
        for chip, entries in sorted((temperatures or {}).items())
        for entry in entries
    ]
    if not sensors:
        raise NotAvailable("no temperature sensors exposed")
    readings: dict[str, Any] = {
        "sensors": sensors[:MAX_SENSORS],
        "sensors_skipped": max(0, len(sensors) - MAX_SENSORS),
    }
    sensors_fans = getattr(psutil, "sensors_fans", None)
    if sensors_fans is not None:
        fans = sensors_fans() or {}
        readings["fans"] = [
            {"chip": chip, "label": entry.label or chip, "rpm": int(entry.current)}
            for chip, entries in sorted(fans.items())
            for entry in entries
        ][:MAX_SENSORS]
    return readings


def _sensors(readings: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = readings.get(key)
    return [s for s in items if isinstance(s, Mapping)] if isinstance(items, list) else []


def _heat(sensor: Mapping[str, Any]) -> tuple[Severity, float] | None:
    """The sensor's severity and the mark it reached, or ``None`` when it is not hot."""
    current = number(sensor, "current")
    if current is None:
        return None
    high = number(sensor, "high")
    critical = number(sensor, "critical")
    if critical is not None and critical > 0 and current >= critical:
        return Severity.CRITICAL, critical
    if high is not None and high > 0:
        return (Severity.WARNING, high) if current >= high else None
    if current >= OVERHEAT_DEFAULT_C:
        return Severity.WARNING, OVERHEAT_DEFAULT_C
    return None


def _name(sensor: Mapping[str, Any]) -> str:
    chip, label = sensor.get("chip"), sensor.get("label")
    if isinstance(label, str) and isinstance(chip, str) and label != chip:
        return f"{chip}/{label}"
    return str(label if isinstance(label, str) else chip)


def _overheating(sensors: list[Mapping[str, Any]]) -> Finding | None:
    hot: list[tuple[Severity, float, Mapping[str, Any]]] = []
    for sensor in sensors:
        heat = _heat(sensor)
        if heat is not None:
            hot.append((heat[0], heat[1], sensor))
    if not hot:
        return None
    hot.sort(key=lambda h: (h[0] != Severity.CRITICAL, -(number(h[2], "current") or 0.0)))
    severity, _, worst = hot[0]
    current = number(worst, "current") or 0.0
    where = _name(worst)
    return finding(
        OVERHEATING,
        severity,
        Category.HARDWARE,
        f"The computer is overheating: {where} is at {current:.0f} °C. Check that the vents "
        "are free and the fans work; clean the dust out.",
        f"电脑过热：{where} 温度为 {current:.0f} °C。请确认通风口畅通、风扇正常，并清理灰尘。",
        {
            "sensors": [
                {
                    **{key: s.get(key) for key in ("chip", "label", "current", "high", "critical")},
                    "severity": str(sev),
                    "threshold_c": mark,
                }
                for sev, mark, s in hot[:MAX_EVIDENCE_SENSORS]
            ],
            "hot_sensors": len(hot),
            "threshold_default_c": OVERHEAT_DEFAULT_C,
        },
    )


def _fan_stalled(
    sensors: list[Mapping[str, Any]], fans: list[Mapping[str, Any]]
) -> Finding | None:
    stalled = [f for f in fans if number(f, "rpm") == 0.0]
    if not stalled:
        return None
    hot = []
    for sensor in sensors:
        current = number(sensor, "current")
        high = number(sensor, "high")
        if current is not None and (
            current >= FAN_STALL_HOT_C or (high is not None and high > 0 and current >= high)
        ):
            hot.append(sensor)
    if not hot:
        return None  # fans stop by design while the machine is cool
    hot.sort(key=lambda s: -(number(s, "current") or 0.0))
    names = ", ".join(_name(f) for f in stalled[:MAX_EVIDENCE_SENSORS])
    current = number(hot[0], "current") or 0.0
    return finding(
        FAN_STALLED,
        Severity.CRITICAL,
        Category.HARDWARE,
        f"Fan {names} stands still (0 rpm) while {_name(hot[0])} is at {current:.0f} °C: "
        "the fan is broken or blocked and needs a technician.",
        f"风扇 {names} 停转（0 转/分），而 {_name(hot[0])} 温度为 {current:.0f} °C："
        "风扇损坏或被堵住，需要技术人员处理。",
        {
            "fans": [
                {key: f.get(key) for key in ("chip", "label", "rpm")}
                for f in stalled[:MAX_EVIDENCE_SENSORS]
            ],
            "hot_sensors": [
                {key: s.get(key) for key in ("chip", "label", "current", "high", "critical")}
                for s in hot[:MAX_EVIDENCE_SENSORS]
            ],
            "threshold_hot_c": FAN_STALL_HOT_C,
            "threshold_rpm": 0,
        },
        remote_fixable=False,
    )


def evaluate(readings: Mapping[str, Any]) -> list[Finding]:
    """Findings from ``thermal`` readings (pure): at most one of each code."""
    sensors = _sensors(readings, "sensors")
    found = [_overheating(sensors), _fan_stalled(sensors, _sensors(readings, "fans"))]
    return [f for f in found if f is not None]


@hookimpl
def hw_probes() -> list[Probe]:
    return [Probe(NAME, VERSION, read, "Temperatures against their marks, and fans")]


@hookimpl
def hw_evaluate(probe: str, readings: Mapping[str, Any]) -> list[Finding]:
    return evaluate(readings) if probe == NAME else []
