"""The SQLite fast path for group-committed writes: stdlib sqlite3, whole batches, no hops.

Through SQLAlchemy's async engine and aiosqlite, every statement of a write transaction is a
trip to aiosqlite's thread and back, wrapped in several layers of Python (compile cache
lookups, result objects, type processors): about 2.5 ms of CPU for an INSERT + COMMIT that
costs 0.34 ms in sqlite3 itself (``/work/shared/notes/hot-path-costs.md``). The hottest
writes of the server (the audit entry of every command, every result with its audit entry
and case state) are instead run as whole batches by :class:`SqliteWriter` on a plain sqlite3
connection with fixed SQL: one ``BEGIN IMMEDIATE`` ... ``COMMIT`` per batch.

The batch's statements run on the event loop's own thread (microseconds each: no thread hop
per statement, and the jobs' Python stays off the writer thread, so no GIL ping-pong); only
its ``COMMIT``, which waits for the fsync (0.2-2 ms here), goes to the writer's thread: one
hop per batch, and the loop keeps serving connections meanwhile, so under load the next
batch fills up while this one is made durable (committing on the loop thread blocked it for
every fsync: 10,000 commands in flight took 32 s). When another process holds SQLite's
write lock (``hw-server`` commands run by an operator), the loop's attempt does not wait:
the whole batch moves to the writer's thread and waits there on the usual busy timeout.

Durability is the same as the async path's: the same database file in WAL mode, committed
with ``synchronous=FULL`` (the WAL is fsynced at every commit), so a value is only returned
once it is on disk. The batch holds the store's write lock while it runs, so the store's
other writers of this process queue behind it instead of meeting SQLite's busy handler.

Values are stored exactly as SQLAlchemy stores them (:func:`sqlite_time` is the text of
``UTCDateTime`` on SQLite, booleans are 0/1), so either path reads what the other wrote.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from .engine import SQLITE_BUSY_TIMEOUT_MS
from .errors import StoreError

__all__ = ["SqliteBatch", "SqliteBusy", "SqliteReader", "SqliteWriter", "run_jobs",
           "sqlite_time", "utc_from_sqlite"]

def sqlite_time(value: datetime) -> str:
    """An aware datetime as SQLAlchemy's SQLite ``DateTime`` stores it (UTC, microseconds)."""
    # isoformat is several times faster than strftime; "+00:00" cut off
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


def utc_from_sqlite(text: str) -> datetime:
    """A ``UTCDateTime`` as stored on SQLite, read back as SQLAlchemy does: aware UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class SqliteBusy(Exception):
    """SQLite said busy and the caller asked not to wait: take the other path."""


class SqliteReader:
    """A read connection for the few point reads on the command path (a case's agent), on
    the loop's thread: in WAL mode a read neither waits for writers nor blocks them, and an
    indexed lookup costs microseconds here against milliseconds through aiosqlite."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def fetchone(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The first row of a query, read in its own snapshot (autocommit).

        Raises:
            SqliteBusy: SQLite could not read at once (e.g. recovering a WAL index).
        """
        if self._db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=0")
            db.execute("PRAGMA query_only=ON")
            self._db = db
        try:
            row: tuple[Any, ...] | None = self._db.execute(sql, params).fetchone()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                raise SqliteBusy from exc
            raise
        return row

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class SqliteBatch:
    """What a batch job gets instead of an ``AsyncConnection`` on the SQLite fast path.

    Only the store's ``*_in`` methods know what to do with it; it is valid only while its
    batch runs, in the writer's thread.
    """

    __slots__ = ("db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db


class SqliteWriter:
    """One sqlite3 connection to the store's file (opened on first use) and one thread for
    its commits (and for batches that must wait for another process's write lock)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hw-store-writer")
        self._db: sqlite3.Connection | None = None
        self.waited = 0  # batches that had to wait for another process's write lock

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                 cached_statements=64)
            db.execute("PRAGMA busy_timeout=0")  # see run(): the loop never waits on a lock
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=FULL")  # durable at COMMIT, as the async path
            self._db = db
        return self._db

    async def run(self, jobs: Sequence[Callable[[Any], Any]]) -> list[Any]:
        """Run one batch (:func:`run_jobs`) in one transaction and return its values.

        The caller holds the store's write lock, so batches never overlap."""
        db = self._connect()
        try:
            out = run_jobs(db, jobs, commit=False)
        except _Busy:
            self.waited += 1
            return await asyncio.wrap_future(self._pool.submit(self._run_waiting, db, jobs))
        done = self._pool.submit(_commit, db)
        try:
            await asyncio.shield(asyncio.wrap_future(done))
        except asyncio.CancelledError:
            done.result()  # the connection is not free before its commit has ended
            raise
        return out

    @staticmethod
    def _run_waiting(db: sqlite3.Connection, jobs: Sequence[Callable[[Any], Any]]
                     ) -> list[Any]:
        db.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_MS)}")
        try:
            return run_jobs(db, jobs, wait=True)
        finally:
            db.execute("PRAGMA busy_timeout=0")

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def close(self) -> None:
        """Close the connection (after whatever batch is running) and end the thread."""
        if self._db is not None:
            await asyncio.wrap_future(self._pool.submit(self._close_db))
        self._pool.shutdown(wait=True)


class _Busy(Exception):
    """Another connection holds the write lock (only raised when not told to wait)."""


def run_jobs(db: sqlite3.Connection, jobs: Sequence[Callable[[Any], Any]], *,
             wait: bool = False, commit: bool = True) -> list[Any]:
    """Run the jobs of one batch in ONE transaction on ``db``.

    Each job is called with a :class:`SqliteBatch` and must return a coroutine that
    finishes without suspending (the store's ``*_in`` methods do, on this path). A job's
    ``StoreError`` (raised before it wrote anything) is its value; anything else rolls the
    whole batch back and propagates. Unless ``wait``, a write lock held elsewhere raises
    :class:`_Busy` before any job ran. Without ``commit`` the transaction is left open for
    :func:`_commit`.
    """
    batch = SqliteBatch(db)
    out: list[Any] = []
    try:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not wait and exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                raise _Busy from exc
            raise
        try:
            for job in jobs:
                out.append(_run_to_end(job(batch)))
            if commit:
                db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as exc:
        raise _unavailable(exc) from exc
    return out


def _commit(db: sqlite3.Connection) -> None:
    """COMMIT the batch :func:`run_jobs` left open (in the writer's thread: the fsync)."""
    try:
        try:
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as exc:
        raise _unavailable(exc) from exc


def _unavailable(exc: sqlite3.OperationalError) -> StoreError:
    return StoreError(f"the store is unavailable or busy ({type(exc).__name__}); "
                      "retry, and check the database if it keeps happening")


def _run_to_end(coro: Any) -> Any:
    """The value of a coroutine that never suspends (or the ``StoreError`` it raised)."""
    if not isinstance(coro, Coroutine):
        raise TypeError("a batch job must be an async function of the connection it is given")
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    except StoreError as exc:
        return exc
    coro.close()
    raise RuntimeError(
        "a batch job waited for something; on SQLite, jobs given to Store.run_batch may "
        "only call the store's *_in methods (append_audit_in, store_result_in)"
    )
