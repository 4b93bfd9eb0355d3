"""Engine creation, SQLite connection settings (WAL, busy timeout, foreign keys, BEGIN
IMMEDIATE for writers) and the alembic migrations.

SQLite concurrency: connections run with ``journal_mode=WAL``, a busy timeout and
``foreign_keys=ON``. sqlite3's own (legacy) transaction control is switched off and the store
emits ``BEGIN IMMEDIATE`` for transactions that write and plain ``BEGIN`` for reads, so DDL is
transactional, writers queue on the busy timeout instead of failing with a stale snapshot, and
reads within one method see one snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from .errors import StoreError

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS: Final = 10_000
BEGIN_OPTION: Final = "helloword_sqlite_begin"
"""Execution option: ``"IMMEDIATE"`` makes a SQLite transaction start with BEGIN IMMEDIATE."""

_SUPPORTED_DIALECTS: Final = ("sqlite", "postgresql")
_WAL_RETRY_DELAYS: Final = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0)
_PG_MIGRATION_LOCK: Final = 0x48574D494752  # "HWMIGR": advisory lock held while migrating


def create_engine(url: str) -> AsyncEngine:
    """An engine for ``url`` (SQLite or PostgreSQL), with the SQLite settings installed.

    Raises:
        StoreError: the URL is not valid, names an unsupported database or a SQLite file in a
            folder that does not exist, or its driver is not installed.
    """
    try:
        backend = make_url(url).get_backend_name()
    except Exception as exc:
        raise StoreError(
            "the store URL is not a valid database URL; expected e.g. "
            "sqlite+aiosqlite:////var/lib/helloword/store.db"
        ) from exc
    if backend not in _SUPPORTED_DIALECTS:
        raise StoreError(
            f"the store does not support {backend!r} databases; use "
            "sqlite+aiosqlite:///... or postgresql+asyncpg://..."
        )
    database = make_url(url).database
    if backend == "sqlite" and database and database != ":memory:":
        folder = Path(database).parent
        if not folder.is_dir():
            raise StoreError(
                f"the folder of the SQLite store, {folder}, does not exist; create it "
                "(hw-server init does) or fix the store URL"
            )
    try:
        engine = create_async_engine(url, hide_parameters=True)
    except ImportError as exc:
        raise StoreError(
            f"the database driver for {safe_url(url)} is not installed "
            f"({exc.name or 'unknown module'}); install it, e.g. pip install asyncpg"
        ) from exc
    if backend == "sqlite":
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
    return engine


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: do not echo it, it may hold a password
        return "<unparsable database URL>"


def _on_sqlite_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # The store emits BEGIN itself (see _on_sqlite_begin); turn off sqlite3's legacy control.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_MS)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        with contextlib.suppress(sqlite3.OperationalError):
            # A file not yet in WAL mode cannot switch while another connection holds a lock
            # (SQLite fails at once, ignoring busy_timeout). WAL is a property of the file, so
            # this is only a first try: Store.open makes sure, waiting without blocking.
            cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def _switch_to_wal(sync_conn: Connection) -> str:
    """Ask for WAL outside any transaction; return the journal mode now in effect."""
    cursor = sync_conn.connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        row = cursor.fetchone()
    finally:
        cursor.close()
    return str(row[0]) if row else ""


async def ensure_sqlite_wal(engine: AsyncEngine) -> None:
    """Put the SQLite file in WAL mode, retrying while another connection holds a lock."""
    for delay in _WAL_RETRY_DELAYS:
        await asyncio.sleep(delay)
        try:
            async with engine.connect() as conn:
                mode = await conn.run_sync(_switch_to_wal)
        except (OperationalError, sqlite3.OperationalError) as exc:
            # Wrapped by SQLAlchemy when raised while connecting, raw from our own cursor.
            orig = exc.orig if isinstance(exc, OperationalError) else exc
            if not isinstance(orig, sqlite3.OperationalError) or "locked" not in str(orig):
                raise
            continue
        if mode in ("wal", "memory"):  # an in-memory database has no WAL, nor needs one
            return
        raise StoreError(f"SQLite refused WAL journal mode (it reports {mode!r})")
    raise StoreError(
        "could not switch the SQLite store to WAL mode: another process keeps the database "
        "locked; stop it or retry"
    )


def _on_sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(BEGIN_OPTION)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def run_migrations(sync_conn: Connection, revision: str = "head") -> None:
    """Upgrade the database on ``sync_conn`` to ``revision`` with alembic."""
    if sync_conn.dialect.name == "postgresql":
        # Nodes starting together must not race on CREATE TABLE; released at commit.
        sync_conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    cfg = Config()
    # ConfigParser interpolation: a literal % in the path must be doubled.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, revision)


async def pg_xact_lock(conn: AsyncConnection, space: int, key: int) -> None:
    """On PostgreSQL, take the advisory lock ``(space, key)`` until the transaction ends."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:space, :key)"),
                           {"space": space, "key": key})


def current_revision(sync_conn: Connection) -> str | None:
    return MigrationContext.configure(sync_conn).get_current_revision()
