"""What every part of the store shares: the engine, the write lock and the transaction.

The aggregate modules (:mod:`.enrollment`, :mod:`.cases`, :mod:`.audit`, ...) each add their
methods to :class:`StoreBase` as a mixin; :class:`server.store.Store` combines them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any, Self

import sqlalchemy as sa
from alembic.util import CommandError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .engine import (
    BEGIN_OPTION,
    create_engine,
    current_revision,
    ensure_sqlite_wal,
    run_migrations,
    safe_url,
)
from .errors import StoreError
from .sqlitewriter import SqliteReader, SqliteWriter


class StoreBase:
    """The engine and the transaction helper; the aggregate mixins build on this."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Wrap an engine whose schema is already at head; use :meth:`open` instead."""
        self._engine = engine
        # Same pool; on SQLite its transactions start with BEGIN IMMEDIATE.
        self._write_engine = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        dialect = engine.dialect.name
        self._insert: Callable[[sa.Table], Any] = (
            sqlite.insert if dialect == "sqlite" else postgresql.insert
        )
        # SQLite has one writer at a time. Writers of this process queue here, in order,
        # instead of on SQLite's busy handler, which polls with sleeps of up to 100 ms and
        # cut concurrent writes to ~70 transactions/s (bench/agents.py fan-out). Other
        # processes still meet the busy timeout. PostgreSQL needs no such lock.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if dialect == "sqlite" else None
        # A SQLite file: group-committed batches (run_batch) take the fast path,
        # So do the point reads of the command path (SqliteReader).
        url = engine.url
        fast = bool(dialect == "sqlite" and url.database and url.database != ":memory:"
                    and not url.query)
        self._sqlite_writer = SqliteWriter(str(url.database)) if fast else None
        self._sqlite_reader = SqliteReader(str(url.database)) if fast else None

    @classmethod
    async def open(cls, url: str) -> Self:
        """Connect to ``url`` and upgrade its schema to head (a no-op when already there).

        Raises:
            StoreError: the URL names an unsupported database, or it cannot be opened or
                migrated (the message names the URL without its password).
        """
        engine = create_engine(url)
        store = cls(engine)
        try:
            if engine.dialect.name == "sqlite":
                await ensure_sqlite_wal(engine)
            async with store._write_engine.begin() as conn:
                await conn.run_sync(run_migrations)
        except (sa.exc.SQLAlchemyError, sqlite3.Error, OSError, CommandError) as exc:
            await engine.dispose()
            raise StoreError(
                f"could not open or migrate the store at {safe_url(url)} "
                f"({type(exc).__name__}); check that the database exists, is reachable "
                "and writable, and was not created by a newer hw-server"
            ) from exc
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        """Close every pooled connection (and the fast path's writer thread)."""
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()
        if self._sqlite_reader is not None:
            self._sqlite_reader.close()
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _tx(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        engine = self._write_engine if write else self._engine
        lock = self._write_lock if write else None
        try:
            async with contextlib.AsyncExitStack() as stack:
                if lock is not None:
                    await stack.enter_async_context(lock)
                conn = await stack.enter_async_context(engine.begin())
                yield conn
        except (OperationalError, sa.exc.InterfaceError) as exc:
            raise StoreError(
                f"the store is unavailable or busy ({type(exc.orig).__name__}); "
                "retry, and check the database if it keeps happening"
            ) from exc
        except sa.exc.TimeoutError as exc:  # every pooled connection busy for too long
            raise StoreError(
                "the store is overloaded (no database connection free in time); retry in "
                "a moment"
            ) from exc
        except OSError as exc:  # asyncpg: the server refused or dropped the connection
            raise StoreError(
                f"the store's database server cannot be reached ({type(exc).__name__}); "
                "check that it is running and reachable, then retry"
            ) from exc

    async def schema_revision(self) -> str | None:
        """The alembic revision the database is at (``None`` for an empty database)."""
        async with self._tx(write=False) as conn:
            return await conn.run_sync(current_revision)
