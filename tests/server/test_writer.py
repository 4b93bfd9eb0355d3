"""Group commit (server/writer.py) on a real store: many writes, few transactions, each
caller gets its own answer, a failed transaction stores nothing; on SQLite the batches take
the fast path (server/store/sqlitewriter.py), whose rows must read back exactly as the
SQLAlchemy path's, on PostgreSQL the SQLAlchemy path."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store import NotFound, Store
from server.writer import Writer
from tests import postgres
from tests.server.test_store import enroll

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    else:
        reason = await postgres.unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        async with postgres.scratch_database() as pg_url:
            s = await Store.open(pg_url)
            try:
                yield s
            finally:
                await s.close()
            return
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    try:
        yield s
    finally:
        await s.close()


def audit_job(store: Store, i: int):  # type: ignore[no-untyped-def]
    async def job(conn: AsyncConnection) -> int:
        entry = await store.append_audit_in(conn, event="e", actor="t", subject=str(i),
                                            now=T0)
        return entry.id
    return job


async def test_concurrent_writes_share_transactions_and_keep_the_chain(store: Store) -> None:
    writer = Writer(store)
    try:
        ids = await asyncio.gather(*(writer.submit(audit_job(store, i)) for i in range(200)))
    finally:
        await writer.close()
    assert sorted(ids) == list(range(1, 201))
    assert writer.jobs == 200 and writer.batches < 200  # group commit happened
    assert (await store.verify_audit()).ok


async def test_a_refused_job_does_not_spoil_its_batch(store: Store) -> None:
    writer = Writer(store)

    async def missing(conn: AsyncConnection) -> bool:
        return await store.store_result_in(conn, msg_id="r1", request_id="q1",
                                           case="HW-20261126-0001", agent_id="nobody",
                                           action="diag", ok=True, payload=b"[]", error="",
                                           now=T0)
    try:
        results = await asyncio.gather(writer.submit(audit_job(store, 1)),
                                       writer.submit(missing),
                                       writer.submit(audit_job(store, 2)),
                                       return_exceptions=True)
    finally:
        await writer.close()
    assert results[0] == 1 and isinstance(results[1], NotFound) and results[2] == 2


async def test_a_failed_transaction_stores_nothing_and_tells_every_caller(store: Store) -> None:
    writer = Writer(store)

    async def broken(conn: AsyncConnection) -> None:
        raise RuntimeError("disk on fire")
    try:
        results = await asyncio.gather(writer.submit(audit_job(store, 1)),
                                       writer.submit(broken), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert await store.list_audit() == []
        assert await writer.submit(audit_job(store, 3)) == 1  # the writer goes on
    finally:
        await writer.close()


def result_job(store: Store, i: int, case: str, agent_id: str, **kw: Any):  # type: ignore[no-untyped-def]
    async def job(conn: AsyncConnection) -> bool:
        return await store.store_result_in(
            conn, msg_id=f"rs-{i}", request_id=f"rq-{i}", case=case, agent_id=agent_id,
            action="diag", ok=i % 2 == 0, payload=b'[{"probe": "noop"}]', error=f"e{i}",
            now=T0 + timedelta(microseconds=i), **kw)
    return job


async def test_batched_results_read_back_as_stored_one_by_one(store: Store) -> None:
    """Results, their audit entries and case moves written in batches (the fast path on
    SQLite) read back exactly like those stored by store_result, and the chain holds."""
    await enroll(store, "ag-1")
    case, _ = await store.open_case(agent_id="ag-1", description="hot", request_id="o1", now=T0)
    # one stored the ordinary way, as a reference
    assert await store.store_result(msg_id="rs-ref", request_id="rq-ref", case=case.number,
                                    agent_id="ag-1", action="diag", ok=True, payload=b"[]",
                                    error="", now=T0, audit_detail={"n": -1})
    writer = Writer(store)
    try:
        stored = await asyncio.gather(*(
            writer.submit(result_job(store, i, case.number, "ag-1", audit_detail={"n": i},
                                     case_state="needs-onsite" if i == 7 else None))
            for i in range(20)))
        again = await writer.submit(result_job(store, 3, case.number, "ag-1",
                                               audit_detail={"n": 3}))
    finally:
        await writer.close()
    assert stored == [True] * 20 and again is False  # exactly once
    results = {r.msg_id: r for r in await store.list_results(case.number)}
    assert len(results) == 21
    r5 = results["rs-5"]
    assert (r5.request_id, r5.case, r5.agent_id, r5.action, r5.ok, r5.payload, r5.error) == (
        "rq-5", case.number, "ag-1", "diag", False, b'[{"probe": "noop"}]', "e5")
    assert r5.received_at == T0 + timedelta(microseconds=5)
    assert r5.received_at.tzinfo is not None and r5.received_at.utcoffset() == timedelta(0)
    assert results["rs-4"].ok is True
    history = await store.case_history(case.number)
    assert [(h.state, h.actor, h.note) for h in history] == [
        ("open", "ag-1", ""), ("needs-onsite", "ag-1", "result rs-7")]
    assert history[1].at == T0 + timedelta(microseconds=7)
    got = await store.get_case(case.number)
    assert got is not None and got.state == "needs-onsite"
    entries = await store.list_audit(subject=case.number)
    assert sorted(e.detail["n"] for e in entries) == list(range(-1, 20))  # no entry for again
    assert all(e.event == "result" and e.actor == "agent:ag-1" for e in entries)
    assert (await store.verify_audit()).ok


async def test_batched_times_in_other_zones_are_stored_in_utc(store: Store) -> None:
    writer = Writer(store)
    shanghai = T0.astimezone(timezone(timedelta(hours=8)))
    try:
        await writer.submit(lambda conn: store.append_audit_in(conn, event="e", actor="t",
                                                               now=shanghai))
    finally:
        await writer.close()
    (entry,) = await store.list_audit()
    assert entry.at == T0 and entry.at.utcoffset() == timedelta(0)
    assert (await store.verify_audit()).ok


async def test_a_batch_waits_for_another_process_lock_without_blocking_the_loop(
        sqlite_store: Store, tmp_path: Path) -> None:
    """While another connection (another process) holds SQLite's write lock, a batch waits
    in the writer's thread on the busy timeout; the event loop keeps running meanwhile."""
    other = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    writer = Writer(sqlite_store)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO audit (id, at, actor, event, subject, detail, prev_hash, "
                      "hash) VALUES (1000, '2026-11-26 02:00:00.000000', 'x', 'x', '', '{}', "
                      "zeroblob(32), zeroblob(32))")
        pending = asyncio.ensure_future(writer.submit(audit_job(sqlite_store, 1)))
        ticks = 0
        for _ in range(20):  # the loop is free while the batch waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not pending.done()
        other.execute("ROLLBACK")  # the other writer gives up: the batch goes ahead
        assert await asyncio.wait_for(pending, 10) == 1
    finally:
        other.close()
        await writer.close()
    assert sqlite_store._sqlite_writer is not None and sqlite_store._sqlite_writer.waited == 1
    assert (await sqlite_store.verify_audit()).ok


async def test_a_job_that_waits_inside_a_sqlite_batch_is_refused_and_stores_nothing(
        sqlite_store: Store) -> None:
    writer = Writer(sqlite_store)

    async def sleepy(conn: AsyncConnection) -> int:
        entry = await sqlite_store.append_audit_in(conn, event="e", actor="t", now=T0)
        await asyncio.sleep(0)
        return entry.id
    try:
        with pytest.raises(RuntimeError, match="only call the store's"):
            await writer.submit(sleepy)
    finally:
        await writer.close()
    assert await sqlite_store.list_audit() == []


async def test_a_case_read_on_the_fast_path_equals_the_sqlalchemy_read(
        sqlite_store: Store) -> None:
    await enroll(sqlite_store, "ag-1")
    shanghai = timezone(timedelta(hours=8))
    case, _ = await sqlite_store.open_case(agent_id="ag-1", description="hot 热",
                                           request_id="o1", now=T0.astimezone(shanghai))
    await sqlite_store.set_case_state(case.number, "waiting", actor="tech:a",
                                      now=T0 + timedelta(seconds=1, microseconds=3))
    assert sqlite_store._sqlite_reader is not None
    fast = await sqlite_store.get_case(case.number)
    missing = await sqlite_store.get_case("HW-20261126-9999")
    reader, sqlite_store._sqlite_reader = sqlite_store._sqlite_reader, None
    try:
        assert await sqlite_store.get_case(case.number) == fast  # the SQLAlchemy path
    finally:
        sqlite_store._sqlite_reader = reader
    assert missing is None and fast is not None
    assert (fast.state, fast.description, fast.agent_id) == ("waiting", "hot 热", "ag-1")
    assert fast.opened_at == T0 and fast.updated_at == T0 + timedelta(seconds=1, microseconds=3)
    assert fast.opened_at.utcoffset() == timedelta(0)
