"""Group commit (server/writer.py) on a real SQLite store: many writes, few transactions,
each caller gets its own answer, a failed transaction stores nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store import NotFound, Store
from server.writer import Writer

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
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
