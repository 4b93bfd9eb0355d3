"""The agent's own durable state in ``agent.db`` (stdlib sqlite3, synchronous, tiny writes).

- ``outbox``: results not yet acknowledged by the server, resent after every reconnect;
- ``cases``: cases this computer's customer opened with ``hw-agent help``, and until when
  that request counts as consent to diagnostics;
- ``log``: what was done on this machine, for ``hw-agent log``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    msg_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, frame BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    number TEXT PRIMARY KEY, opened_at TEXT NOT NULL, diag_until TEXT NOT NULL,
    description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, event TEXT NOT NULL,
    detail TEXT NOT NULL);
"""


@dataclass(frozen=True)
class LocalCase:
    number: str
    opened_at: datetime
    diag_until: datetime
    description: str


@dataclass(frozen=True)
class LogEntry:
    at: datetime
    event: str
    detail: str


def _ts(value: str) -> datetime:
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class LocalStore:
    """One connection per process; every write is its own committed transaction."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives the process being killed; only a power cut can
        # lose the newest commits (then the in-flight work is lost with the machine anyway).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # outbox
    def put_outbox(self, msg_id: str, frame: bytes, *, now: datetime) -> None:
        self._db.execute("INSERT OR IGNORE INTO outbox VALUES (?, ?, ?)",
                         (msg_id, now.isoformat(), frame))

    def outbox(self) -> list[tuple[str, bytes]]:
        rows = self._db.execute("SELECT msg_id, frame FROM outbox ORDER BY created_at, msg_id")
        return [(r[0], bytes(r[1])) for r in rows]

    def ack(self, msg_id: str) -> bool:
        return self._db.execute("DELETE FROM outbox WHERE msg_id = ?", (msg_id,)).rowcount == 1

    # cases
    def add_case(self, case: LocalCase) -> None:
        self._db.execute("INSERT OR REPLACE INTO cases VALUES (?, ?, ?, ?)",
                         (case.number, case.opened_at.isoformat(), case.diag_until.isoformat(),
                          case.description))

    def get_case(self, number: str) -> LocalCase | None:
        row = self._db.execute("SELECT * FROM cases WHERE number = ?", (number,)).fetchone()
        return None if row is None else LocalCase(row[0], _ts(row[1]), _ts(row[2]), row[3])

    def cases(self) -> list[LocalCase]:
        rows = self._db.execute("SELECT * FROM cases ORDER BY opened_at")
        return [LocalCase(r[0], _ts(r[1]), _ts(r[2]), r[3]) for r in rows]

    # log
    def log(self, event: str, detail: str, *, now: datetime) -> None:
        self._db.execute("INSERT INTO log (at, event, detail) VALUES (?, ?, ?)",
                         (now.isoformat(), event, detail))

    def entries(self) -> list[LogEntry]:
        rows = self._db.execute("SELECT at, event, detail FROM log ORDER BY id")
        return [LogEntry(_ts(r[0]), r[1], r[2]) for r in rows]
