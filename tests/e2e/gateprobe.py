"""A test probe that holds its result until the test opens a gate.

Loaded into a real agent with ``HW_PLUGINS=gateprobe``. It writes ``$HW_GATE_DIR/started``
when it begins and finishes once ``$HW_GATE_DIR/open`` exists (or after 60 s).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from plugins import hookimpl
from plugins.api import Probe, ProbeContext
from proto.messages import Finding


def _run(ctx: ProbeContext) -> dict[str, Any]:
    gate = Path(os.environ["HW_GATE_DIR"])
    (gate / "started").touch()
    deadline = time.monotonic() + 60
    while not (gate / "open").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"gate": "opened" if (gate / "open").exists() else "timed out"}


@hookimpl
def hw_probes() -> list[Probe]:
    return [Probe(name="gate", version="1", run=_run, summary="waits for the test's gate",
                  timeout=90.0)]


@hookimpl
def hw_evaluate(probe: str, readings: Mapping[str, Any]) -> list[Finding]:
    return []
