"""Two hw-server nodes sharing one PostgreSQL store and a NATS bus, as real processes.

The agent holds its run session on node A, the technician talks to node B: diagnostics,
consent, fixes and on-site booking go B -> NATS -> A -> agent and back; an SSH session's
tunnel is dialled by the agent straight to B. Node A is killed:
its agent fails over to B (the URLs in its token) and the case goes on. A node whose agent
is gone stops reporting it online once the lease runs out.

Skipped with the reason where PostgreSQL or NATS does not answer (see .ci/run).
"""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import postgres
from tests.harness import Harness, Proc, free_port, wait_until

pytestmark = pytest.mark.e2e

NATS_URL = "nats://127.0.0.1:4222"


def nats_unavailable() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=2) as s:
            s.settimeout(2)
            if not s.recv(64).startswith(b"INFO"):
                return "port 4222 answers but is not NATS"
    except OSError as exc:
        return f"no NATS at {NATS_URL} ({type(exc).__name__}); start one (see .ci/run)"
    return None


@pytest.fixture
def pg_url() -> Iterator[str]:
    reason = postgres.unavailable_reason_sync() or nats_unavailable()
    if reason is not None:
        pytest.skip(reason)
    url = postgres.create_database_sync()
    try:
        yield url
    finally:
        postgres.drop_database_sync(url)


def start_node(h: Harness, name: str, port: int, pg_url: str) -> Proc:
    proc = h.spawn(f"node-{name}", "hw-server", "run", "--home", str(h.server_home),
                   "--listen", f"127.0.0.1:{port}", "--db", pg_url, "--bus", NATS_URL,
                   "--node-id", name)
    before = [p for p in h.procs if p.log == proc.log and p is not proc]
    proc.wait_log(r"listening on wss://\S+", count=len(before) + 1)
    return proc


def use_node(tech: Path, port: int) -> None:
    """Point a technician's profile at one node (as a load balancer would)."""
    profile = tech / "profile.json"
    data = json.loads(profile.read_text())
    data["urls"] = [f"wss://127.0.0.1:{port}"]
    profile.write_text(json.dumps(data))


def test_two_nodes_route_requests_and_survive_losing_one(harness: Harness,
                                                         pg_url: str) -> None:
    h = harness
    port_a, port_b = h.port, free_port()
    h.run("hw-server", "init", "--home", str(h.server_home), "--listen",
          f"127.0.0.1:{port_a}", "--public-url", f"wss://127.0.0.1:{port_a}",
          "--public-url", f"wss://127.0.0.1:{port_b}", "--db", pg_url)
    cfg = h.server_home / "config.toml"
    cfg.write_text(cfg.read_text() + "presence_lease_s = 3.0\n")
    h.run("hw-server", "field-tech", "add", "--home", str(h.server_home), "wang", "--base",
          "上海", "--skills", "hardware-repair")
    node_a = start_node(h, "a", port_a, pg_url)
    node_b = start_node(h, "b", port_b, pg_url)
    home = h.enroll("A")  # the token lists both nodes; the agent dials A first
    agent = h.start_agent(home, env={"HW_SIMULATE": "thermal.fan_stalled"})
    assert f":{port_a}" in agent.text()
    case = h.help(home).splitlines()[0]
    tech = h.add_tech("alice")
    use_node(tech, port_b)

    assert h.tech_json(tech, "agents")[0]["online"] is True  # seen from B, held by A
    # consent asked through B reaches the agent on A; the customer's grant comes back
    ask = h.spawn("ask", "hw-tech", "--home", str(tech), "consent-request", case, "--scopes",
                  "diagnostics,fix,book-visit", "--for", "30m", "--json")
    wait_until(lambda: "asks for access" in h.run("hw-agent", "consent", "status", "--home",
                                                  str(home)).stdout, what="the request")
    h.run("hw-agent", "consent", "grant", "--home", str(home), "--case", case, "--tech",
          "alice", "--scopes", "diagnostics,fix,book-visit", "--for", "30m")
    assert ask.popen.wait(60) == 0 and '"granted": true' in ask.text()
    out = h.tech_json(tech, "diag", case)
    assert out["result"]["ok"] is True
    assert any(f["code"] == "thermal.fan_stalled" for r in out["result"]["reports"]
               for f in r["findings"])
    plan = h.tech_json(tech, "fix", case, "disk.cleanup", "--dry-run")
    assert plan["result"]["fix"]["decision"] == "dry-run"
    audit = json.loads(h.run("hw-server", "audit", "show", "--home", str(h.server_home),
                             "--subject", case, "--json").stdout)
    relayed = [e["detail"] for e in audit if e["event"] == "command"]
    assert relayed and all(d.get("node") == "a" for d in relayed)  # B sent them via A
    # booking across nodes: the offer goes B -> A -> agent; the acceptance lands on A
    ticket = h.tech_json(tech, "tickets")[0]["ticket"]
    h.run("hw-tech", "--home", str(tech), "book", ticket)
    agent.wait_log(rf"on-site offer {ticket}")
    h.run("hw-agent", "--home", str(home), "visit", "accept", ticket, "--slot", "1")
    assert h.tech_json(tech, "ticket", "show", ticket)["state"] == "booked"
    # an SSH session across nodes: the agent dials its tunnel connection to B (`via`)
    h.grant(home, case, "alice", scopes="shell")
    ssh = h.run("hw-tech", "--home", str(tech), "ssh", case, "--", "echo", "across-nodes")
    assert ssh.stdout.strip() == "across-nodes"
    assert "tunnel" in node_b.text() and "tunnel" not in node_a.text()
    # a fan-out from B reaches the agent on A: B forwards it over the bus, A pings, B adds up
    ping = h.tech_json(tech, "ping", "--all")
    assert (ping["sent"], ping["ok"], ping["misses"]) == (1, 1, [])
    done = [e["detail"] for e in json.loads(h.run(
        "hw-server", "audit", "show", "--home", str(h.server_home), "--json").stdout)
        if e["event"] == "fanout.done"]
    assert done == [{"fanout": done[0]["fanout"], "sent": 1, "ok": 1, "misses": {},
                     "nodes": 2}]
    assert "pinged all" in h.run("hw-agent", "log", "--home", str(home)).stdout

    # node A dies: the agent fails over to B and the case goes on there
    node_a.stop(signal.SIGKILL)
    agent.wait_log(rf"connected to wss://127.0.0.1:{port_b}")
    wait_until(lambda: h.tech_json(tech, "agents")[0]["online"], what="the agent on B")
    out = h.tech_json(tech, "diag", case, "--probes", "system")
    assert out["result"]["ok"] is True
    detail = h.tech_json(tech, "case", case)
    assert len(detail["results"]) >= 3 and detail["case"]["state"] != "open"

    # an agent that is gone is not reported online once its lease has run out
    node_a = start_node(h, "a", port_a, pg_url)
    use_node(tech, port_a)
    node_b.popen.send_signal(signal.SIGSTOP)  # B hangs holding the agent's presence lease
    agent.stop(signal.SIGKILL)
    try:
        wait_until(lambda: not h.tech_json(tech, "agents")[0]["online"], timeout=30,
                   what="the hung node's agent to go offline")
    finally:
        node_b.popen.send_signal(signal.SIGCONT)
