"""The whole core, end to end: real hw-server and hw-agent processes, real TLS, real CLIs."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Running

from proto.token import EnrollToken, decode_token, encode_token
from tests.harness import Harness

pytestmark = pytest.mark.e2e


def test_case_number_is_human_readable(running: Running) -> None:
    assert re.fullmatch(r"HW-\d{8}-\d{4}", running.case)


def test_agents_lists_the_online_agent(running: Running) -> None:
    agents = running.h.tech_json(running.tech, "agents")
    assert len(agents) == 1
    a = agents[0]
    assert a["online"] is True
    assert (a["customer"], a["kind"], a["city"]) == ("Li Wei", "individual", "上海")
    assert a["agent_id"].startswith("ag-")
    assert set(a) == {"agent_id", "customer", "kind", "city", "hostname", "os", "online",
                      "last_seen"}


def test_cases_lists_the_open_case(running: Running) -> None:
    cases = running.h.tech_json(running.tech, "cases")
    assert [c["number"] for c in cases] == [running.case]
    assert cases[0]["description"] == "laptop gets hot and shuts down"


def test_diag_runs_the_probes_on_the_agent(running: Running) -> None:
    out = running.h.tech_json(running.tech, "diag", running.case)
    assert out["case"] == running.case
    result = out["result"]
    assert result["ok"] is True and result["action"] == "diag"
    reports = {r["probe"]: r for r in result["reports"]}
    assert {"system", "cpu", "memory", "disk"} <= set(reports)
    for name in ("system", "cpu", "memory", "disk"):
        assert reports[name]["status"] == "ok", reports[name]
    assert reports["system"]["readings"]["hostname"]
    assert reports["memory"]["readings"]["total"] > 0
    detail = running.h.tech_json(running.tech, "case", running.case)
    assert [e["state"] for e in detail["history"]] == ["open", "diagnosed"]
    running.h.tech_json(running.tech, "diag", running.case, "--probes", "system")
    detail = running.h.tech_json(running.tech, "case", running.case)
    assert [e["state"] for e in detail["history"]] == ["open", "diagnosed"], \
        "a second diagnosis of a diagnosed case adds a result, not a state change"
    assert len(detail["results"]) == 2
    assert result["msg_id"] in [r["msg_id"] for r in detail["results"]]
    log = running.h.run("hw-agent", "log", "--home", str(running.agent_home)).stdout
    assert "alice ran diagnostics on " + running.case in log


def test_readable_output_without_json(running: Running) -> None:
    out = running.h.run("hw-tech", "--home", str(running.tech), "agents").stdout
    assert "Li Wei" in out and "online" in out and "AGENT" in out


def test_unknown_case_is_a_clear_error(running: Running) -> None:
    p = running.h.run("hw-tech", "--home", str(running.tech), "diag", "HW-20000101-0001",
                      check=False)
    assert p.returncode == 1
    assert "no case HW-20000101-0001" in p.stderr


def test_usage_error_exits_2(running: Running) -> None:
    p = running.h.run("hw-tech", "--home", str(running.tech), "diag", "not-a-case",
                      check=False)
    assert p.returncode == 2
    p = running.h.run("hw-tech", check=False)
    assert p.returncode == 2


def test_healthz(running: Running) -> None:
    import ssl
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(running.h.server_home / "ca.crt"))
    with urllib.request.urlopen(f"https://127.0.0.1:{running.h.port}/healthz",
                                context=ctx, timeout=10) as resp:
        assert resp.status == 200 and resp.read() == b"ok\n"


def test_used_token_is_refused(running: Running) -> None:
    token = running.h.token()
    running.h.run("hw-agent", "enroll", "--home", str(running.h.root / "B1"), token)
    p = running.h.run("hw-agent", "enroll", "--home", str(running.h.root / "B2"), token,
                      check=False)
    assert p.returncode == 1
    assert "already used" in p.stderr
    assert not (running.h.root / "B2").exists(), "a refused enrollment must leave nothing"


def test_forged_token_is_refused(running: Running) -> None:
    real = decode_token(running.h.token(), now=datetime.now(UTC))
    forged = EnrollToken(urls=real.urls, secret=b"x" * 32, expires=real.expires,
                         ca_sha256=real.ca_sha256, org_pub=real.org_pub)
    p = running.h.run("hw-agent", "enroll", "--home", str(running.h.root / "F"),
                      encode_token(forged), check=False)
    assert p.returncode == 1
    assert "not known" in p.stderr or "unknown" in p.stderr


def test_garbage_token_is_refused(running: Running) -> None:
    p = running.h.run("hw-agent", "enroll", "--home", str(running.h.root / "G"), "hello",
                      check=False)
    assert p.returncode == 1 and "not a HelloWord enrollment token" in p.stderr


def test_ca_fingerprint_mismatch_refuses_to_connect(running: Running, tmp_path: Path) -> None:
    # A second server home whose token names this server's address but its own CA.
    other = Harness(tmp_path, port=running.h.port)
    other.init_server()
    token = other.token()
    p = running.h.run("hw-agent", "enroll", "--home", str(tmp_path / "M"), token,
                      check=False)
    assert p.returncode == 1
    assert "fingerprint" in p.stderr and "Not connecting" in p.stderr
    assert not (tmp_path / "M").exists()


def test_offline_agent_is_a_clear_error(running: Running) -> None:
    h = running.h
    home = h.enroll("OFF", customer="Zhang San", city="北京")
    agent = h.start_agent(home)
    case = h.help(home, "printer does not print").splitlines()[0]
    assert agent.stop() == 0
    p = h.run("hw-tech", "--home", str(running.tech), "diag", case, check=False)
    assert p.returncode == 1
    assert "offline" in p.stderr and "hw-agent run" in p.stderr


def test_revoked_technician_is_refused(running: Running) -> None:
    h = running.h
    bob = h.add_tech("bob")
    h.tech_json(bob, "agents")
    h.run("hw-server", "tech", "revoke", "--home", str(h.server_home), "bob")
    p = h.run("hw-tech", "--home", str(bob), "agents", check=False)
    assert p.returncode == 1 and "revoked" in p.stderr


def test_server_sigkill_loses_no_result(harness: Harness, tmp_path: Path) -> None:
    """A result produced while the server is down is stored once after it restarts."""
    h = harness
    h.init_server()
    server = h.start_server()
    home = h.enroll("A")
    gate = tmp_path / "gate"
    gate.mkdir()
    agent = h.start_agent(home, env={"HW_PLUGINS": "gateprobe", "HW_GATE_DIR": str(gate)})
    case = h.help(home).splitlines()[0]
    tech = h.add_tech("alice")
    h.grant(home, case, "alice")
    diag = h.spawn("diag", "hw-tech", "--home", str(tech), "diag", case, "--probes", "gate",
                   "--json")
    from tests.harness import wait_until
    wait_until(lambda: (gate / "started").exists(), what="the gate probe to start")
    server.stop(sig=9)
    diag.popen.wait(30)
    assert diag.popen.returncode == 1  # the technician's connection died with the server
    agent.wait_log(r"disconnected")
    (gate / "open").touch()
    agent.wait_log(r"kept in the outbox")
    pending = sqlite3.connect(home / "agent.db").execute("SELECT count(*) FROM outbox")
    assert pending.fetchone()[0] == 1
    h.start_server()
    agent.wait_log(r"connected to wss://", count=2)
    detail = h.tech_json(tech, "case", case)
    wait_until(lambda: h.tech_json(tech, "case", case)["results"], what="result stored")
    detail = h.tech_json(tech, "case", case)
    assert len(detail["results"]) == 1
    assert detail["results"][0]["reports"][0]["readings"] == {"gate": "opened"}
    # The ack emptied the outbox; a restarted agent has nothing to resend.
    wait_until(lambda: sqlite3.connect(home / "agent.db").execute(
        "SELECT count(*) FROM outbox").fetchone()[0] == 0, what="outbox emptied by the ack")
    agent.stop()
    h.start_agent(home)
    db = sqlite3.connect(h.server_home / "store.db")
    assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 1


def test_a_second_agent_process_with_the_same_identity_replaces_the_first(
        running: Running) -> None:
    h = running.h
    home = h.enroll("TWICE", customer="Wang Fang", city="成都")
    first = h.start_agent(home)
    second = h.start_agent(home)
    assert first.popen.wait(30) == 1
    assert "running twice" in first.text()
    assert second.popen.poll() is None
    online = [a for a in h.tech_json(running.tech, "agents") if a["customer"] == "Wang Fang"]
    assert online[0]["online"] is True


def test_agent_lost_mid_request_is_reported_at_once(harness: Harness, tmp_path: Path) -> None:
    h = harness
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    gate = tmp_path / "gate"
    gate.mkdir()
    agent = h.start_agent(home, env={"HW_PLUGINS": "gateprobe", "HW_GATE_DIR": str(gate)})
    case = h.help(home).splitlines()[0]
    tech = h.add_tech("alice")
    h.grant(home, case, "alice")
    diag = h.spawn("diag", "hw-tech", "--home", str(tech), "diag", case, "--probes", "gate",
                   "--timeout", "600")
    from tests.harness import wait_until
    wait_until(lambda: (gate / "started").exists(), what="the gate probe to start")
    agent.stop(sig=9)
    assert diag.popen.wait(60) == 1  # not the 600 s timeout
    assert "went offline during the request" in diag.text()
