"""The agent's own durable state in ``agent.db`` (stdlib sqlite3, synchronous, tiny writes).

- ``outbox``: results not yet acknowledged by the server, resent after every reconnect;
- ``fixes``: every fix about to be applied, recorded (durably) before the fixer starts and
  marked when it ends, so that after a crash or ``kill -9`` the agent finds a fix that was
  cut off, reports it as interrupted and can still undo it (``hw-agent fixes``);
- ``cases``: cases this computer's customer opened with ``hw-agent help`` (opening a case
  is not consent: grants live in :mod:`agent.consent`);
- ``log``: what was done on this machine, for ``hw-agent log``; append-only and hash-chained
  like the server's audit log, so ``hw-agent log --verify`` (:meth:`LocalStore.verify_log`)
  detects an edited, deleted or reordered entry.

Log hash chain: every entry stores ``prev_hash`` (the previous entry's ``hash``; 32 zero bytes
for the first) and ``hash``::

    hash = SHA-256( b"helloword-agent-log-v1"
                    || field(prev_hash) || field(str(id)) || field(at) || field(event)
                    || field(detail) )
    field(b) = len(b) as 4 bytes big-endian || b          (text in UTF-8)

with ``at`` as RFC 3339 UTC with microseconds (``2026-11-26T08:00:00.000000Z``). A chain
cannot show that the newest entries were deleted (a truncated tail is still a valid chain).
An ``agent.db`` from before the chain gets the two columns on first open and its existing
entries chained as they are then: the chain vouches for them from that moment only.
"""

from __future__ import annotations

import errno
import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    msg_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, frame BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    number TEXT PRIMARY KEY, opened_at TEXT NOT NULL, description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fixes (
    request_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, case_number TEXT NOT NULL,
    tech TEXT NOT NULL, fixer TEXT NOT NULL, decision TEXT NOT NULL, plan_info BLOB NOT NULL,
    plan TEXT NOT NULL, state TEXT NOT NULL, undo TEXT, ended_at TEXT);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, event TEXT NOT NULL,
    detail TEXT NOT NULL);
"""
# The log table as first shipped had no hash columns; _chain_log adds them (and chains the
# rows already there) instead of _SCHEMA, so old and new databases take the same path.
_LOG_HASH_COLUMNS = ("prev_hash", "hash")
_LOG_DOMAIN = b"helloword-agent-log-v1"
# The newest id, and the newest hash (rows from before the chain have none).
_LOG_HEAD = ("SELECT (SELECT max(id) FROM log), "
             "(SELECT hash FROM log WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1)")
HASH_SIZE = 32
GENESIS = bytes(HASH_SIZE)


#: ``errno`` values that mean "nothing more can be written here".
_NO_ROOM = {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}


def cannot_record(exc: BaseException) -> bool:
    """Whether ``exc`` says the agent cannot write its records: SQLite's "database or disk
    is full" / read-only database / disk I/O error, or an ``OSError`` such as ``ENOSPC``."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return any(word in text for word in ("full", "readonly", "read-only", "disk i/o"))
    return isinstance(exc, OSError) and exc.errno in _NO_ROOM


@dataclass(frozen=True)
class LocalCase:
    number: str
    opened_at: datetime
    description: str


#: A fix's ``state`` in the ``fixes`` table.
FIX_APPLYING = "applying"
FIX_DONE = "done"
FIX_INTERRUPTED = "interrupted"
FIX_UNDONE = "undone"


@dataclass(frozen=True)
class FixRecord:
    """One fix as the agent recorded it before applying it (``plan`` and ``undo`` JSON,
    ``plan_info`` the wire :class:`~proto.messages.FixPlanInfo` as sent)."""

    request_id: str
    started_at: datetime
    case: str
    tech: str
    fixer: str
    decision: str
    plan_info: bytes
    plan: str
    state: str
    undo: str | None
    ended_at: datetime | None


@dataclass(frozen=True)
class LogEntry:
    at: datetime
    event: str
    detail: str
    id: int = 0
    prev_hash: bytes = b""
    hash: bytes = b""


def _ts(value: str) -> datetime:
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _rfc3339(at: datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("log times must be timezone-aware (UTC), got a naive datetime")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log_hash(*, prev_hash: bytes, id: int, at: datetime, event: str, detail: str) -> bytes:
    """The hash of one log entry (encoding in the module docstring)."""
    digest = hashlib.sha256(_LOG_DOMAIN)
    for part in (prev_hash, str(id).encode("ascii"), _rfc3339(at).encode("ascii"),
                 event.encode("utf-8"), detail.encode("utf-8")):
        digest.update(len(part).to_bytes(4, "big") + part)
    return digest.digest()


def _computed_hash(entry_id: int, at: Any, event: Any, detail: Any, prev_hash: Any
                   ) -> bytes | None:
    """Recompute a stored row's hash (``None`` if its contents cannot be read at all)."""
    if not (isinstance(at, str) and isinstance(event, str) and isinstance(detail, str)
            and isinstance(prev_hash, bytes)):
        return None
    try:
        when = _ts(at)
    except ValueError:
        return None
    return log_hash(prev_hash=prev_hash, id=entry_id, at=when, event=event, detail=detail)


class LocalStore:
    """One connection per process; every write is its own committed transaction, or part of
    one :meth:`batch`."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives the process being killed; only a power cut can
        # lose the newest commits (then the in-flight work is lost with the machine anyway).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._chain_log()

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, for another store of ``agent.db`` in this process to share
        (:class:`agent.consent.ConsentStore`): its writes then join :meth:`batch`."""
        return self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE so concurrent writers queue, not fork.

        Inside :meth:`batch` it joins the batch's transaction instead."""
        if self._db.in_transaction:
            yield self._db
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            # SQLite may have rolled back already (SQLITE_FULL does): a second ROLLBACK
            # would raise and hide the error that matters.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:  # a failed COMMIT may leave it open: end it
                self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every write on this connection inside the block is one transaction, committed
        (durable) when the block ends, rolled back if it raises. Never ``await`` inside:
        the database is locked for other writers until the end."""
        with self._write():
            yield

    def _chain_log(self) -> None:
        """Add the hash columns to a log table from before the chain, chaining its rows."""
        def columns() -> set[str]:
            return {r[1] for r in self._db.execute("PRAGMA table_info(log)")}

        if set(_LOG_HASH_COLUMNS) <= columns():
            return
        with self._write() as db:
            if not set(_LOG_HASH_COLUMNS) <= columns():  # another process may have done it
                db.execute("ALTER TABLE log ADD COLUMN prev_hash BLOB")
                db.execute("ALTER TABLE log ADD COLUMN hash BLOB")
                prev = GENESIS
                rows = db.execute("SELECT id, at, event, detail FROM log ORDER BY id").fetchall()
                for entry_id, at, event, detail in rows:
                    digest = _computed_hash(entry_id, at, event, detail, prev)
                    if digest is None:  # unreadable: left unhashed, verify_log names it
                        continue
                    db.execute("UPDATE log SET prev_hash = ?, hash = ? WHERE id = ?",
                               (prev, digest, entry_id))
                    prev = digest
                # One successor per entry: even a writer that skipped the lock cannot fork it.
                db.execute("CREATE UNIQUE INDEX IF NOT EXISTS log_prev_hash ON log (prev_hash)")

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

    # fixes
    def begin_fix(self, request_id: str, *, case: str, tech: str, fixer: str, decision: str,
                  plan_info: bytes, plan: str, now: datetime) -> None:
        """Record a fix as being applied (committed before the fixer moves anything)."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO fixes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, "
                       "NULL)", (request_id, now.isoformat(), case, tech, fixer, decision,
                                 plan_info, plan, FIX_APPLYING))

    def end_fix(self, request_id: str, *, state: str, undo: str | None, now: datetime
                ) -> None:
        """Mark a fix ``done``, ``interrupted`` or ``undone`` (``undo``: its undo data)."""
        with self._write() as db:
            db.execute("UPDATE fixes SET state = ?, undo = ?, ended_at = ? "
                       "WHERE request_id = ?", (state, undo, now.isoformat(), request_id))

    def fixes(self, state: str | None = None) -> list[FixRecord]:
        """The recorded fixes, oldest first (only those in ``state`` when given)."""
        sql = ("SELECT request_id, started_at, case_number, tech, fixer, decision, plan_info, "
               "plan, state, undo, ended_at FROM fixes")
        rows = (self._db.execute(sql + " ORDER BY started_at", ()) if state is None else
                self._db.execute(sql + " WHERE state = ? ORDER BY started_at", (state,)))
        return [FixRecord(r[0], _ts(r[1]), r[2], r[3], r[4], r[5], bytes(r[6]), r[7], r[8],
                          r[9], None if r[10] is None else _ts(r[10])) for r in rows]

    # cases
    def add_case(self, case: LocalCase) -> None:
        self._db.execute("INSERT OR REPLACE INTO cases VALUES (?, ?, ?)",
                         (case.number, case.opened_at.isoformat(),
                          case.description))

    def get_case(self, number: str) -> LocalCase | None:
        row = self._db.execute("SELECT * FROM cases WHERE number = ?", (number,)).fetchone()
        return None if row is None else LocalCase(row[0], _ts(row[1]), row[2])

    def cases(self) -> list[LocalCase]:
        rows = self._db.execute("SELECT * FROM cases ORDER BY opened_at")
        return [LocalCase(r[0], _ts(r[1]), r[2]) for r in rows]

    # log
    def log(self, event: str, detail: str, *, now: datetime) -> None:
        """Append an entry to the hash-chained log (never secrets: the customer reads it)."""
        at = _rfc3339(now)
        with self._write() as db:
            last_id, head = db.execute(_LOG_HEAD).fetchone()  # one statement: hot path
            entry_id = 1 if last_id is None else int(last_id) + 1
            prev = GENESIS if head is None else bytes(head)
            digest = log_hash(prev_hash=prev, id=entry_id, at=_ts(at), event=event,
                              detail=detail)
            db.execute("INSERT INTO log (id, at, event, detail, prev_hash, hash) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (entry_id, at, event, detail, prev, digest))

    def entries(self) -> list[LogEntry]:
        rows = self._db.execute(
            "SELECT at, event, detail, id, prev_hash, hash FROM log ORDER BY id")
        return [LogEntry(_ts(r[0]), r[1], r[2], r[3], bytes(r[4] or b""), bytes(r[5] or b""))
                for r in rows]

    def verify_log(self) -> tuple[bool, int, str]:
        """Re-hash the log and check every link: ``(ok, entries, reason)``.

        ``reason`` is ``""`` when ok, else it names the first broken entry, e.g.
        "entry 17: its hash does not match its contents (edited?)" or "entry 18: does not
        follow entry 16 (deleted or reordered?)". Deleting the newest entries is not
        detectable by a chain alone.
        """
        rows = self._db.execute(
            "SELECT id, at, event, detail, prev_hash, hash FROM log ORDER BY id").fetchall()
        head, prev_id = GENESIS, None
        for entry_id, at, event, detail, prev_hash, stored in rows:
            problem = ""
            if stored is None or stored != _computed_hash(entry_id, at, event, detail, prev_hash):
                problem = "its hash does not match its contents (edited?)"
            elif prev_hash != head and prev_id is None:
                problem = "does not start the log (earlier entries deleted?)"
            elif prev_hash != head:
                problem = f"does not follow entry {prev_id} (deleted or reordered?)"
            if problem:
                return False, len(rows), f"entry {entry_id}: {problem}"
            head, prev_id = stored, entry_id
        return True, len(rows), ""
