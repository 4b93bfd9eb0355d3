"""`hw-agent fixes` never writes a peer's or the disk's control characters raw (issue 13,
break 3): a fix record names the technician, the case and what the fixer said, which can
carry C1 controls, bidi overrides or escape sequences."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.home import AgentHome, AgentState
from agent.localstore import LocalStore
from server import pki

BIN = Path(sys.executable).parent
NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
HOSTILE = "evil\u202egpj.exe\x9b2J\x1b]52;c;aGk=\x07"


def test_fixes_list_escapes_what_a_record_holds(tmp_path: Path) -> None:
    home, org = tmp_path / "A", tmp_path / "org"
    home.mkdir()
    org.mkdir()
    pki.make_org_key(org)
    pki.make_ca(home, now=NOW)
    state = AgentState(agent_id="ag-test", urls=["wss://127.0.0.1:9"], customer="Li Wei",
                       ca_sha256=pki.ca_fingerprint((home / "ca.crt").read_bytes()).hex(),
                       org_pub=pki.org_public_raw(org).hex(), enrolled_at=NOW.isoformat())
    AgentHome(home).save(state, Ed25519PrivateKey.generate())
    store = LocalStore(AgentHome(home).db_path)
    try:
        store.begin_fix("rq-1", case="HW-20261206-0001", tech=HOSTILE, fixer=HOSTILE,
                        decision="approved", plan_info=b"", plan="", now=NOW)
        store.end_fix("rq-1", state="done", undo=None, now=NOW)
    finally:
        store.close()
    for argv in (["--json"], []):
        p = subprocess.run([str(BIN / "hw-agent"), "fixes", "list", "--home", str(home),
                            *argv], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        for raw in ("\u202e", "\x9b", "\x1b", "\x07"):
            assert raw not in p.stdout, (argv, p.stdout)
        if argv:  # the JSON still says exactly what was recorded
            assert json.loads(p.stdout)[0]["tech"] == HOSTILE
