"""Tests for server.store: migrations, enrollment tokens, agents, technicians, cases, results.

Every backend-independent test runs on SQLite (a file in tmp_path) and on PostgreSQL (a fresh
database per test on the server of ``HW_TEST_POSTGRES_URL``, default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``, dropped afterwards; see
``tests/postgres.py``). Without a reachable PostgreSQL the PostgreSQL variants are skipped
with the reason.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from server import presence as _presence  # noqa: F401  (its table joins METADATA)
from server.onsite import tables as _onsite_tables  # noqa: F401  (its tables join METADATA)
from server.quota import QuotaExceeded, Quotas
from server.store import (
    MIGRATIONS_DIR,
    AgentRecord,
    Conflict,
    NotFound,
    Store,
    StoreError,
    TokenRefused,
    schema,
)
from server.store import engine as engine_module
from server.store.receipts import NotOwnCase
from tests import postgres

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 10:00 on 2026-11-25 in China
LATER = T0 + timedelta(days=7)
CHINA = timezone(timedelta(hours=8))
STORE_TABLES = {
    "customers",
    "enroll_tokens",
    "agents",
    "technicians",
    "cases",
    "case_events",
    "results",
    "audit",
    "consent_receipts",
    "revoked_tech_keys",
    "contracts",
    "recordings",
    "field_techs",
    "tickets",
    "ticket_events",
    "tech_hours",
    "tech_day_visits",
    "contract_visits",
    "agent_presence",
    "tunnels",
    "requests",
}
HEAD = "0009"

BACKENDS = ["sqlite", "postgresql"]


def url_for(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def fetch(store: Store, sql: str) -> list[tuple[Any, ...]]:
    """Read the database behind the API's back (on the store's own engine)."""
    async with store._engine.connect() as conn:
        return [tuple(row) for row in (await conn.exec_driver_sql(sql)).all()]


async def table_names(store: Store) -> set[str]:
    def names(sync_conn: Connection) -> set[str]:
        return set(sa.inspect(sync_conn).get_table_names())

    async with store._engine.connect() as conn:
        return await conn.run_sync(names)


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield url_for(tmp_path / "store.db")
        return
    reason = await postgres.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with postgres.scratch_database() as pg_url:
        yield pg_url


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    s = await Store.open(url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(url_for(tmp_path / "store.db"))
    try:
        yield s
    finally:
        await s.close()


async def new_token(
    store: Store,
    secret: bytes = b"secret-1",
    *,
    customer: str = "Li Wei",
    kind: str = "individual",
    city: str = "Chengdu",
    expires_at: datetime = LATER,
) -> bytes:
    """Add a token whose secret hash is ``secret`` padded to 32 bytes; return that hash."""
    secret_hash = secret.ljust(32, b"\0")
    await store.add_enroll_token(
        secret_hash=secret_hash,
        customer=customer,
        kind=kind,
        city=city,
        expires_at=expires_at,
        now=T0,
    )
    return secret_hash


async def enroll(
    store: Store, agent_id: str, *, key: bytes | None = None, secret: bytes | None = None
) -> AgentRecord:
    secret_hash = await new_token(store, secret or agent_id.encode())
    return await store.redeem_enroll_token(
        secret_hash=secret_hash,
        now=T0,
        agent_id=agent_id,
        public_key=key or agent_id.encode().ljust(32, b"k"),
        hostname=f"{agent_id}-pc",
        os="Windows 11",
        software="hw-agent 0.1.0",
    )


# --------------------------------------------------------------------------- migrations


async def test_open_migrates_to_head_and_records_revision(store: Store) -> None:
    assert head_revision() == HEAD
    assert await store.schema_revision() == HEAD
    assert await fetch(store, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert await table_names(store) == STORE_TABLES | {"alembic_version"}


async def test_reopening_is_a_noop_and_keeps_data(url: str) -> None:
    first = await Store.open(url)
    await enroll(first, "agent-a")
    await first.close()

    second = await Store.open(url)
    try:
        assert await second.schema_revision() == HEAD
        assert await fetch(second, "SELECT version_num FROM alembic_version") == [(HEAD,)]
        assert [a.agent_id for a in await second.list_agents()] == ["agent-a"]
    finally:
        await second.close()


async def test_reopening_runs_no_ddl(url: str) -> None:
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    def ddl() -> list[str]:
        return [s for s in statements if s.lstrip().upper().startswith(("CREATE", "ALTER"))]

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        await (await Store.open(url)).close()
        created = ddl()
        statements.clear()
        await (await Store.open(url)).close()
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    assert created, "the first open should have created the schema"
    assert statements, "the second open should have checked the revision"
    assert ddl() == []


async def test_concurrent_first_open_migrates_once(url: str) -> None:
    opened = await asyncio.gather(*(Store.open(url) for _ in range(3)), return_exceptions=True)
    stores = [s for s in opened if isinstance(s, Store)]
    try:
        assert len(stores) == 3, opened
        assert [await s.schema_revision() for s in stores] == [HEAD] * 3
    finally:
        for s in stores:
            await s.close()


async def test_migrations_match_the_store_tables(store: Store) -> None:
    def diff(sync_conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(sync_conn), schema.METADATA))

    async with store._engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_downgrade_to_base_removes_every_table(store: Store) -> None:
    def downgrade(sync_conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.downgrade(cfg, "base")

    async with store._write_engine.begin() as conn:
        await conn.run_sync(downgrade)
    assert await store.schema_revision() is None
    assert await table_names(store) == {"alembic_version"}


def test_migrations_render_for_postgresql() -> None:
    cfg = alembic_config()
    cfg.set_main_option("sqlalchemy.url", "postgresql://")
    out = io.StringIO()
    cfg.output_buffer = out
    command.upgrade(cfg, "head", sql=True)
    sql = out.getvalue()
    assert "CREATE TABLE results" in sql
    assert "TIMESTAMP WITH TIME ZONE" in sql
    assert "BYTEA" in sql
    assert "CONSTRAINT uq_cases_agent_id_open_request_id UNIQUE" in sql
    assert "CREATE TABLE audit" in sql and "CONSTRAINT uq_audit_prev_hash UNIQUE" in sql
    assert "CREATE TABLE consent_receipts" in sql and "CREATE TABLE revoked_tech_keys" in sql


async def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(
    sqlite_store: Store,
) -> None:
    async with sqlite_store._engine.connect() as conn:
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
    assert (mode, fks) == ("wal", 1)
    assert isinstance(timeout, int) and timeout >= 1000


async def test_open_waits_for_a_lock_that_blocks_switching_to_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh file cannot switch to WAL while another connection holds a lock, and SQLite
    # says so at once instead of waiting: Store.open must retry, not fail or skip WAL.
    db = tmp_path / "store.db"
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("CREATE TABLE blocker (x INTEGER)")
    blocker.execute("BEGIN IMMEDIATE")
    blocker.execute("INSERT INTO blocker VALUES (1)")
    real_switch = engine_module._switch_to_wal
    attempts: list[str] = []

    def switch_then_unblock(sync_conn: Connection) -> str:
        try:
            return real_switch(sync_conn)
        except Exception as exc:
            attempts.append(str(exc))
            raise
        finally:
            if blocker.in_transaction:
                blocker.execute("ROLLBACK")

    monkeypatch.setattr(engine_module, "_switch_to_wal", switch_then_unblock)
    try:
        s = await Store.open(url_for(db))
    finally:
        blocker.close()
    try:
        assert len(attempts) == 1 and "locked" in attempts[0]
        async with s._engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        await s.close()


async def test_open_refuses_unsupported_database() -> None:
    with pytest.raises(StoreError, match="does not support 'mysql'"):
        await Store.open("mysql+aiomysql://user:hunter2@localhost/db")


async def test_open_refuses_a_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(StoreError, match="does not exist") as info:
        await Store.open(url_for(missing / "store.db"))
    assert str(missing) in str(info.value)


async def test_open_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    garbage = tmp_path / "store.db"
    garbage.write_bytes(b"this is not an SQLite database, just some bytes " * 100)
    with pytest.raises(StoreError, match="could not open or migrate the store") as info:
        await Store.open(url_for(garbage))
    assert str(garbage) in str(info.value)


async def test_open_failure_message_hides_the_password() -> None:
    # Port 9 (discard) on loopback: refused, or asyncpg is not installed; either way no secret.
    url = "postgresql+asyncpg://hw:hunter2@127.0.0.1:9/hw"
    with pytest.raises(StoreError) as info:
        await Store.open(url)
    assert "hunter2" not in str(info.value)
    assert "127.0.0.1:9" in str(info.value)


# --------------------------------------------------------------------------- enrollment


async def test_redeem_enrolls_agent_and_uses_up_token(store: Store) -> None:
    secret_hash = await new_token(store, customer="ACME Ltd", kind="enterprise", city="Beijing")
    key = bytes(range(32))
    agent = await store.redeem_enroll_token(
        secret_hash=secret_hash,
        now=T0 + timedelta(hours=1),
        agent_id="agent-1",
        public_key=key,
        hostname="acme-pc",
        os="Ubuntu 24.04",
        software="hw-agent 0.1.0",
    )
    assert agent == AgentRecord(
        agent_id="agent-1",
        customer="ACME Ltd",
        kind="enterprise",
        city="Beijing",
        public_key=key,
        hostname="acme-pc",
        os="Ubuntu 24.04",
        software="hw-agent 0.1.0",
        enrolled_at=T0 + timedelta(hours=1),
        last_seen=None,
        revoked_at=None,
    )
    assert await store.get_agent("agent-1") == agent
    assert await store.get_agent("agent-2") is None
    [(used_at, agent_id)] = await fetch(store, "SELECT used_at, agent_id FROM enroll_tokens")
    assert used_at is not None and agent_id == "agent-1"


async def test_redeeming_a_used_token_is_refused(store: Store) -> None:
    secret_hash = await new_token(store)
    await store.redeem_enroll_token(
        secret_hash=secret_hash,
        now=T0,
        agent_id="first",
        public_key=b"1" * 32,
        hostname="h",
        os="o",
        software="s",
    )
    with pytest.raises(TokenRefused) as info:
        await store.redeem_enroll_token(
            secret_hash=secret_hash,
            now=T0,
            agent_id="second",
            public_key=b"2" * 32,
            hostname="h",
            os="o",
            software="s",
        )
    assert info.value.reason == "used"
    assert "already used" in str(info.value) and "HelloWord support" in str(info.value)
    assert secret_hash.hex() not in str(info.value) and repr(secret_hash) not in str(info.value)
    assert await store.get_agent("second") is None


@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=1), timedelta(days=30)])
async def test_redeeming_an_expired_token_is_refused(store: Store, late: timedelta) -> None:
    secret_hash = await new_token(store, expires_at=LATER)
    with pytest.raises(TokenRefused) as info:
        await store.redeem_enroll_token(
            secret_hash=secret_hash,
            now=LATER + late,
            agent_id="late",
            public_key=b"l" * 32,
            hostname="h",
            os="o",
            software="s",
        )
    assert info.value.reason == "expired"
    assert "expired" in str(info.value)
    assert await store.get_agent("late") is None


async def test_token_is_valid_until_just_before_expiry(store: Store) -> None:
    secret_hash = await new_token(store, expires_at=LATER)
    agent = await store.redeem_enroll_token(
        secret_hash=secret_hash,
        now=LATER - timedelta(microseconds=1),
        agent_id="just-in-time",
        public_key=b"j" * 32,
        hostname="h",
        os="o",
        software="s",
    )
    assert agent.agent_id == "just-in-time"


async def test_redeeming_an_unknown_token_is_refused(store: Store) -> None:
    await new_token(store, b"real")
    with pytest.raises(TokenRefused) as info:
        await store.redeem_enroll_token(
            secret_hash=b"forged".ljust(32, b"\0"),
            now=T0,
            agent_id="x",
            public_key=b"x" * 32,
            hostname="h",
            os="o",
            software="s",
        )
    assert info.value.reason == "unknown"


async def test_failed_enrollment_leaves_token_unused(store: Store) -> None:
    await enroll(store, "taken", key=b"t" * 32)
    secret_hash = await new_token(store, b"fresh")
    with pytest.raises(Conflict, match="already enrolled"):
        await store.redeem_enroll_token(
            secret_hash=secret_hash,
            now=T0,
            agent_id="taken",
            public_key=b"n" * 32,
            hostname="h",
            os="o",
            software="s",
        )
    with pytest.raises(Conflict, match="public key is already enrolled"):
        await store.redeem_enroll_token(
            secret_hash=secret_hash,
            now=T0,
            agent_id="other",
            public_key=b"t" * 32,
            hostname="h",
            os="o",
            software="s",
        )
    agent = await store.redeem_enroll_token(
        secret_hash=secret_hash,
        now=T0,
        agent_id="other",
        public_key=b"n" * 32,
        hostname="h",
        os="o",
        software="s",
    )
    assert agent.agent_id == "other"


async def test_public_key_must_be_32_bytes(store: Store) -> None:
    secret_hash = await new_token(store)
    with pytest.raises(StoreError, match="32 bytes"):
        await store.redeem_enroll_token(
            secret_hash=secret_hash,
            now=T0,
            agent_id="a",
            public_key=b"short",
            hostname="h",
            os="o",
            software="s",
        )


async def test_concurrent_redeems_of_one_token_exactly_one_wins(url: str) -> None:
    stores = [await Store.open(url) for _ in range(2)]
    try:
        for round_ in range(5):
            secret_hash = await new_token(stores[0], f"race-{round_}".encode())
            outcomes = await asyncio.gather(
                *(
                    s.redeem_enroll_token(
                        secret_hash=secret_hash,
                        now=T0,
                        agent_id=f"racer-{round_}-{i}",
                        public_key=f"key-{round_}-{i}".encode().ljust(32, b"\0"),
                        hostname="h",
                        os="o",
                        software="s",
                    )
                    for i, s in enumerate(stores)
                ),
                return_exceptions=True,
            )
            winners = [o for o in outcomes if isinstance(o, AgentRecord)]
            losers = [o for o in outcomes if isinstance(o, TokenRefused)]
            assert len(winners) == 1 and len(losers) == 1, outcomes
            assert losers[0].reason == "used"
        assert len(await stores[1].list_agents()) == 5
    finally:
        for s in stores:
            await s.close()


async def test_tokens_for_the_same_customer_share_the_customer_row(store: Store) -> None:
    await new_token(store, b"a", customer="Li Wei", kind="individual", city="Chengdu")
    await new_token(store, b"b", customer="Li Wei", kind="individual", city="Chengdu")
    await new_token(store, b"c", customer="Li Wei", kind="individual", city="Xi'an")
    assert await fetch(store, "SELECT count(*) FROM customers") == [(2,)]
    assert await fetch(store, "SELECT count(DISTINCT customer_id) FROM enroll_tokens") == [(2,)]


async def test_add_enroll_token_checks_kind_and_duplicate_secret(store: Store) -> None:
    with pytest.raises(StoreError, match="is not one of individual, small-business, enterprise"):
        await new_token(store, kind="government")
    await new_token(store, b"dup")
    with pytest.raises(Conflict, match="already exists"):
        await new_token(store, b"dup")


# --------------------------------------------------------------------------- agents


async def test_touch_and_revoke_agent(store: Store) -> None:
    await enroll(store, "a")
    await store.touch_agent("a", now=T0 + timedelta(minutes=5))
    await store.revoke_agent("a", now=T0 + timedelta(hours=1))
    await store.revoke_agent("a", now=T0 + timedelta(hours=2))
    agent = await store.get_agent("a")
    assert agent is not None
    assert agent.last_seen == T0 + timedelta(minutes=5)
    assert agent.revoked_at == T0 + timedelta(hours=1)
    with pytest.raises(NotFound):
        await store.touch_agent("ghost", now=T0)
    with pytest.raises(NotFound):
        await store.revoke_agent("ghost", now=T0)


# --------------------------------------------------------------------------- technicians


async def test_technician_add_conflict_revoke_replace(store: Store) -> None:
    added = await store.add_technician(
        name="zhang", key_fingerprint="SHA256:aaa", valid_before=LATER, now=T0
    )
    assert added.revoked_at is None and added.added_at == T0
    assert await store.get_technician("zhang") == added
    assert await store.get_technician("nobody") is None
    with pytest.raises(Conflict):
        await store.add_technician(
            name="zhang", key_fingerprint="SHA256:bbb", valid_before=LATER, now=T0
        )

    await store.revoke_technician("zhang", now=T0 + timedelta(hours=1))
    revoked = await store.get_technician("zhang")
    assert revoked is not None and revoked.revoked_at == T0 + timedelta(hours=1)
    with pytest.raises(Conflict):
        await store.add_technician(
            name="zhang", key_fingerprint="SHA256:bbb", valid_before=LATER, now=T0
        )

    replaced = await store.add_technician(
        name="zhang",
        key_fingerprint="SHA256:bbb",
        valid_before=LATER,
        now=T0 + timedelta(hours=2),
        replace=True,
    )
    assert replaced.key_fingerprint == "SHA256:bbb"
    assert replaced.revoked_at is None and replaced.added_at == T0 + timedelta(hours=2)
    with pytest.raises(NotFound):
        await store.revoke_technician("nobody", now=T0)


# --------------------------------------------------------------------------- cases


async def test_case_numbers_count_per_china_day(store: Store) -> None:
    await enroll(store, "a")
    first, _ = await store.open_case(agent_id="a", description="x", request_id="r1", now=T0)
    second, _ = await store.open_case(
        agent_id="a", description="x", request_id="r2", now=T0 + timedelta(hours=1)
    )
    # 17:00 UTC on the 25th is 01:00 on the 26th in China: a new day, the count restarts.
    next_day, _ = await store.open_case(
        agent_id="a",
        description="x",
        request_id="r3",
        now=datetime(2026, 11, 25, 17, 0, tzinfo=UTC),
    )
    # 15:59 UTC is still the 25th in China.
    same_day, _ = await store.open_case(
        agent_id="a",
        description="x",
        request_id="r4",
        now=datetime(2026, 11, 25, 15, 59, tzinfo=UTC),
    )
    assert [first.number, second.number, next_day.number, same_day.number] == [
        "HW-20261125-0001",
        "HW-20261125-0002",
        "HW-20261126-0001",
        "HW-20261125-0003",
    ]


async def test_case_numbers_grow_past_four_digits(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await enroll(store, "a")
    real = Store._next_case_seq

    async def start_at_9999(conn: object, day: str) -> int:
        return 9999

    monkeypatch.setattr(Store, "_next_case_seq", staticmethod(start_at_9999))
    c9999, _ = await store.open_case(agent_id="a", description="x", request_id="r1", now=T0)
    monkeypatch.setattr(Store, "_next_case_seq", staticmethod(real))
    c10000, _ = await store.open_case(agent_id="a", description="x", request_id="r2", now=T0)
    c10001, _ = await store.open_case(agent_id="a", description="x", request_id="r3", now=T0)
    assert [c9999.number, c10000.number, c10001.number] == [
        "HW-20261125-9999",
        "HW-20261125-10000",
        "HW-20261125-10001",
    ]


async def test_a_taken_case_number_is_retried_with_the_next(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await enroll(store, "a")
    await store.open_case(agent_id="a", description="x", request_id="r1", now=T0)
    real = Store._next_case_seq
    calls: list[int] = []

    async def stale_once(conn: object, day: str) -> int:
        # First call: what a concurrent opener would have read before our insert.
        calls.append(1)
        return 1 if len(calls) == 1 else await real(conn, day)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "_next_case_seq", staticmethod(stale_once))
    case, created = await store.open_case(agent_id="a", description="y", request_id="r2", now=T0)
    assert created and case.number == "HW-20261125-0002"
    assert len(calls) == 2


async def test_case_number_retries_are_bounded(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await enroll(store, "a")
    await store.open_case(agent_id="a", description="x", request_id="r1", now=T0)

    async def always_taken(conn: object, day: str) -> int:
        return 1

    monkeypatch.setattr(Store, "_next_case_seq", staticmethod(always_taken))
    with pytest.raises(StoreError, match="could not allocate a case number"):
        await store.open_case(agent_id="a", description="y", request_id="r2", now=T0)


async def test_concurrent_case_opening_gets_distinct_numbers(url: str) -> None:
    stores = [await Store.open(url) for _ in range(2)]
    try:
        await enroll(stores[0], "a")
        opened = await asyncio.gather(
            *(
                stores[i % 2].open_case(agent_id="a", description="x", request_id=f"r{i}", now=T0)
                for i in range(10)
            )
        )
    finally:
        for s in stores:
            await s.close()
    numbers = sorted(case.number for case, _ in opened)
    assert numbers == [f"HW-20261125-{n:04d}" for n in range(1, 11)]


async def test_two_nodes_writing_at_once_never_duplicate(url: str) -> None:
    """Two stores on one database, as two hw-server nodes: case numbers, the same request
    opened on both, one result sent to both, contracts, audit appends, all at once."""
    from datetime import date

    nodes = [await Store.open(url) for _ in range(2)]
    try:
        for i in range(4):
            await enroll(nodes[0], f"ag-{i}")
        opened = await asyncio.gather(*(
            nodes[k % 2].open_case(agent_id=f"ag-{k % 4}", description="x",
                                   request_id=f"r{k}", now=T0)
            for k in range(40)))
        assert sorted(c.number for c, new in opened if new) == [
            f"HW-20261125-{n:04d}" for n in range(1, 41)]
        twice = await asyncio.gather(*(
            n.open_case(agent_id="ag-0", description="y", request_id="same", now=T0)
            for n in nodes for _ in range(3)))
        assert len({c.number for c, _ in twice}) == 1
        assert sorted(new for _, new in twice) == [False] * 5 + [True]
        case = twice[0][0]
        stored = await asyncio.gather(*(
            nodes[k % 2].store_result(
                msg_id="m-1", request_id="q", case=case.number, agent_id="ag-0",
                action="diag", ok=True, payload=b"[]", error="", now=T0,
                case_state="diagnosed", audit_detail={"result": "m-1"})
            for k in range(8)))
        assert sorted(stored) == [False] * 7 + [True]
        contracts = await asyncio.gather(*(
            nodes[k % 2].add_contract(customer=f"C{k}", free_visits=1,
                                      valid_from=date(2026, 1, 1), valid_to=date(2026, 12, 31),
                                      rate=None, now=T0)
            for k in range(6)))
        assert sorted(c.contract_id for c in contracts) == [f"CT-{n:04d}" for n in range(1, 7)]
        await asyncio.gather(*(nodes[k % 2].append_audit(event="e", actor="t", now=T0)
                               for k in range(10)))
        assert await fetch(nodes[1], "SELECT count(*) FROM results") == [(1,)]
        assert [e.state for e in await nodes[1].case_history(case.number)] == [
            "open", "diagnosed"]
        assert [e.event for e in await nodes[0].list_audit()].count("result") == 1
        check = await nodes[1].verify_audit()
        assert check.ok and check.entries == 11, check
    finally:
        for s in nodes:
            await s.close()


async def test_open_case_is_idempotent_per_agent_and_request(store: Store) -> None:
    await enroll(store, "a")
    await enroll(store, "b")
    case, created = await store.open_case(
        agent_id="a", description="printer offline", request_id="req-1", now=T0
    )
    again, created_again = await store.open_case(
        agent_id="a", description="printer offline", request_id="req-1", now=T0 + timedelta(days=1)
    )
    assert created and not created_again
    assert again == case
    assert len(await store.case_history(case.number)) == 1
    other, other_created = await store.open_case(
        agent_id="b", description="same request id, other agent", request_id="req-1", now=T0
    )
    assert other_created and other.number != case.number


async def test_new_case_is_open_with_a_first_event(store: Store) -> None:
    await enroll(store, "a", secret=b"tok")
    case, _ = await store.open_case(agent_id="a", description="no sound", request_id="r", now=T0)
    assert (case.state, case.agent_id, case.customer, case.description) == (
        "open",
        "a",
        "Li Wei",
        "no sound",
    )
    assert case.opened_at == case.updated_at == T0
    assert await store.get_case(case.number) == case
    assert await store.get_case("HW-19700101-0001") is None
    [event] = await store.case_history(case.number)
    assert (event.state, event.at, event.actor, event.note) == ("open", T0, "a", "")


async def test_open_case_for_unknown_agent_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="not enrolled"):
        await store.open_case(agent_id="ghost", description="x", request_id="r", now=T0)


async def test_state_history_is_kept_in_order(store: Store) -> None:
    await enroll(store, "a")
    case, _ = await store.open_case(agent_id="a", description="x", request_id="r", now=T0)
    steps = [
        ("diagnosing", "tech:zhang", "running probes"),
        ("fixing", "tech:zhang", "driver reinstall"),
        ("resolved", "tech:zhang", ""),
    ]
    for i, (state, actor, note) in enumerate(steps, start=1):
        updated = await store.set_case_state(
            case.number, state, actor=actor, now=T0 + timedelta(minutes=i), note=note
        )
        assert updated.state == state and updated.updated_at == T0 + timedelta(minutes=i)
    history = await store.case_history(case.number)
    assert [(e.state, e.actor, e.note) for e in history] == [("open", "a", ""), *steps]
    assert [e.at for e in history] == [T0 + timedelta(minutes=i) for i in range(4)]
    final = await store.get_case(case.number)
    assert final is not None and final.state == "resolved" and final.opened_at == T0
    with pytest.raises(NotFound):
        await store.set_case_state("HW-19700101-0001", "resolved", actor="x", now=T0)
    with pytest.raises(NotFound):
        await store.case_history("HW-19700101-0001")


async def test_list_cases_newest_first_with_filters(store: Store) -> None:
    await enroll(store, "a")
    await enroll(store, "b")
    c1, _ = await store.open_case(agent_id="a", description="1", request_id="1", now=T0)
    c2, _ = await store.open_case(
        agent_id="b", description="2", request_id="2", now=T0 + timedelta(minutes=1)
    )
    c3, _ = await store.open_case(
        agent_id="a", description="3", request_id="3", now=T0 + timedelta(minutes=2)
    )
    await store.set_case_state(c3.number, "resolved", actor="t", now=T0 + timedelta(minutes=3))
    assert [c.number for c in await store.list_cases()] == [c3.number, c2.number, c1.number]
    assert [c.number for c in await store.list_cases(agent_id="a")] == [c3.number, c1.number]
    assert [c.number for c in await store.list_cases(state="open")] == [c2.number, c1.number]
    assert [c.number for c in await store.list_cases(state="open", agent_id="a")] == [c1.number]


# --------------------------------------------------------------------------- results


async def test_store_result_exactly_once(store: Store) -> None:
    await enroll(store, "a")
    case, _ = await store.open_case(agent_id="a", description="x", request_id="r", now=T0)

    async def send(payload: bytes, now: datetime) -> bool:
        return await store.store_result(
            msg_id="m-1",
            request_id="q-1",
            case=case.number,
            agent_id="a",
            action="diag",
            ok=True,
            payload=payload,
            error="",
            now=now,
        )

    assert await send(b'{"disk": "ok"}', T0) is True
    assert await send(b'{"disk": "dup"}', T0 + timedelta(days=1)) is False
    assert await fetch(store, "SELECT count(*) FROM results") == [(1,)]
    [stored] = await store.list_results(case.number)
    assert stored.payload == b'{"disk": "ok"}' and stored.received_at == T0
    assert stored.case == case.number and stored.ok is True
    assert await store.get_result("m-1") == stored
    assert await store.get_result("m-2") is None


async def test_store_result_moves_the_case_state_once(store: Store) -> None:
    await enroll(store, "a")
    case, _ = await store.open_case(agent_id="a", description="x", request_id="r", now=T0)

    async def send(msg_id: str, minutes: int) -> bool:
        return await store.store_result(
            msg_id=msg_id, request_id="q", case=case.number, agent_id="a", action="diag",
            ok=True, payload=b"[]", error="", now=T0 + timedelta(minutes=minutes),
            case_state="diagnosed")

    assert await send("m-1", 1) is True
    assert await send("m-1", 2) is False  # a resend changes nothing
    assert await send("m-2", 3) is True  # already diagnosed: no new history entry
    history = await store.case_history(case.number)
    assert [(e.state, e.actor, e.note, e.at) for e in history] == [
        ("open", "a", "", T0), ("diagnosed", "a", "result m-1", T0 + timedelta(minutes=1))]
    current = await store.get_case(case.number)
    assert current is not None and current.state == "diagnosed"


async def test_store_result_audits_in_the_same_transaction_once(store: Store) -> None:
    await enroll(store, "a")
    case, _ = await store.open_case(agent_id="a", description="x", request_id="r", now=T0)
    for _ in range(2):  # the resend is not audited again
        await store.store_result(
            msg_id="m-1", request_id="q", case=case.number, agent_id="a", action="diag",
            ok=True, payload=b"[]", error="", now=T0, audit_detail={"result": "m-1"})
    entries = [e for e in await store.list_audit() if e.event == "result"]
    assert [(e.actor, e.subject, e.detail) for e in entries] == [
        ("agent:a", case.number, {"result": "m-1"})]
    assert (await store.verify_audit()).ok


async def test_results_are_listed_oldest_first(store: Store) -> None:
    await enroll(store, "a")
    case, _ = await store.open_case(agent_id="a", description="x", request_id="r", now=T0)
    for i, msg_id in enumerate(["m-c", "m-a", "m-b"]):
        await store.store_result(
            msg_id=msg_id,
            request_id=f"q-{i}",
            case=case.number,
            agent_id="a",
            action="fix",
            ok=i != 1,
            payload=b"{}",
            error="" if i != 1 else "access denied",
            now=T0 + timedelta(seconds=i),
        )
    listed = await store.list_results(case.number)
    assert [r.msg_id for r in listed] == ["m-c", "m-a", "m-b"]
    assert [(r.ok, r.error) for r in listed] == [(True, ""), (False, "access denied"), (True, "")]
    assert await store.list_results("HW-19700101-0001") == []


async def test_an_agent_cannot_write_results_into_another_agents_case(store: Store) -> None:
    await enroll(store, "victim")
    await enroll(store, "intruder")
    case, _ = await store.open_case(agent_id="victim", description="x", request_id="r", now=T0)
    for number in (case.number, "HW-19700101-0001"):
        with pytest.raises(NotFound, match="only send results for its own cases"):
            await store.store_result(
                msg_id=f"evil-{number}",
                request_id="q",
                case=number,
                agent_id="intruder",
                action="diag",
                ok=True,
                payload=b"{}",
                error="",
                now=T0,
            )
    assert await fetch(store, "SELECT count(*) FROM results") == [(0,)]


# --------------------------------------------------------------------------- time


async def test_timestamps_are_utc_aware_whatever_offset_goes_in(store: Store) -> None:
    in_china = datetime(2026, 11, 26, 1, 0, tzinfo=CHINA)  # == 2026-11-25T17:00Z
    await enroll(store, "a")
    await store.touch_agent("a", now=in_china)
    case, _ = await store.open_case(agent_id="a", description="x", request_id="r", now=in_china)
    agent = await store.get_agent("a")
    assert agent is not None and agent.last_seen is not None
    for value in (agent.enrolled_at, agent.last_seen, case.opened_at, case.updated_at):
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
    assert agent.last_seen == in_china
    assert agent.last_seen.hour == 17  # stored as UTC, not as China wall-clock time
    assert case.number == "HW-20261126-0001"
    [event] = await store.case_history(case.number)
    assert event.at.tzinfo is not None and event.at == in_china


async def test_naive_datetimes_are_refused(store: Store) -> None:
    await enroll(store, "a")
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.touch_agent("a", now=datetime(2026, 11, 25, 12, 0))


# --------------------------------------------------------------------------- migration 0002


async def test_migration_0002_round_trip_keeps_older_data(store: Store) -> None:
    await enroll(store, "a")
    await store.append_audit(event="e", actor="a", now=T0)

    def migrate(sync_conn: Connection, down: bool) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        (command.downgrade if down else command.upgrade)(cfg, "0001" if down else "head")

    async with store._write_engine.begin() as conn:
        await conn.run_sync(migrate, True)
    assert await store.schema_revision() == "0001"
    assert await table_names(store) == STORE_TABLES - {
        "audit", "consent_receipts", "revoked_tech_keys", "contracts", "recordings",
        "field_techs", "tickets", "ticket_events", "tech_hours", "tech_day_visits",
        "contract_visits", "agent_presence", "tunnels", "requests"} | {"alembic_version"}
    async with store._write_engine.begin() as conn:
        await conn.run_sync(migrate, False)
    assert await store.schema_revision() == HEAD
    assert await table_names(store) == STORE_TABLES | {"alembic_version"}
    assert [a.agent_id for a in await store.list_agents()] == ["a"]
    assert await store.list_audit() == []  # the audit table was dropped and recreated empty
    assert (await store.verify_audit()).ok


async def test_migration_0002_carries_over_revoked_technicians(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(engine_module.run_migrations, "0001")
            for name, fp, revoked in (("old", "SHA256:old", T0), ("ok", "SHA256:ok", None)):
                await conn.execute(
                    sa.insert(schema.technicians).values(
                        name=name, key_fingerprint=fp, valid_before=LATER, added_at=T0,
                        revoked_at=revoked))
    finally:
        await engine.dispose()
    s = await Store.open(url)
    try:
        assert await s.schema_revision() == HEAD
        assert await s.revoked_technician_fingerprints() == ["SHA256:old"]
    finally:
        await s.close()


# --------------------------------------------------------------------------- revocations


async def test_revoked_fingerprints_are_listed_for_good(store: Store) -> None:
    for name in ("zhang", "li"):
        await store.add_technician(
            name=name, key_fingerprint=f"SHA256:{name}-1", valid_before=LATER, now=T0)
    assert await store.revoked_technician_fingerprints() == []
    await store.revoke_technician("zhang", now=T0)
    await store.revoke_technician("zhang", now=T0 + timedelta(hours=1))  # idempotent
    assert await store.revoked_technician_fingerprints() == ["SHA256:zhang-1"]

    # Re-issuing zhang a key keeps the stolen one revoked; replacing li's key revokes the old.
    await store.add_technician(name="zhang", key_fingerprint="SHA256:zhang-2",
                               valid_before=LATER, now=T0, replace=True)
    await store.add_technician(name="li", key_fingerprint="SHA256:li-2",
                               valid_before=LATER, now=T0, replace=True)
    assert await store.revoked_technician_fingerprints() == ["SHA256:li-1", "SHA256:zhang-1"]
    current = await store.get_technician("zhang")
    assert current is not None and current.revoked_at is None

    # Replacing with the same key revokes nothing; a revoked key cannot come back.
    await store.add_technician(name="li", key_fingerprint="SHA256:li-2",
                               valid_before=LATER, now=T0, replace=True)
    with pytest.raises(Conflict, match="was revoked"):
        await store.add_technician(name="zhang", key_fingerprint="SHA256:zhang-1",
                                   valid_before=LATER, now=T0, replace=True)
    with pytest.raises(Conflict, match="was revoked"):
        await store.add_technician(name="wang", key_fingerprint="SHA256:li-1",
                                   valid_before=LATER, now=T0)
    assert await store.revoked_technician_fingerprints() == ["SHA256:li-1", "SHA256:zhang-1"]
    current = await store.get_technician("zhang")
    assert current is not None and current.key_fingerprint == "SHA256:zhang-2"


# --------------------------------------------------------------------------- consent receipts


async def send_receipt(
    store: Store,
    receipt_id: str,
    *,
    agent_id: str = "a",
    case: str = "HW-20261125-0001",
    payload: bytes = b"signed-bytes",
    revoked_at: datetime | None = None,
    now: datetime = T0,
) -> bool:
    return await store.store_consent_receipt(
        receipt_id=receipt_id, agent_id=agent_id, case=case, tech="alice",
        scopes="diagnostics,fix", payload=payload, signature=b"s" * 64, granted_at=T0,
        expires_at=T0 + timedelta(minutes=30), revoked_at=revoked_at, now=now)


async def test_consent_receipts_are_stored_exactly_once(store: Store) -> None:
    await enroll(store, "a")
    await store.open_case(agent_id="a", description="x", request_id="r1", now=T0)
    assert await send_receipt(store, "rc-1") is True
    assert await send_receipt(store, "rc-1", now=T0 + timedelta(minutes=1)) is False
    assert await send_receipt(store, "rc-1", payload=b"other-bytes") is False  # first kept
    [receipt] = await store.list_consent_receipts()
    assert (receipt.receipt_id, receipt.agent_id, receipt.case, receipt.tech) == (
        "rc-1", "a", "HW-20261125-0001", "alice")
    assert (receipt.scopes, receipt.payload, receipt.signature) == (
        "diagnostics,fix", b"signed-bytes", b"s" * 64)
    assert (receipt.granted_at, receipt.expires_at, receipt.revoked_at, receipt.received_at) == (
        T0, T0 + timedelta(minutes=30), None, T0)
    assert await fetch(store, "SELECT count(*) FROM consent_receipts") == [(1,)]


async def test_a_revocation_is_a_new_receipt_and_listing_filters(store: Store) -> None:
    await enroll(store, "a")
    await enroll(store, "b")
    await store.open_case(agent_id="a", description="x", request_id="r1", now=T0)
    await store.open_case(agent_id="b", description="x", request_id="r1", now=T0)
    assert await send_receipt(store, "rc-1")
    assert await send_receipt(store, "rc-2", revoked_at=T0 + timedelta(minutes=5),
                              now=T0 + timedelta(minutes=5))
    assert await send_receipt(store, "rc-3", agent_id="b", case="HW-20261125-0002",
                              now=T0 + timedelta(minutes=1))
    listed = await store.list_consent_receipts()
    assert [r.receipt_id for r in listed] == ["rc-1", "rc-3", "rc-2"]
    assert [r.revoked_at for r in listed] == [None, None, T0 + timedelta(minutes=5)]
    assert [r.receipt_id for r in await store.list_consent_receipts(agent_id="a")] == [
        "rc-1", "rc-2"]
    assert [r.receipt_id for r in await store.list_consent_receipts(
        case="HW-20261125-0002")] == ["rc-3"]
    assert await store.list_consent_receipts(case="HW-20261125-0002", agent_id="a") == []


async def test_a_receipt_for_a_case_not_the_agents_is_refused(store: Store) -> None:
    await enroll(store, "a")
    await enroll(store, "b")
    await store.open_case(agent_id="b", description="x", request_id="r1", now=T0)
    for case in ("HW-20261125-0001", "HW-20261125-0099"):  # b's case, no case
        with pytest.raises(NotOwnCase, match=f"case {case} is not this computer's"):
            await send_receipt(store, "rc-1", case=case)
    assert await store.list_consent_receipts() == []


async def test_new_receipts_per_minute_are_capped_and_resends_pass(store: Store) -> None:
    await enroll(store, "a")
    await store.open_case(agent_id="a", description="x", request_id="r1", now=T0)
    quotas = Quotas(receipts_per_minute=2)

    async def send(receipt_id: str, now: datetime) -> bool:
        return await store.store_consent_receipt(
            receipt_id=receipt_id, agent_id="a", case="HW-20261125-0001", tech="alice",
            scopes="diagnostics", payload=b"p", signature=b"s" * 64, granted_at=T0,
            expires_at=T0 + timedelta(minutes=30), revoked_at=None, now=now, quotas=quotas)

    assert await send("rc-1", T0)
    assert await send("rc-2", T0 + timedelta(seconds=20))
    with pytest.raises(QuotaExceeded, match=r"the limit is 2 per minute\); it was not "
                                            r"stored; retry in 40 s") as info:
        await send("rc-3", T0 + timedelta(seconds=20))
    assert info.value.limit == "receipts_per_minute"
    assert await send("rc-1", T0 + timedelta(seconds=30)) is False  # a resend: not counted
    assert await send("rc-3", T0 + timedelta(seconds=61))  # rc-1 left the window
    assert [r.receipt_id for r in await store.list_consent_receipts()] == [
        "rc-1", "rc-2", "rc-3"]


async def test_a_receipt_from_an_unknown_agent_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="not enrolled"):
        await send_receipt(store, "rc-1", agent_id="ghost")
    assert await store.list_consent_receipts() == []


# --------------------------------------------------------------------------- contracts


async def test_contracts_are_numbered_and_validated(store: Store) -> None:
    from datetime import date

    a = await store.add_contract(customer="Acme Ltd", free_visits=4, valid_from=date(2026, 1, 1),
                                 valid_to=date(2026, 12, 31), rate=500, now=T0)
    b = await store.add_contract(customer="Beta Co", free_visits=0, valid_from=date(2026, 1, 1),
                                 valid_to=date(2026, 6, 30), rate=None, now=T0)
    assert (a.contract_id, b.contract_id) == ("CT-0001", "CT-0002")
    assert await store.get_contract("CT-0001") == a and a.remaining == 4
    assert [c.contract_id for c in await store.list_contracts(customer="Beta Co")] == ["CT-0002"]
    assert await store.get_contract("CT-0404") is None
    with pytest.raises(StoreError, match="before it starts"):
        await store.add_contract(customer="X", free_visits=1, valid_from=date(2026, 2, 1),
                                 valid_to=date(2026, 1, 1), rate=None, now=T0)
    with pytest.raises(StoreError, match="negative"):
        await store.add_contract(customer="X", free_visits=-1, valid_from=date(2026, 1, 1),
                                 valid_to=date(2026, 2, 1), rate=None, now=T0)


async def test_touch_agents_records_many_in_one_call_and_skips_unknown(store: Store) -> None:
    await enroll(store, "a")
    await enroll(store, "b")
    await store.touch_agents({"a": T0 + timedelta(minutes=1), "b": T0 + timedelta(minutes=2),
                              "gone": T0})
    seen = {a.agent_id: a.last_seen for a in await store.list_agents()}
    assert seen == {"a": T0 + timedelta(minutes=1), "b": T0 + timedelta(minutes=2)}
    await store.touch_agents({})  # nothing to write is fine
