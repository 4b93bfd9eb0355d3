"""Built-in probe ``cpu``: core counts, load average, utilisation, frequency.

Findings (``docs/findings.md#cpu``): ``cpu.overloaded``, ``cpu.throttled``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import psutil

from plugins import hookimpl
from plugins.api import Probe, ProbeContext, finding, number
from proto.messages import Category, Finding, Severity

NAME = "cpu"
VERSION = "1"

#: Seconds over which utilisation is sampled.
SAMPLE_INTERVAL_S = 0.2
#: 1-minute load average per logical core above this is overload.
OVERLOAD_LOAD_PER_CORE = 2.0
#: Overall utilisation (percent) above this is overload.
OVERLOAD_PERCENT = 95.0
#: Current frequency below this fraction of the maximum, while busy, is throttling.
THROTTLE_FREQ_RATIO = 0.5
#: "Busy" for the throttling rule: overall utilisation at or above this percent.
THROTTLE_BUSY_PERCENT = 50.0

OVERLOADED = "cpu.overloaded"
THROTTLED = "cpu.throttled"
FINDING_CODES: tuple[str, ...] = (OVERLOADED, THROTTLED)


def read(ctx: ProbeContext) -> dict[str, Any]:
    """Sample the CPUs for :data:`SAMPLE_INTERVAL_S` seconds.

    ``load1``/``load5``/``load15`` are present only where the OS has a load average
    (not on Windows); ``freq_*_mhz`` are ``None`` where the OS does not report them.
    """
    per_core = psutil.cpu_percent(interval=SAMPLE_INTERVAL_S, percpu=True)
    logical = psutil.cpu_count(logical=True)
    readings: dict[str, Any] = {
        "logical_cores": logical,
        "physical_cores": psutil.cpu_count(logical=False),
        "percent": round(sum(per_core) / len(per_core), 1) if per_core else None,
        "percent_per_core": [round(p, 1) for p in per_core],
        "sample_interval_s": SAMPLE_INTERVAL_S,
    }
    getloadavg = getattr(os, "getloadavg", None)
    if getloadavg is not None:
        try:
            load1, load5, load15 = getloadavg()
        except OSError:  # the OS has no load average to give
            pass
        else:
            readings.update(load1=round(load1, 2), load5=round(load5, 2), load15=round(load15, 2))
            if logical:
                readings["load1_per_core"] = round(load1 / logical, 3)
    current = maximum = None
    try:
        freq = psutil.cpu_freq()
    except (NotImplementedError, OSError, RuntimeError):
        freq = None
    if freq is not None:
        current = round(freq.current, 1) if freq.current > 0 else None
        maximum = round(freq.max, 1) if freq.max > 0 else None
    readings["freq_current_mhz"] = current
    readings["freq_max_mhz"] = maximum
    return readings


def evaluate(readings: Mapping[str, Any]) -> list[Finding]:
    """Findings from ``cpu`` readings (pure)."""
    findings: list[Finding] = []
    percent = number(readings, "percent")
    load_per_core = number(readings, "load1_per_core")
    overloaded_by_load = load_per_core is not None and load_per_core > OVERLOAD_LOAD_PER_CORE
    overloaded_by_use = percent is not None and percent > OVERLOAD_PERCENT
    if overloaded_by_load or overloaded_by_use:
        findings.append(
            finding(
                OVERLOADED,
                Severity.WARNING,
                Category.SOFTWARE,
                "The processor is overloaded: look for runaway or too many programs.",
                "处理器负载过高：请检查是否有失控或过多的程序在运行。",
                {
                    "percent": percent,
                    "load1": readings.get("load1"),
                    "load1_per_core": load_per_core,
                    "logical_cores": readings.get("logical_cores"),
                    "threshold_percent": OVERLOAD_PERCENT,
                    "threshold_load_per_core": OVERLOAD_LOAD_PER_CORE,
                },
            )
        )
    current = number(readings, "freq_current_mhz")
    maximum = number(readings, "freq_max_mhz")
    if (
        current is not None
        and maximum is not None
        and maximum > 0
        and percent is not None
        and percent >= THROTTLE_BUSY_PERCENT
        and current < THROTTLE_FREQ_RATIO * maximum
    ):
        findings.append(
            finding(
                THROTTLED,
                Severity.WARNING,
                Category.HARDWARE,
                f"The processor runs at {current:.0f} MHz of {maximum:.0f} MHz while busy: "
                "it is being throttled (overheating, power supply or power plan).",
                f"处理器繁忙时仅运行在 {current:.0f} MHz（最高 {maximum:.0f} MHz）："
                "可能因过热、供电或电源计划而降频。",
                {
                    "freq_current_mhz": current,
                    "freq_max_mhz": maximum,
                    "percent": percent,
                    "threshold_ratio": THROTTLE_FREQ_RATIO,
                    "threshold_busy_percent": THROTTLE_BUSY_PERCENT,
                },
            )
        )
    return findings


@hookimpl
def hw_probes() -> list[Probe]:
    return [Probe(NAME, VERSION, read, "Processor counts, load, utilisation and frequency")]


@hookimpl
def hw_evaluate(probe: str, readings: Mapping[str, Any]) -> list[Finding]:
    return evaluate(readings) if probe == NAME else []
