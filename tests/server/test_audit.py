"""Tests for the hash-chained audit log: server.audit (encoding) and the Store's audit methods.

Every store test runs on SQLite (a file in tmp_path); set ``HW_TEST_POSTGRES_URL`` to run the
backend-independent ones on PostgreSQL too (see tests/server/test_store.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from server import audit as audit_module
from server.audit import GENESIS, ChainChecker, canonical_detail, entry_hash, rfc3339_utc
from server.cli import main as server_main
from server.store import AuditCheck, AuditEntry, Store, StoreError, schema
from server.store import audit as store_audit

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
PG_URL = os.environ.get("HW_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite", *(["postgresql"] if PG_URL else [])]
TABLES = ("revoked_tech_keys", "consent_receipts", "audit", "results", "case_events", "cases",
          "enroll_tokens", "agents", "customers", "technicians", "alembic_version")


def url_for(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def wipe_postgres(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {', '.join(TABLES)} CASCADE")
    finally:
        await engine.dispose()


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return url_for(tmp_path / "store.db")
    await wipe_postgres(PG_URL)
    return PG_URL


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    s = await Store.open(url)
    try:
        yield s
    finally:
        await s.close()


async def append_n(store: Store, n: int, *, start: int = 0) -> list[AuditEntry]:
    return [
        await store.append_audit(
            event="command",
            actor=f"tech:alice{i}",
            subject=f"HW-20261125-000{i % 3}",
            detail={"action": "diag", "n": i},
            now=T0 + timedelta(minutes=i),
        )
        for i in range(start, start + n)
    ]


async def tamper(store: Store, statement: sa.Executable) -> None:
    """Change the audit table behind the store's back, as someone with database access."""
    async with store._write_engine.begin() as conn:
        result = await conn.execute(statement)
        assert getattr(result, "rowcount", 1) != 0, "the tampering statement changed nothing"


AUDIT = schema.audit


# --------------------------------------------------------------------------- encoding


def test_rfc3339_is_utc_with_microseconds() -> None:
    china = timezone(timedelta(hours=8))
    assert rfc3339_utc(datetime(2026, 11, 25, 10, 0, tzinfo=china)) == (
        "2026-11-25T02:00:00.000000Z"
    )
    assert rfc3339_utc(T0 + timedelta(microseconds=7)) == "2026-11-25T02:00:00.000007Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        rfc3339_utc(datetime(2026, 11, 25, 2, 0))


def test_canonical_detail_sorts_keys_and_refuses_what_json_cannot_hold() -> None:
    assert canonical_detail({"b": 1, "a": [1, "é", None]}) == '{"a":[1,"é",null],"b":1}'
    assert canonical_detail(None) == "{}"
    for bad in ({"x": float("nan")}, {"x": b"raw"}, {"x": {1, 2}}, {1: "int key"}):
        with pytest.raises(ValueError, match="audit detail"):
            canonical_detail(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="larger than"):
        canonical_detail({"x": "y" * audit_module.DETAIL_MAX_BYTES})


def test_entry_hash_is_unambiguous_and_covers_every_field() -> None:
    base: dict[str, Any] = {"prev_hash": GENESIS, "id": 1, "at": T0, "actor": "ab",
                            "event": "c", "subject": "s", "detail_json": "{}"}
    h = entry_hash(**base)
    # Moving a character across a field boundary gives another hash (length prefixes).
    assert entry_hash(**{**base, "actor": "a", "event": "bc"}) != h
    variants = [
        {"prev_hash": b"\1" * 32}, {"id": 2}, {"at": T0 + timedelta(microseconds=1)},
        {"actor": "ab "}, {"event": "d"}, {"subject": ""}, {"detail_json": '{"a":1}'},
    ]
    hashes = {entry_hash(**{**base, **v}) for v in variants}
    assert h not in hashes and len(hashes) == len(variants)


def test_entry_hash_matches_the_documented_format() -> None:
    # docs/operations.md#audit: an outside verifier must be able to recompute this.
    fields = [b"\0" * 32, b"7", b"2026-11-25T02:00:00.000000Z", "tech:李".encode(), b"cmd",
              b"HW-1", b'{"a":1}']
    expected = hashlib.sha256(
        b"helloword-audit-v1" + b"".join(len(f).to_bytes(4, "big") + f for f in fields)
    ).digest()
    assert entry_hash(prev_hash=GENESIS, id=7, at=T0, actor="tech:李", event="cmd",
                      subject="HW-1", detail_json='{"a":1}') == expected


def test_chain_checker_names_the_first_problem_only() -> None:
    checker = ChainChecker()
    assert checker.feed(id=1, prev_hash=GENESIS, hash=b"a" * 32, computed=b"a" * 32)
    assert not checker.feed(id=3, prev_hash=b"x" * 32, hash=b"c" * 32, computed=b"c" * 32)
    assert not checker.feed(id=4, prev_hash=b"c" * 32, hash=b"d" * 32, computed=b"e" * 32)
    assert (checker.ok, checker.entries, checker.first_bad_id) == (False, 3, 3)
    assert checker.reason == "entry 3: does not follow entry 1 (deleted or reordered?)"
    assert checker.head == b"a" * 32


# --------------------------------------------------------------------------- append and list


async def test_append_chains_entries_from_genesis(store: Store) -> None:
    first, second = await append_n(store, 2)
    assert (first.id, second.id) == (1, 2)
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    assert first.detail == {"action": "diag", "n": 0} and first.at == T0
    assert first.hash == entry_hash(prev_hash=GENESIS, id=1, at=T0, actor="tech:alice0",
                                    event="command", subject="HW-20261125-0000",
                                    detail_json='{"action":"diag","n":0}')
    assert await store.list_audit() == [first, second]


async def test_list_audit_limit_and_subject_newest_last(store: Store) -> None:
    entries = await append_n(store, 7)
    assert [e.id for e in await store.list_audit(limit=3)] == [5, 6, 7]
    assert [e.id for e in await store.list_audit(subject="HW-20261125-0001")] == [2, 5]
    assert [e.id for e in await store.list_audit(limit=1, subject="HW-20261125-0000")] == [7]
    assert await store.list_audit(limit=0) == []
    assert (await store.list_audit())[-1] == entries[-1]
    with pytest.raises(StoreError, match="limit"):
        await store.list_audit(limit=-1)


async def test_append_refuses_bad_detail_and_naive_time(store: Store) -> None:
    with pytest.raises(StoreError, match="JSON values"):
        await store.append_audit(event="e", actor="a", detail={"key": b"\0" * 32}, now=T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.append_audit(event="e", actor="a", now=datetime(2026, 11, 25))
    assert await store.list_audit() == []


async def test_times_go_in_with_any_offset_and_hash_as_utc(store: Store) -> None:
    china = timezone(timedelta(hours=8))
    entry = await store.append_audit(event="e", actor="a", now=datetime(2026, 11, 25, 10,
                                                                        tzinfo=china))
    [stored] = await store.list_audit()
    assert stored == entry and stored.at == T0 and stored.at.utcoffset() == timedelta(0)
    assert (await store.verify_audit()).ok


# --------------------------------------------------------------------------- verify


async def test_verify_an_empty_and_an_intact_log(store: Store) -> None:
    assert await store.verify_audit() == AuditCheck(True, 0, None, "", GENESIS)
    entries = await append_n(store, 5)
    assert await store.verify_audit() == AuditCheck(True, 5, None, "", entries[-1].hash)


async def test_verify_reads_in_batches(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_audit, "_AUDIT_VERIFY_BATCH", 2)
    entries = await append_n(store, 5)
    await tamper(store, sa.update(AUDIT).where(AUDIT.c.id == 5).values(actor="x"))
    check = await store.verify_audit()
    assert (check.ok, check.entries, check.first_bad_id) == (False, 5, 5)
    assert check.head == entries[3].hash


@pytest.mark.parametrize(
    "change",
    [
        {"detail": '{"action":"shell","n":2}'},
        {"actor": "tech:mallory"},
        {"event": "nothing"},
        {"subject": "HW-20261125-9999"},
        {"at": T0 + timedelta(minutes=2, microseconds=1)},
    ],
    ids=["detail", "actor", "event", "subject", "at"],
)
async def test_an_edited_entry_is_named(store: Store, change: dict[str, Any]) -> None:
    await append_n(store, 5)
    await tamper(store, sa.update(AUDIT).where(AUDIT.c.id == 3).values(**change))
    check = await store.verify_audit()
    assert (check.ok, check.entries, check.first_bad_id) == (False, 5, 3)
    assert check.reason == "entry 3: its hash does not match its contents (edited?)"


async def test_an_edited_and_rehashed_entry_breaks_the_next_link(store: Store) -> None:
    entries = await append_n(store, 4)
    e = entries[1]
    forged = entry_hash(prev_hash=e.prev_hash, id=e.id, at=e.at, actor=e.actor, event=e.event,
                        subject=e.subject, detail_json='{"action":"nothing"}')
    await tamper(store, sa.update(AUDIT).where(AUDIT.c.id == 2)
                 .values(detail='{"action":"nothing"}', hash=forged))
    check = await store.verify_audit()
    assert (check.ok, check.first_bad_id) == (False, 3)
    assert check.reason == "entry 3: does not follow entry 2 (deleted or reordered?)"


async def test_a_deleted_middle_entry_is_named(store: Store) -> None:
    await append_n(store, 5)
    await tamper(store, sa.delete(AUDIT).where(AUDIT.c.id == 3))
    check = await store.verify_audit()
    assert (check.ok, check.entries, check.first_bad_id) == (False, 4, 4)
    assert check.reason == "entry 4: does not follow entry 2 (deleted or reordered?)"


async def test_deleted_first_entries_are_detected(store: Store) -> None:
    await append_n(store, 3)
    await tamper(store, sa.delete(AUDIT).where(AUDIT.c.id <= 2))
    check = await store.verify_audit()
    assert (check.ok, check.first_bad_id) == (False, 3)
    assert check.reason == "entry 3: does not start the log (earlier entries deleted?)"


async def test_reordered_entries_are_detected(store: Store) -> None:
    entries = await append_n(store, 4)
    a, b = entries[1], entries[2]

    def contents(e: AuditEntry) -> dict[str, Any]:
        return {"at": e.at, "actor": e.actor, "event": e.event, "subject": e.subject,
                "detail": canonical_detail(e.detail), "prev_hash": e.prev_hash, "hash": e.hash}

    # Swap rows 2 and 3 (prev_hash is unique, so park row 2's first).
    await tamper(store, sa.update(AUDIT).where(AUDIT.c.id == 2)
                 .values(prev_hash=b"\xff" * 32))
    await tamper(store, sa.update(AUDIT).where(AUDIT.c.id == 3).values(**contents(a)))
    await tamper(store, sa.update(AUDIT).where(AUDIT.c.id == 2).values(**contents(b)))
    check = await store.verify_audit()
    assert (check.ok, check.first_bad_id) == (False, 2)
    assert "entry 2: its hash does not match" in check.reason


async def test_a_truncated_tail_is_not_detectable_but_changes_the_head(store: Store) -> None:
    # The documented limit of a chain alone, and its mitigation: a head recorded elsewhere.
    await append_n(store, 4)
    recorded = await store.verify_audit()
    await tamper(store, sa.delete(AUDIT).where(AUDIT.c.id == 4))
    after = await store.verify_audit()
    assert after.ok and after.entries == 3
    assert after.head != recorded.head


async def test_concurrent_appends_on_two_stores_keep_one_chain(tmp_path: Path) -> None:
    url = url_for(tmp_path / "store.db")
    stores = [await Store.open(url), await Store.open(url)]
    try:
        appended = await asyncio.gather(
            *(
                stores[i % 2].append_audit(event="command", actor=f"tech:{i}", subject="c",
                                           detail={"i": i}, now=T0)
                for i in range(20)
            )
        )
        check = await stores[0].verify_audit()
        listed = await stores[1].list_audit(limit=100)
    finally:
        for s in stores:
            await s.close()
    assert check == AuditCheck(True, 20, None, "", listed[-1].hash)
    assert sorted(e.id for e in appended) == list(range(1, 21))
    assert sorted(e.detail["i"] for e in listed) == list(range(20))
    assert [e.prev_hash for e in listed[1:]] == [e.hash for e in listed[:-1]]


async def test_concurrent_appends_keep_one_chain(url: str) -> None:
    # The same on any backend (on PostgreSQL: the advisory lock).
    stores = [await Store.open(url), await Store.open(url)]
    try:
        await asyncio.gather(
            *(stores[i % 2].append_audit(event="e", actor="a", detail={"i": i}, now=T0)
              for i in range(20))
        )
        check = await stores[0].verify_audit()
    finally:
        for s in stores:
            await s.close()
    assert (check.ok, check.entries) == (True, 20)


async def test_the_chain_cannot_fork_even_without_the_lock(store: Store) -> None:
    first, _second = await append_n(store, 2)
    # A second successor of entry 1, as an appender that skipped serialisation would write.
    with pytest.raises(sa.exc.IntegrityError):
        await tamper(store, sa.insert(AUDIT).values(
            id=99, at=T0, actor="a", event="e", subject="", detail="{}",
            prev_hash=first.hash, hash=b"\1" * 32))
    await append_n(store, 1, start=2)
    assert await store.verify_audit() == AuditCheck(True, 3, None, "",
                                                    (await store.list_audit())[-1].hash)


# --------------------------------------------------------------------------- hw-server audit


def _init_home(tmp_path: Path) -> Path:
    home = tmp_path / "server"
    assert server_main(["init", "--home", str(home)]) == 0
    return home


def _with_store(home: Path, work: Any) -> Any:
    async def run() -> Any:
        store = await Store.open(url_for(home / "store.db"))
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def test_cli_verify_ok_then_broken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = _init_home(tmp_path)
    capsys.readouterr()
    assert server_main(["audit", "verify", "--home", str(home)]) == 0
    assert capsys.readouterr().out == "audit log OK: 0 entries, head 0000000000000000\n"

    entries = _with_store(home, lambda s: append_n(s, 3))
    assert server_main(["audit", "verify", "--home", str(home)]) == 0
    assert capsys.readouterr().out == (
        f"audit log OK: 3 entries, head {entries[-1].hash.hex()[:16]}\n"
    )

    _with_store(home, lambda s: tamper(s, sa.update(AUDIT).where(AUDIT.c.id == 2)
                                       .values(detail='{"action":"fix"}')))
    assert server_main(["audit", "verify", "--home", str(home)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("hw-server: error: audit log broken at entry 2: its hash does not match "
                   "its contents (edited?)\n")


@pytest.fixture
def in_shanghai(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The operator's machine is in Shanghai (an OS setting: TZ)."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_cli_show_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 in_shanghai: None) -> None:
    home = _init_home(tmp_path)
    entries = _with_store(home, lambda s: append_n(s, 4))
    capsys.readouterr()
    assert server_main(["audit", "show", "--home", str(home), "--limit", "2", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == [
        {"id": e.id, "at": e.at.isoformat(), "actor": e.actor, "event": e.event,
         "subject": e.subject, "detail": e.detail, "hash": e.hash.hex()}
        for e in entries[2:]
    ]

    assert server_main(["audit", "show", "--home", str(home)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "AT", "ACTOR", "EVENT", "SUBJECT", "DETAIL"]
    assert len(lines) == 5
    assert lines[1].split()[:6] == ["1", "2026-11-25", "10:00:00", "+08:00", "tech:alice0",
                                    "command"]  # local time with its offset; JSON keeps UTC
    assert lines[4].endswith('{"action": "diag", "n": 3}')

    assert server_main(["audit", "show", "--home", str(home), "--subject", "nope"]) == 0
    assert capsys.readouterr().out == "no audit entries about nope\n"
