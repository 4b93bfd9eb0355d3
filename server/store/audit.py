"""The hash-chained audit log (``server/audit.py`` has the encoding) and group commit.

:meth:`AuditStore.append_audit` adds hash-chained entries; appends are serialised (``BEGIN
IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on PostgreSQL) so concurrent
writers, even on several nodes, never fork the chain. The store has no method that updates
or deletes audit entries.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import audit as _audit
from .base import StoreBase
from .errors import StoreError
from .records import AuditCheck, AuditEntry
from .rows import audit_computed_hash, audit_raw_select, audit_select, raw_bytes, to_audit_entry
from .schema import as_utc, audit
from .sqlitewriter import SqliteBatch, sqlite_time

__all__ = ["AuditStore", "append_entry"]

_PG_AUDIT_LOCK: Final = 0x4857415544495400  # "HWAUDIT": advisory lock held while appending
_AUDIT_VERIFY_BATCH: Final = 1000


async def append_entry(
    conn: AsyncConnection,
    *,
    event: str,
    actor: str,
    subject: str,
    detail_json: str,
    now: datetime,
) -> AuditEntry:
    """Append within the caller's write transaction (so an action and its audit commit
    together); on SQLite the transaction must have been begun with BEGIN IMMEDIATE."""
    if conn.dialect.name == "postgresql":
        # Released at commit; serialises appenders on every node sharing the database.
        await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_AUDIT_LOCK})")
    last = (
        await conn.execute(
            sa.select(audit.c.id, audit.c.hash).order_by(audit.c.id.desc()).limit(1)
        )
    ).first()
    entry_id = 1 if last is None else int(last.id) + 1
    prev_hash = _audit.GENESIS if last is None else bytes(last.hash)
    digest = _audit.entry_hash(
        prev_hash=prev_hash,
        id=entry_id,
        at=now,
        actor=actor,
        event=event,
        subject=subject,
        detail_json=detail_json,
    )
    await conn.execute(
        sa.insert(audit).values(
            id=entry_id,
            at=now,
            actor=actor,
            event=event,
            subject=subject,
            detail=detail_json,
            prev_hash=prev_hash,
            hash=digest,
        )
    )
    return AuditEntry(
        id=entry_id,
        at=now,
        actor=actor,
        event=event,
        subject=subject,
        detail=json.loads(detail_json),
        prev_hash=prev_hash,
        hash=digest,
    )


_SQLITE_HEAD: Final = "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1"
_SQLITE_APPEND: Final = ("INSERT INTO audit (id, at, actor, event, subject, detail, prev_hash, "
                         "hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def append_entry_sqlite(
    db: sqlite3.Connection,
    *,
    event: str,
    actor: str,
    subject: str,
    detail_json: str,
    now: datetime,
) -> AuditEntry:
    """:func:`append_entry` on the SQLite fast path (:mod:`.sqlitewriter`), within the
    batch's BEGIN IMMEDIATE transaction: the same entry, the same chain."""
    last = db.execute(_SQLITE_HEAD).fetchone()
    entry_id = 1 if last is None else int(last[0]) + 1
    prev_hash = _audit.GENESIS if last is None else bytes(last[1])
    digest = _audit.entry_hash(prev_hash=prev_hash, id=entry_id, at=now, actor=actor,
                               event=event, subject=subject, detail_json=detail_json)
    db.execute(_SQLITE_APPEND, (entry_id, sqlite_time(now), actor, event, subject, detail_json,
                                prev_hash, digest))
    return AuditEntry(id=entry_id, at=now, actor=actor, event=event, subject=subject,
                      detail=json.loads(detail_json), prev_hash=prev_hash, hash=digest)


class AuditStore(StoreBase):
    """The audit log."""

    # ----------------------------------------------------------------- audit

    async def append_audit(
        self,
        *,
        event: str,
        actor: str,
        subject: str = "",
        detail: Mapping[str, Any] | None = None,
        now: datetime,
    ) -> AuditEntry:
        """Append an entry to the hash-chained audit log and return it.

        ``event`` names what happened (``"enroll"``, ``"consent.grant"``, ``"command"``, ...),
        ``actor`` who did it (``"tech:alice"``, ``"agent:<id>"``, ``"operator"``), ``subject``
        what it was done to (a case number, an agent id), for :meth:`list_audit` filtering.

        ``detail`` must never carry secrets: no tokens or token hashes, keys, passwords,
        signatures or payloads; it is shown to operators and kept forever. Record facts
        (a fingerprint, an action name, a verdict) instead. It must be JSON-representable and
        at most :data:`server.audit.DETAIL_MAX_BYTES` once canonicalised.

        The entry's id is the previous entry's plus one and its hash covers the previous
        hash (``server/audit.py``). Appends are serialised across connections, processes and
        PostgreSQL nodes, so concurrent appenders never fork the chain.

        Raises:
            StoreError: ``detail`` is not JSON-representable or too large.
        """
        async with self._tx(write=True) as conn:
            return await self.append_audit_in(conn, event=event, actor=actor, subject=subject,
                                              detail=detail, now=now)

    async def append_audit_in(
        self,
        conn: AsyncConnection | SqliteBatch,
        *,
        event: str,
        actor: str,
        subject: str = "",
        detail: Mapping[str, Any] | None = None,
        now: datetime,
    ) -> AuditEntry:
        """:meth:`append_audit` inside the caller's write transaction (see :meth:`run_batch`);
        a bad ``detail`` raises ``StoreError`` before anything is written."""
        now = as_utc(now, "now")
        try:
            detail_json = _audit.canonical_detail(detail)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        if isinstance(conn, SqliteBatch):
            return append_entry_sqlite(conn.db, event=event, actor=actor, subject=subject,
                                       detail_json=detail_json, now=now)
        return await append_entry(
            conn, event=event, actor=actor, subject=subject, detail_json=detail_json, now=now
        )

    async def run_batch(
        self, jobs: Sequence[Callable[[Any], Awaitable[Any]]]
    ) -> list[Any]:
        """Run write jobs in ONE transaction (group commit) and return each job's value, or
        the ``NotFound``/``StoreError`` it raised (such jobs raise before writing anything,
        so the others still commit). Any other failure rolls the whole batch back and
        propagates: then nothing of it is stored, and the callers retry.

        A job is called with the batch's connection and may only pass it to the store's
        ``*_in`` methods (:meth:`append_audit_in`, :meth:`store_result_in`): on a SQLite
        file it is not an ``AsyncConnection`` but the fast path's :class:`SqliteBatch`, and
        the whole batch runs on plain sqlite3 (:mod:`.sqlitewriter`)."""
        writer = self._sqlite_writer
        if writer is not None and self._write_lock is not None:
            async with self._write_lock:
                return await writer.run(jobs)
        out: list[Any] = []
        async with self._tx(write=True) as conn:
            for job in jobs:
                try:
                    out.append(await job(conn))
                except StoreError as exc:
                    out.append(exc)
        return out

    async def list_audit(self, *, limit: int = 100, subject: str | None = None) -> list[AuditEntry]:
        """The newest ``limit`` audit entries (only those about ``subject``), newest last.

        Raises:
            StoreError: ``limit`` is negative.
        """
        if limit < 0:
            raise StoreError(f"limit must be 0 or more, got {limit}")
        query = audit_select.order_by(audit.c.id.desc()).limit(limit)
        if subject is not None:
            query = query.where(audit.c.subject == subject)
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [to_audit_entry(row) for row in reversed(rows)]

    async def verify_audit(self) -> AuditCheck:
        """Re-hash the whole audit log and check every link; report the first broken one.

        Detects an edited entry (its hash no longer matches), a deleted or reordered entry
        (the next one does not follow its predecessor) and deleted first entries. A chain
        cannot detect a truncated tail (deleting the newest entries leaves a shorter valid
        chain): compare :attr:`AuditCheck.head` with a copy recorded elsewhere for that.
        Reads in batches, so memory does not grow with the log.
        """
        checker = _audit.ChainChecker()
        after = 0
        async with self._tx(write=False) as conn:
            while True:
                rows = (
                    await conn.execute(
                        audit_raw_select.where(audit.c.id > after)
                        .order_by(audit.c.id)
                        .limit(_AUDIT_VERIFY_BATCH)
                    )
                ).all()
                if not rows:
                    break
                for row in rows:
                    checker.feed(
                        id=row.id,
                        prev_hash=raw_bytes(row.prev_hash),
                        hash=raw_bytes(row.hash),
                        computed=audit_computed_hash(row),
                    )
                after = rows[-1].id
        return AuditCheck(
            ok=checker.ok,
            entries=checker.entries,
            first_bad_id=checker.first_bad_id,
            reason=checker.reason,
            head=checker.head,
        )
