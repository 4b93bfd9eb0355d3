"""Consent the customer owns and commands the server cannot forge, end to end."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from server import pki
from tests.harness import Harness, wait_until

pytestmark = pytest.mark.e2e


def _setup(h: Harness, env: dict[str, str] | None = None) -> tuple[Path, str, Path]:
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    h.start_agent(home, env=env)
    case = h.help(home).splitlines()[0]
    return home, case, h.add_tech("alice")


def _ran(out: tuple[int, str]) -> bool:
    """The diag ran; a failure shows hw-tech's stderr (why it was refused)."""
    assert out[0] == 0, out[1]
    return True


def _diag(h: Harness, tech: Path, case: str, *extra: str) -> tuple[int, str]:
    p = h.run("hw-tech", "--home", str(tech), "diag", case, "--probes", "system", *extra,
              check=False)
    return p.returncode, p.stderr


def test_diag_needs_a_grant_and_stops_at_revoke_and_expiry(harness: Harness) -> None:
    h = harness
    home, case, alice = _setup(h)
    code, err = _diag(h, alice, case)
    assert code == 1 and "no_consent" in err and "consent-request" in err
    h.grant(home, case, "alice")
    assert _ran(_diag(h, alice, case))
    h.run("hw-agent", "consent", "revoke", "--home", str(home), "--case", case)
    code, err = _diag(h, alice, case)
    assert code == 1 and "no_consent" in err
    h.grant(home, case, "alice", duration="1s")
    wait_until(lambda: _diag(h, alice, case)[0] == 1, what="the 1 s grant to expire")
    status = h.run("hw-agent", "consent", "status", "--home", str(home), "--json").stdout
    assert '"active": false' in status and '"revoked_at": null' in status


def test_a_grant_to_alice_does_not_let_bob_act(harness: Harness) -> None:
    h = harness
    home, case, alice = _setup(h)
    bob = h.add_tech("bob")
    h.grant(home, case, "alice")
    code, err = _diag(h, bob, case)
    assert code == 1 and "no_consent" in err and "bob" in err
    assert _ran(_diag(h, alice, case))


def test_consent_request_is_answered_by_the_customer(harness: Harness) -> None:
    h = harness
    home, case, alice = _setup(h)
    ask = h.spawn("ask", "hw-tech", "--home", str(alice), "consent-request", case,
                  "--scopes", "diagnostics", "--for", "20m", "--json")
    wait_until(lambda: "asks for access" in h.run("hw-agent", "consent", "status", "--home",
                                                  str(home)).stdout,
               what="the request to reach the customer")
    grant = h.grant(home, case, "alice", duration="20m")
    assert ask.popen.wait(60) == 0
    assert '"granted": true' in ask.text() and grant["tech_fingerprint"].startswith("SHA256:")
    assert _ran(_diag(h, alice, case))
    shown = h.run("hw-server", "audit", "show", "--home", str(h.server_home), "--json").stdout
    assert "consent.granted" in shown and "tech.login" in shown and '"relayed"' in shown


def test_unanswered_request_is_denied_never_approved(harness: Harness) -> None:
    h = harness
    home, case, alice = _setup(h)
    p = h.run("hw-tech", "--home", str(alice), "consent-request", case, "--scopes",
              "diagnostics", "--timeout", "4", check=False)
    assert p.returncode == 1 and "declined" in p.stderr
    assert _diag(h, alice, case)[0] == 1
    assert "declined" in h.run("hw-agent", "log", "--home", str(home)).stdout


def test_policy_preapproves_and_caps(harness: Harness, tmp_path: Path) -> None:
    h = harness
    policy = tmp_path / "policy.toml"
    policy.write_text('max_minutes = 10\npreapproved_scopes = ["diagnostics"]\n')
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    h.start_agent(home, None, "--policy", str(policy))
    case = h.help(home).splitlines()[0]
    alice = h.add_tech("alice")
    answer = h.tech_json(alice, "consent-request", case, "--scopes", "diagnostics", "--for",
                         "2h")
    assert answer["granted"] is True and answer["grant"]["via"] == "policy"
    from datetime import datetime

    g = answer["grant"]
    span = datetime.fromisoformat(g["expires_at"]) - datetime.fromisoformat(g["granted_at"])
    assert span.total_seconds() == 600, "the policy caps 2 h at 10 min"
    p = h.run("hw-tech", "--home", str(alice), "consent-request", case, "--scopes", "shell",
              "--timeout", "4", check=False)
    assert p.returncode == 1, "only pre-approved scopes are granted without asking"


def test_compromised_server_cannot_command_the_agent(harness: Harness, tmp_path: Path) -> None:
    """The server trusts an attacker's org key and technician; the agent refuses them all."""
    h = harness
    home, case, _alice = _setup(h)
    h.grant(home, case, "alice", scopes="diagnostics,fix")
    server = h.procs[0]
    server.stop()
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    pki.make_org_key(attacker)
    for name in ("org.key", "org.pub"):
        shutil.copyfile(attacker / name, h.server_home / name)
    h.start_server()
    evil = h.root / "T-evil"
    h.run("hw-server", "tech", "add", "--home", str(h.server_home), "alice", "--out", str(evil))
    h.tech_json(evil, "agents")  # the server accepts the attacker's "alice"
    code, err = _diag(h, evil, case)
    assert code == 1 and "untrusted_certificate" in err
    p = h.run("hw-tech", "--home", str(evil), "consent-request", case, "--scopes", "shell",
              check=False)
    assert p.returncode == 1 and "untrusted_certificate" in p.stderr
    log = h.run("hw-agent", "log", "--home", str(home)).stdout
    assert log.count("untrusted_certificate") == 2
    assert "ran diagnostics" not in log


def test_revoking_cancels_a_running_action(harness: Harness, tmp_path: Path) -> None:
    h = harness
    gate = tmp_path / "gate"
    gate.mkdir()
    home, case, alice = _setup(h, env={"HW_PLUGINS": "gateprobe", "HW_GATE_DIR": str(gate)})
    h.grant(home, case, "alice")
    diag = h.spawn("diag", "hw-tech", "--home", str(alice), "diag", case, "--probes", "gate")
    wait_until(lambda: (gate / "started").exists(), what="the gate probe to start")
    out = h.run("hw-agent", "consent", "revoke", "--home", str(home), "--case", case).stdout
    assert "cancelled 1 running action" in out
    assert diag.popen.wait(60) == 1
    assert "consent revoked" in diag.text()
    assert "cancelled" in h.run("hw-agent", "log", "--home", str(home)).stdout
    (gate / "open").touch()


def test_editing_either_audit_log_is_detected(harness: Harness) -> None:
    h = harness
    home, case, alice = _setup(h)
    h.grant(home, case, "alice")
    assert _ran(_diag(h, alice, case))
    h.run("hw-server", "audit", "verify", "--home", str(h.server_home))
    h.run("hw-agent", "log", "--home", str(home), "--verify")
    db = sqlite3.connect(h.server_home / "store.db")
    db.execute("UPDATE audit SET actor = 'tech:mallory' WHERE id = 2")
    db.commit()
    p = h.run("hw-server", "audit", "verify", "--home", str(h.server_home), check=False)
    assert p.returncode == 1 and "entry 2" in p.stderr
    db = sqlite3.connect(home / "agent.db")
    db.execute("UPDATE log SET detail = 'nothing happened' WHERE event = 'diag'")
    db.commit()
    p = h.run("hw-agent", "log", "--home", str(home), "--verify", check=False)
    assert p.returncode == 1 and "tampered" in p.stderr
