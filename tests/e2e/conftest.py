"""Fixtures that start real server and agent processes on loopback ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness import Harness, Proc


@dataclass
class Running:
    h: Harness
    server: Proc
    agent_home: Path
    agent: Proc
    tech: Path
    case: str


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.stop_all()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One server, one enrolled and connected agent with an open case, one technician."""
    h = Harness(tmp_path_factory.mktemp("e2e"))
    try:
        h.init_server(handshake_timeout=3.0)
        server = h.start_server()
        home = h.enroll("A")
        agent = h.start_agent(home)
        case = h.help(home).splitlines()[0]
        tech = h.add_tech("alice")
        h.grant(home, case, "alice")
        yield Running(h, server, home, agent, tech, case)
    finally:
        h.stop_all()
