"""The agent's durable outbox, cases and local log survive a reopen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.localstore import LocalCase, LocalStore

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def test_outbox_survives_reopen_until_acked(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    s = LocalStore(db)
    s.put_outbox("rs-1", b"frame-1", now=NOW)
    s.put_outbox("rs-2", b"frame-2", now=NOW + timedelta(seconds=1))
    s.put_outbox("rs-1", b"frame-1-again", now=NOW)  # idempotent
    s.close()
    s = LocalStore(db)
    assert s.outbox() == [("rs-1", b"frame-1"), ("rs-2", b"frame-2")]
    assert s.ack("rs-1") is True
    assert s.ack("rs-1") is False
    assert s.outbox() == [("rs-2", b"frame-2")]
    s.close()


def test_cases_and_log_round_trip(tmp_path: Path) -> None:
    s = LocalStore(tmp_path / "agent.db")
    case = LocalCase("HW-20261126-0001", NOW, NOW + timedelta(hours=24), "hot laptop")
    s.add_case(case)
    assert s.get_case("HW-20261126-0001") == case
    assert s.get_case("HW-20261126-0002") is None
    s.log("help", "opened", now=NOW)
    s.log("diag", "alice ran diagnostics", now=NOW)
    assert [(e.event, e.detail) for e in s.entries()] == [("help", "opened"),
                                                         ("diag", "alice ran diagnostics")]
    assert all(e.at.tzinfo is not None for e in s.entries())
    s.close()
