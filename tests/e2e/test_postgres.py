"""A whole case on a real hw-server process whose store is PostgreSQL.

Uses a fresh database on the server of ``HW_TEST_POSTGRES_URL`` (see ``tests/postgres.py``);
skipped with the reason where no PostgreSQL answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from tests import postgres
from tests.harness import Harness, wait_until

pytestmark = pytest.mark.e2e

PASSWORD = "hunter2-not-needed-by-trust-auth"


@pytest.fixture
def pg_url() -> Iterator[str]:
    reason = postgres.unavailable_reason_sync()
    if reason is not None:
        pytest.skip(reason)
    url = postgres.create_database_sync()
    try:
        # A password in the URL (trust auth ignores it) must never reach a log or an error.
        yield make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)
    finally:
        postgres.drop_database_sync(url)


def count(url: str, sql: str) -> int:
    import asyncpg

    async def query() -> int:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()

    return asyncio.run(query())


def test_a_whole_case_on_postgresql(harness: Harness, pg_url: str) -> None:
    h = harness
    init = h.run("hw-server", "init", "--home", str(h.server_home),
                 "--listen", f"127.0.0.1:{h.port}", "--db", pg_url)
    assert PASSWORD not in init.stdout + init.stderr
    assert "postgresql+asyncpg://postgres:***@127.0.0.1" in init.stdout
    assert not (h.server_home / "store.db").exists(), "the SQLite store must not be used"
    server = h.start_server()
    home = h.enroll("A")
    h.start_agent(home)
    case = h.help(home).splitlines()[0]
    tech = h.add_tech("alice")
    h.grant(home, case, "alice")
    out = h.tech_json(tech, "diag", case)
    assert out["case"] == case and out["result"]["ok"] is True
    detail = h.tech_json(tech, "case", case)
    assert [e["state"] for e in detail["history"]] == ["open", "diagnosed"]

    # Everything is in PostgreSQL, once; a restarted server serves the same case.
    assert count(pg_url, "SELECT count(*) FROM results") == 1
    assert count(pg_url, "SELECT count(*) FROM cases") == 1
    server.stop()
    h.start_server()
    wait_until(lambda: h.tech_json(tech, "agents")[0]["online"], what="agent back online")
    out = h.tech_json(tech, "diag", case, "--probes", "system")
    assert out["result"]["ok"] is True
    assert count(pg_url, "SELECT count(*) FROM results") == 2
    verify = h.run("hw-server", "audit", "verify", "--home", str(h.server_home))
    assert verify.stdout.startswith("audit log OK")
    logs = "".join(p.text() for p in h.procs)
    assert "store postgresql+asyncpg://postgres:***@" in logs
    assert PASSWORD not in logs


def test_an_unreachable_database_is_a_clear_error_without_the_password(
        harness: Harness) -> None:
    h = harness
    url = f"postgresql+asyncpg://hw:{PASSWORD}@127.0.0.1:9/helloword"
    p = h.run("hw-server", "init", "--home", str(h.server_home), "--listen",
              f"127.0.0.1:{h.port}", "--db", url, check=False)
    assert p.returncode == 1
    assert "could not open or migrate the store at postgresql+asyncpg://hw:***@127.0.0.1:9" \
        in p.stderr
    assert PASSWORD not in p.stdout + p.stderr
    assert not (h.server_home / "config.toml").exists(), "nothing written on failure"
    p = h.run("hw-server", "init", "--home", str(h.server_home), "--listen",
              f"127.0.0.1:{h.port}", "--db", "mysql://u@h/db", check=False)
    assert p.returncode == 2 and "the store supports" in p.stderr  # a usage error
