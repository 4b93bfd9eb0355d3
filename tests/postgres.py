"""A scratch PostgreSQL database per test, or a clear reason to skip.

The tests use the PostgreSQL server named by ``HW_TEST_POSTGRES_URL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``: the server CI starts on this machine,
see ``.ci/run``). That URL names a database the user may connect to and a user allowed to
``CREATE DATABASE``; each test gets a fresh database ``hw_test_<random>`` on that server and
drops it afterwards, so tests never see each other's rows and nothing is left behind.
``HW_TEST_POSTGRES_URL=off`` skips the PostgreSQL tests. Where no server answers (a fresh
user machine), they are skipped with the reason; nothing fails.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import URL, make_url

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
ADMIN_URL = os.environ.get("HW_TEST_POSTGRES_URL", "").strip() or DEFAULT_URL
CONNECT_TIMEOUT_S = 3.0

_unavailable: str | None = None  # cached reason after the first failed attempt
_checked = False


def _safe(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _dsn(url: URL) -> str:
    """The libpq-style DSN asyncpg takes (the SQLAlchemy driver suffix removed)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def unavailable_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here, or ``None`` if they can."""
    global _unavailable, _checked
    if _checked:
        return _unavailable
    _checked = True
    if ADMIN_URL.lower() == "off":
        _unavailable = "PostgreSQL tests switched off (HW_TEST_POSTGRES_URL=off)"
        return _unavailable
    try:
        import asyncpg
    except ImportError:
        _unavailable = "asyncpg is not installed (pip install -e '.[test]')"
        return _unavailable
    url = make_url(ADMIN_URL)
    try:
        conn = await asyncpg.connect(_dsn(url), timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        _unavailable = (f"no PostgreSQL at {_safe(url)} ({type(exc).__name__}); start one (see "
                        ".ci/run) or point HW_TEST_POSTGRES_URL at a server where this user "
                        "may CREATE DATABASE")
        return _unavailable
    await conn.close()
    return None


async def create_database() -> str:
    """Create a fresh empty database; return its ``postgresql+asyncpg://`` URL."""
    import asyncpg

    admin = make_url(ADMIN_URL)
    name = "hw_test_" + secrets.token_hex(6)
    conn = await asyncpg.connect(_dsn(admin), timeout=CONNECT_TIMEOUT_S)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin.set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str) -> None:
    """Drop a database made by :func:`create_database`, even with connections left open."""
    import asyncpg

    conn = await asyncpg.connect(_dsn(make_url(ADMIN_URL)), timeout=CONNECT_TIMEOUT_S)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A fresh database for the block; dropped after it."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


def unavailable_reason_sync() -> str | None:
    """:func:`unavailable_reason` for synchronous tests (runs its own event loop)."""
    return asyncio.run(unavailable_reason())


def create_database_sync() -> str:
    return asyncio.run(create_database())


def drop_database_sync(url: str) -> None:
    asyncio.run(drop_database(url))
