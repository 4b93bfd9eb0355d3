"""A probe that reads nothing, for bench/rtt.py (loaded with HW_PLUGINS=noopprobe)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plugins import hookimpl
from plugins.api import Probe, ProbeContext
from proto.messages import Finding


def _run(ctx: ProbeContext) -> dict[str, Any]:
    return {}


@hookimpl
def hw_probes() -> list[Probe]:
    return [Probe(name="noop", version="1", run=_run, summary="does nothing (benchmark)")]


@hookimpl
def hw_evaluate(probe: str, readings: Mapping[str, Any]) -> list[Finding]:
    return []
