"""The SQLite fast path for group-committed writes: stdlib sqlite3, whole batches, no hops.

Through SQLAlchemy's async engine and aiosqlite, every statement of a write transaction is a
trip to aiosqlite's thread and back, wrapped in several layers of Python (compile cache
lookups, result objects, type processors): about 2.5 ms of CPU for an INSERT + COMMIT that
costs 0.34 ms in sqlite3 itself (``/work/shared/notes/hot-path-costs.md``). The hottest
writes of the server (the audit entry of every command, every result with its audit entry
and case state) are instead run as whole batches by :class:`SqliteWriter` on a plain sqlite3
connection with fixed SQL: one ``BEGIN IMMEDIATE`` ... ``COMMIT`` per batch.

The batch runs on the event loop's own thread. A hop to a writer thread and back cost more
server CPU (about 0.4 ms per batch, measured with bench/rtt.py: GIL hand-offs and wake-ups)
than the commit's fsync blocks the loop (0.2-0.3 ms here), and under load one fsync covers
a whole batch. Only when another process holds SQLite's write lock (``hw-server`` commands
run by an operator, another node) does the batch move to the writer's thread, where it waits
on the usual busy timeout without blocking the loop: the loop's own attempt never waits.

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

__all__ = ["SqliteBatch", "SqliteWriter", "run_jobs", "sqlite_time"]

def sqlite_time(value: datetime) -> str:
    """An aware datetime as SQLAlchemy's SQLite ``DateTime`` stores it (UTC, microseconds)."""
    # isoformat is several times faster than strftime; "+00:00" cut off
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


class SqliteBatch:
    """What a batch job gets instead of an ``AsyncConnection`` on the SQLite fast path.

    Only the store's ``*_in`` methods know what to do with it; it is valid only while its
    batch runs, in the writer's thread.
    """

    __slots__ = ("db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db


class SqliteWriter:
    """One sqlite3 connection to the store's file (opened on first use) that runs batches on
    the loop's thread, or in its own thread while another process holds the write lock."""

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
            return run_jobs(db, jobs)
        except _Busy:
            pass
        self.waited += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run_waiting, db, jobs)

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
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._close_db)
        self._pool.shutdown(wait=True)


class _Busy(Exception):
    """Another connection holds the write lock (only raised when not told to wait)."""


def run_jobs(db: sqlite3.Connection, jobs: Sequence[Callable[[Any], Any]], *,
             wait: bool = False) -> list[Any]:
    """Run the jobs of one batch in ONE transaction on ``db``.

    Each job is called with a :class:`SqliteBatch` and must return a coroutine that
    finishes without suspending (the store's ``*_in`` methods do, on this path). A job's
    ``StoreError`` (raised before it wrote anything) is its value; anything else rolls the
    whole batch back and propagates. Unless ``wait``, a write lock held elsewhere raises
    :class:`_Busy` before any job ran.
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
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as exc:
        raise StoreError(
            f"the store is unavailable or busy ({type(exc).__name__}); "
            "retry, and check the database if it keeps happening"
        ) from exc
    return out


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
