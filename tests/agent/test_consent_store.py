"""The grants the agent holds in memory are never staler than agent.db, and the local log
and the grants commit together when they share the local store's connection."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.consent import ConsentStore, Policy
from agent.localstore import LocalStore
from proto import messages as m

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
CASE = "HW-20261126-0001"


def _grant(store: ConsentStore, tech: str = "alice") -> str:
    return store.grant(case=CASE, tech=tech, scopes=[m.Scope.DIAGNOSTICS],
                       duration=timedelta(hours=1), now=NOW, via="test",
                       policy=Policy()).receipt_id


@pytest.mark.parametrize("shared", [False, True], ids=["own", "shared"])
def test_a_grant_written_by_another_process_is_seen(tmp_path: Path, shared: bool) -> None:
    db = tmp_path / "agent.db"
    local = LocalStore(db)
    agent = ConsentStore(db, agent_id="ag-test",
                         connection=local.connection if shared else None)
    other = ConsentStore(db, agent_id="ag-test")  # its own connection, as another process
    try:
        first = _grant(agent)
        assert [g.receipt_id for g in agent.all()] == [first]  # now held in memory
        local.log("diag", "alice ran diagnostics", now=NOW)
        assert [g.receipt_id for g in agent.all()] == [first]
        second = _grant(other, tech="bob")
        assert [g.receipt_id for g in agent.all()] == [first, second]
        other.revoke(case=CASE, now=NOW + timedelta(minutes=1))
        assert [g.active(NOW + timedelta(minutes=2)) for g in agent.all()] == [False, False]
        # a write straight into the table, by no ConsentStore at all
        raw = sqlite3.connect(db, isolation_level=None)
        raw.execute("DELETE FROM grants WHERE tech = 'bob'")
        raw.close()
        assert [g.receipt_id for g in agent.all()] == [first]
    finally:
        other.close()
        agent.close()
        local.close()


def test_the_agents_own_writes_are_seen_at_once(tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "agent.db")
    store = ConsentStore(tmp_path / "agent.db", agent_id="ag-test", connection=local.connection)
    try:
        assert store.all() == []
        receipt = _grant(store)
        assert [g.receipt_id for g in store.all()] == [receipt]
        store.revoke(case=None, now=NOW + timedelta(minutes=1))
        assert store.all()[0].revoked_at == NOW + timedelta(minutes=1)
        store.all().clear()  # a caller's copy: the held grants stay
        assert len(store.all()) == 1
    finally:
        store.close()
        local.close()


def test_a_shared_connection_is_closed_by_its_owner_only(tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "agent.db")
    store = ConsentStore(tmp_path / "agent.db", agent_id="ag-test", connection=local.connection)
    store.close()
    local.log("help", "still open", now=NOW)
    local.close()


def test_a_batch_commits_the_nonce_and_the_log_together_or_not_at_all(tmp_path: Path
                                                                      ) -> None:
    db = tmp_path / "agent.db"
    local = LocalStore(db)
    store = ConsentStore(db, agent_id="ag-test", connection=local.connection)
    reader = sqlite3.connect(db, isolation_level=None)

    def counts() -> tuple[int, int]:
        return (reader.execute("SELECT count(*) FROM seen_nonces").fetchone()[0],
                reader.execute("SELECT count(*) FROM log").fetchone()[0])

    try:
        with pytest.raises(RuntimeError), local.batch():
            store.remember_nonce(b"n" * 16, NOW + timedelta(minutes=5), NOW)
            local.log("diag", "alice ran diagnostics", now=NOW)
            raise RuntimeError("the gate failed")
        assert counts() == (0, 0)
        with local.batch():
            store.remember_nonce(b"n" * 16, NOW + timedelta(minutes=5), NOW)
            local.log("diag", "alice ran diagnostics", now=NOW)
            local.log("diag", "and again", now=NOW)
            assert counts() == (0, 0)  # nothing is visible before the batch commits
        assert counts() == (1, 2)
        ok, entries, reason = local.verify_log()
        assert (ok, entries, reason) == (True, 2, "")
    finally:
        reader.close()
        store.close()
        local.close()
