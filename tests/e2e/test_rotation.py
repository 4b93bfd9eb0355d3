"""Rotating the server certificate needs nothing on the agents (they pin the CA)."""

from __future__ import annotations

import pytest

from tests.harness import Harness, wait_until

pytestmark = pytest.mark.e2e


def test_renewed_server_certificate_keeps_agents_and_technicians_working(
        harness: Harness) -> None:
    h = harness
    h.init_server()
    server = h.start_server()
    home = h.enroll("A")
    agent = h.start_agent(home)
    tech = h.add_tech("alice")
    before = (h.server_home / "server.crt").read_bytes()
    server.stop()
    out = h.run("hw-server", "cert", "renew", "--home", str(h.server_home))
    assert "new server certificate for 127.0.0.1" in out.stdout
    assert (h.server_home / "server.crt").read_bytes() != before
    h.start_server()
    agent.wait_log(r"connected to wss://", count=2)
    wait_until(lambda: h.tech_json(tech, "agents")[0]["online"], what="agent back online")
