"""The agent's start-up report of fixes a previous run died applying (issue 13, break 5):
each is reported once as interrupted, whatever state its record or fixer is in, and a full
database at start-up leaves it to be reported later instead of stopping the agent."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.client import Agent
from agent.home import AgentHome, AgentState
from agent.localstore import FIX_APPLYING, FIX_INTERRUPTED
from plugins import get_plugin_manager
from proto import codec
from proto import messages as m
from server import pki

NOW = datetime.now(UTC)
CASE = "HW-20261206-0001"
INFO = msgspec.json.encode(m.FixPlanInfo(fixer="disk.cleanup", summary="move 3 files",
                                         reversible=True))


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    org, home = tmp_path / "org", tmp_path / "A"
    for d in (org, home):
        d.mkdir()
    pki.make_org_key(org)
    pki.make_ca(home, now=NOW)
    state = AgentState(agent_id="ag-test", urls=["wss://127.0.0.1:9"], customer="Li Wei",
                       ca_sha256=pki.ca_fingerprint((home / "ca.crt").read_bytes()).hex(),
                       org_pub=pki.org_public_raw(org).hex(), enrolled_at=NOW.isoformat())
    AgentHome(home).save(state, Ed25519PrivateKey.generate())
    a = Agent(AgentHome(home), get_plugin_manager(autoload=False))
    yield a
    a.store.close()
    a.consents.close()


def _begin(agent: Agent, request_id: str, fixer: str, plan: str) -> None:
    agent.store.begin_fix(request_id, case=CASE, tech="alice", fixer=fixer,
                          decision="approved", plan_info=INFO, plan=plan, now=NOW)


def _results(agent: Agent) -> dict[str, m.Result]:
    out = {}
    for _id, frame in agent.store.outbox():
        msg = codec.decode(frame)
        assert isinstance(msg, m.Result)
        out[msg.re] = msg
    return out


async def test_each_unfinished_fix_is_reported_once_as_interrupted(agent: Agent) -> None:
    plan = {"fixer": "disk.cleanup", "summary": "move 3 files", "changes": [],
            "reversible": True, "data": {"fix_id": "20261206T000000-abcd", "files": [{}] * 3}}
    _begin(agent, "rq-1", "disk.cleanup", json.dumps(plan))
    _begin(agent, "rq-2", "disk.cleanup", "{not json")
    _begin(agent, "rq-3", "no.such_fixer", json.dumps({**plan, "fixer": "no.such_fixer"}))
    assert await agent.recover_fixes() == 3
    results = _results(agent)
    assert set(results) == {"rq-1", "rq-2", "rq-3"}
    for result in results.values():
        fix = result.fix
        assert fix is not None and result.case == CASE and not result.ok
        assert (fix.applied, fix.ok, fix.verified) == (True, False, False)
        assert fix.outcome.startswith("Interrupted: the agent stopped")
        assert fix.details["interrupted"] is True
    assert "nothing changed" in results["rq-1"].fix.outcome  # type: ignore[union-attr]
    assert "record is unreadable" in results["rq-2"].fix.outcome  # type: ignore[union-attr]
    assert "no fixer named" in results["rq-3"].fix.outcome  # type: ignore[union-attr]
    assert {r.state for r in agent.store.fixes()} == {FIX_INTERRUPTED}
    assert await agent.recover_fixes() == 0, "reported once"
    assert len(agent.store.outbox()) == 3


async def test_a_full_database_at_start_up_leaves_the_report_for_later(agent: Agent) -> None:
    _begin(agent, "rq-9", "disk.cleanup", "{not json")
    # SQLITE_FULL, as a full disk gives it: no page can be added to agent.db, and the
    # pages it has are filled (every table the report writes to).
    db = agent.store.connection
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    fillers = {
        "outbox": lambda i, n: ("INSERT INTO outbox VALUES (?, ?, ?)",
                                (f"filler-{i}", NOW.isoformat(), b"x" * n)),
        "log": lambda i, n: ("INSERT INTO log (at, event, detail, prev_hash, hash) VALUES "
                             "(?, ?, ?, ?, ?)", (NOW.isoformat(), "filler", "x" * n,
                                                 secrets.token_bytes(32), b"")),
        "fixes": lambda i, n: ("INSERT INTO fixes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, "
                               "NULL)", (f"filler-{i}", NOW.isoformat(), CASE, "t", "f", "d",
                                         b"", "x" * n, "done")),
    }
    i = 0
    for make in fillers.values():
        for size in (2000, 500, 100, 20, 1):
            while True:
                i += 1
                try:
                    db.execute(*make(i, size))
                except sqlite3.OperationalError as exc:
                    assert "full" in str(exc)
                    break
    assert await agent.recover_fixes() == 1  # no exception: the agent goes on
    assert [r.state for r in agent.store.fixes(FIX_APPLYING)] == [FIX_APPLYING]
    assert [msg_id for msg_id, _ in agent.store.outbox() if not msg_id.startswith("filler")
            ] == []
