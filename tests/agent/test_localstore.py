"""The agent's durable outbox, cases and local log survive a reopen."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.localstore import GENESIS, LocalCase, LocalStore, log_hash

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
    case = LocalCase("HW-20261126-0001", NOW, "hot laptop")
    s.add_case(case)
    assert s.get_case("HW-20261126-0001") == case
    assert s.get_case("HW-20261126-0002") is None
    s.log("help", "opened", now=NOW)
    s.log("diag", "alice ran diagnostics", now=NOW)
    assert [(e.event, e.detail) for e in s.entries()] == [("help", "opened"),
                                                         ("diag", "alice ran diagnostics")]
    assert all(e.at.tzinfo is not None for e in s.entries())
    s.close()


# --------------------------------------------------------------------------- hash-chained log

OLD_SCHEMA = """
CREATE TABLE outbox (msg_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, frame BLOB NOT NULL);
CREATE TABLE cases (number TEXT PRIMARY KEY, opened_at TEXT NOT NULL, diag_until TEXT NOT NULL,
    description TEXT NOT NULL);
CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, event TEXT NOT NULL,
    detail TEXT NOT NULL);
"""


def filled(path: Path, n: int = 5) -> LocalStore:
    s = LocalStore(path)
    for i in range(1, n + 1):
        s.log(f"event{i}", f"detail {i}", now=NOW + timedelta(minutes=i))
    return s


def tamper(path: Path, sql: str, *params: object) -> None:
    """Change agent.db behind the agent's back, as someone with access to the file."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        assert db.execute(sql, params).rowcount >= 1
    finally:
        db.close()


def test_log_is_hash_chained(tmp_path: Path) -> None:
    s = filled(tmp_path / "agent.db", 3)
    entries = s.entries()
    assert [e.id for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == GENESIS
    assert [e.prev_hash for e in entries[1:]] == [e.hash for e in entries[:-1]]
    first = entries[0]
    assert first.hash == log_hash(prev_hash=GENESIS, id=1, at=NOW + timedelta(minutes=1),
                                  event="event1", detail="detail 1")
    assert s.verify_log() == (True, 3, "")
    s.close()


def test_log_hash_matches_the_documented_format() -> None:
    fields = [b"\0" * 32, b"1", b"2026-11-26T08:00:00.000000Z", b"help", "开了".encode()]
    expected = hashlib.sha256(
        b"helloword-agent-log-v1" + b"".join(len(f).to_bytes(4, "big") + f for f in fields)
    ).digest()
    china = timezone(timedelta(hours=8))
    assert log_hash(prev_hash=GENESIS, id=1, at=NOW.astimezone(china), event="help",
                    detail="开了") == expected


def test_an_empty_log_verifies() -> None:
    s = LocalStore(Path(":memory:"))
    assert s.verify_log() == (True, 0, "")
    s.close()


@pytest.mark.parametrize(
    ("column", "value"),
    [("detail", "nothing happened"), ("event", "help"), ("at", "2026-11-26T08:03:00.000001Z"),
     ("at", "not a time"), ("hash", None)],
    ids=["detail", "event", "at", "at-garbage", "hash-null"],
)
def test_an_edited_log_entry_is_named(tmp_path: Path, column: str, value: object) -> None:
    db = tmp_path / "agent.db"
    s = filled(db)
    tamper(db, f"UPDATE log SET {column} = ? WHERE id = 3", value)
    assert s.verify_log() == (False, 5, "entry 3: its hash does not match its contents "
                                        "(edited?)")
    s.close()


def test_a_deleted_log_entry_is_named(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    s = filled(db)
    tamper(db, "DELETE FROM log WHERE id = 3")
    assert s.verify_log() == (False, 4, "entry 4: does not follow entry 2 (deleted or "
                                        "reordered?)")
    tamper(db, "DELETE FROM log WHERE id = 1")
    assert s.verify_log() == (False, 3, "entry 2: does not start the log (earlier entries "
                                        "deleted?)")
    s.close()


def test_swapped_log_entries_are_detected(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    s = filled(db)
    tamper(db, "UPDATE log SET id = 99 WHERE id = 2")
    tamper(db, "UPDATE log SET id = 2 WHERE id = 3")
    tamper(db, "UPDATE log SET id = 3 WHERE id = 99")
    ok, _, reason = s.verify_log()
    assert not ok and reason.startswith("entry 2: its hash does not match")
    s.close()


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    LocalStore(db).close()

    def write(who: str) -> None:
        s = LocalStore(db)  # one connection per thread, as separate processes would have
        try:
            for i in range(20):
                s.log(who, str(i), now=NOW)
        finally:
            s.close()

    threads = [threading.Thread(target=write, args=(f"w{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = LocalStore(db)
    assert s.verify_log() == (True, 40, "")
    assert sorted(e.detail for e in s.entries() if e.event == "w1") == sorted(map(str,
                                                                                 range(20)))
    s.close()


def test_log_refuses_naive_times(tmp_path: Path) -> None:
    s = LocalStore(tmp_path / "agent.db")
    with pytest.raises(ValueError, match="timezone-aware"):
        s.log("e", "d", now=datetime(2026, 11, 26, 8, 0))
    assert s.entries() == []
    s.close()


def test_an_old_agent_db_is_chained_on_open(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    old = sqlite3.connect(db, isolation_level=None)
    old.executescript(OLD_SCHEMA)
    china = timezone(timedelta(hours=8))
    rows = [(NOW.isoformat(), "help", "opened"),
            (NOW.astimezone(china).isoformat(), "diag", "alice ran diagnostics"),
            ("2026-11-26T09:00:00", "connected", "wss://x")]  # naive: taken as UTC
    old.executemany("INSERT INTO log (at, event, detail) VALUES (?, ?, ?)", rows)
    old.execute("INSERT INTO outbox VALUES ('rs-1', ?, x'00')", (NOW.isoformat(),))
    old.close()

    s = LocalStore(db)
    assert s.verify_log() == (True, 3, "")
    assert [(e.id, e.event, e.detail) for e in s.entries()] == [
        (1, "help", "opened"), (2, "diag", "alice ran diagnostics"), (3, "connected", "wss://x")]
    assert s.outbox() == [("rs-1", b"\0")]
    s.log("granted", "alice: diagnostics", now=NOW + timedelta(hours=2))
    assert s.verify_log() == (True, 4, "")
    hashes = [e.hash for e in s.entries()]
    s.close()

    again = LocalStore(db)  # reopening changes nothing
    assert [e.hash for e in again.entries()] == hashes
    assert again.verify_log() == (True, 4, "")
    again.close()
    tamper(db, "UPDATE log SET detail = 'closed' WHERE id = 1")
    again = LocalStore(db)
    assert again.verify_log() == (False, 4, "entry 1: its hash does not match its contents "
                                            "(edited?)")
    again.close()
