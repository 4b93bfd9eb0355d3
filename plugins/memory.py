"""Built-in probe ``memory``: physical memory and swap.

Findings (``docs/findings.md#memory``): ``memory.low``, ``memory.swap_heavy``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psutil

from plugins import hookimpl
from plugins.api import Probe, ProbeContext, finding, number
from proto.messages import Category, Finding, Severity

NAME = "memory"
VERSION = "1"

#: Available memory below this percent of the total is a warning.
LOW_WARNING_PERCENT = 10.0
#: Available memory below this percent of the total is critical.
LOW_CRITICAL_PERCENT = 5.0
#: Swap used at or above this percent of the swap space is heavy.
SWAP_HEAVY_PERCENT = 80.0

LOW = "memory.low"
SWAP_HEAVY = "memory.swap_heavy"
FINDING_CODES: tuple[str, ...] = (LOW, SWAP_HEAVY)

_GIB = 1024**3


def read(ctx: ProbeContext) -> dict[str, Any]:
    """Read memory and swap. Sizes in bytes; swap counters are bytes since boot."""
    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return {
        "total": vm.total,
        "available": vm.available,
        "used": vm.used,
        "percent": vm.percent,
        "available_percent": round(vm.available / vm.total * 100, 2) if vm.total else None,
        "swap_total": swap.total,
        "swap_used": swap.used,
        "swap_percent": swap.percent,
        "swap_in": swap.sin,
        "swap_out": swap.sout,
    }


def evaluate(readings: Mapping[str, Any]) -> list[Finding]:
    """Findings from ``memory`` readings (pure)."""
    findings: list[Finding] = []
    available = number(readings, "available_percent")
    total = number(readings, "total")
    if available is not None and available < LOW_WARNING_PERCENT:
        critical = available < LOW_CRITICAL_PERCENT
        size = f"{total / _GIB:.1f} GiB" if total else "?"
        findings.append(
            finding(
                LOW,
                Severity.CRITICAL if critical else Severity.WARNING,
                Category.SOFTWARE,
                f"Memory is low: only {available:.1f}% of {size} is available. "
                "Close unused programs or add memory.",
                f"内存不足：{size} 中仅有 {available:.1f}% 可用。请关闭不用的程序或增加内存。",
                {
                    "available_percent": available,
                    "available": readings.get("available"),
                    "total": readings.get("total"),
                    "threshold_percent": LOW_CRITICAL_PERCENT if critical else LOW_WARNING_PERCENT,
                },
            )
        )
    swap_total = number(readings, "swap_total")
    swap_percent = number(readings, "swap_percent")
    if swap_total and swap_percent is not None and swap_percent >= SWAP_HEAVY_PERCENT:
        findings.append(
            finding(
                SWAP_HEAVY,
                Severity.WARNING,
                Category.SOFTWARE,
                f"Swap space is {swap_percent:.0f}% used: the computer is short of memory "
                "and slows down.",
                f"交换空间已使用 {swap_percent:.0f}%：内存不足，电脑会变慢。",
                {
                    "swap_percent": swap_percent,
                    "swap_used": readings.get("swap_used"),
                    "swap_total": readings.get("swap_total"),
                    "available_percent": available,
                    "threshold_percent": SWAP_HEAVY_PERCENT,
                },
            )
        )
    return findings


@hookimpl
def hw_probes() -> list[Probe]:
    return [Probe(NAME, VERSION, read, "Physical memory and swap usage")]


@hookimpl
def hw_evaluate(probe: str, readings: Mapping[str, Any]) -> list[Finding]:
    return evaluate(readings) if probe == NAME else []
