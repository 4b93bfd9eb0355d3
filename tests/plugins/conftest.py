"""Recorded probe readings for the evaluate tests (``fixtures/``)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def _recordings() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads(
        (FIXTURES / "readings_linux_vm.json").read_text(encoding="utf-8")
    )
    return data


@pytest.fixture
def recorded(_recordings: dict[str, dict[str, Any]]) -> Callable[[str], dict[str, Any]]:
    """``recorded("cpu")``: a fresh copy of the readings recorded from the ``cpu`` probe
    on a 2-core Linux VM (idle, no swap, one ext4 disk 22% full)."""

    def get(probe: str) -> dict[str, Any]:
        return copy.deepcopy(_recordings[probe])

    return get
