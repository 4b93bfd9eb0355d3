"""The requests the relay sent to agents: a result is stored only as the answer to one.

The relay records each :class:`~proto.messages.Request` it sends (its id, the agent, the
case and the action, when) in the same group-committed batch as the ``command`` audit entry
(:meth:`RequestStore.record_request_in`), so recording costs one more INSERT in a
transaction that commits anyway, and the row is durable before the agent can answer.
Storing a result (:meth:`server.store.cases.CaseStore.store_result_in`) first checks it
against that row (:func:`answered_request_sqlite`, :func:`answered_request`) and, once the
result is inserted, marks the row answered by it in the same transaction. The record is in
the store, not in a node's memory, so a result still counts after a restart of the server,
a reconnect of the agent (its durable outbox resends it) or on another node.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .base import StoreBase
from .errors import ResultRefused
from .schema import as_utc, requests
from .sqlitewriter import SqliteBatch, sqlite_time

__all__ = ["RequestStore", "answered_request", "answered_request_sqlite", "check_answer",
           "mark_answered", "mark_answered_sqlite"]

_SQLITE_RECORD: Final = ("INSERT INTO requests (request_id, agent_id, case_number, action, "
                         "sent_at) VALUES (?, ?, ?, ?, ?)")
_SQLITE_FIND: Final = ("SELECT case_number, action, answered_by FROM requests "
                       "WHERE request_id = ? AND agent_id = ?")
_SQLITE_ANSWERED: Final = ("UPDATE requests SET answered_by = ?, answered_at = ? "
                           "WHERE request_id = ? AND answered_by IS NULL")


def check_answer(found: tuple[str, str, str | None] | None, *, request_id: str, case: str,
                 action: str, msg_id: str) -> None:
    """Whether result ``msg_id`` may answer request ``request_id`` as found in the store
    (``(case, action, answered_by)`` of that request to this agent, or ``None``).

    A resend of the result that answered it already passes (it is then stored as a
    duplicate: nothing changes).

    Raises:
        ResultRefused: no such request to this agent, another case or action, or another
            result answered it.
    """
    if found is None:
        raise ResultRefused("unrequested", request_id)
    sent_case, sent_action, answered_by = found
    if sent_case != case:
        raise ResultRefused("wrong_case", request_id)
    if sent_action != action:
        raise ResultRefused("wrong_action", request_id)
    if answered_by is not None and answered_by != msg_id:
        raise ResultRefused("answered", request_id)


def answered_request_sqlite(db: sqlite3.Connection, *, request_id: str, agent_id: str,
                            case: str, action: str, msg_id: str) -> None:
    """Check result ``msg_id`` against its request on the SQLite fast path (in the batch's
    BEGIN IMMEDIATE transaction, so no other writer runs meanwhile); raises
    :class:`ResultRefused`. Mark it answered with :func:`mark_answered_sqlite` once the
    result is inserted."""
    found = db.execute(_SQLITE_FIND, (request_id, agent_id)).fetchone()
    check_answer(found, request_id=request_id, case=case, action=action, msg_id=msg_id)


def mark_answered_sqlite(db: sqlite3.Connection, *, request_id: str, msg_id: str,
                         now: datetime) -> None:
    db.execute(_SQLITE_ANSWERED, (msg_id, sqlite_time(now), request_id))


async def answered_request(conn: AsyncConnection, *, request_id: str, agent_id: str,
                           case: str, action: str, msg_id: str) -> None:
    """:func:`answered_request_sqlite` through SQLAlchemy (PostgreSQL, or SQLite in
    memory). The row is locked (``FOR UPDATE``) until the transaction ends, so two results
    cannot both answer it."""
    row = (await conn.execute(
        sa.select(requests.c.case_number, requests.c.action, requests.c.answered_by)
        .where(requests.c.request_id == request_id, requests.c.agent_id == agent_id)
        .with_for_update())).one_or_none()
    check_answer(None if row is None else (row.case_number, row.action, row.answered_by),
                 request_id=request_id, case=case, action=action, msg_id=msg_id)


async def mark_answered(conn: AsyncConnection, *, request_id: str, msg_id: str,
                        now: datetime) -> None:
    await conn.execute(sa.update(requests).where(
        requests.c.request_id == request_id, requests.c.answered_by.is_(None))
        .values(answered_by=msg_id, answered_at=now))


class RequestStore(StoreBase):
    """Requests sent to agents."""

    async def record_request_in(
        self, conn: AsyncConnection | SqliteBatch, *, request_id: str, agent_id: str,
        case: str, action: str, now: datetime,
    ) -> None:
        """Record that request ``request_id`` for ``action`` on ``case`` is being sent to
        ``agent_id``, inside the caller's write transaction (see :meth:`run_batch`)."""
        now = as_utc(now, "now")
        if isinstance(conn, SqliteBatch):
            conn.db.execute(_SQLITE_RECORD, (request_id, agent_id, case, action,
                                             sqlite_time(now)))
            return
        await conn.execute(sa.insert(requests).values(
            request_id=request_id, agent_id=agent_id, case_number=case, action=action,
            sent_at=now))

    async def record_request(self, *, request_id: str, agent_id: str, case: str, action: str,
                             now: datetime) -> None:
        """:meth:`record_request_in` in a transaction of its own."""
        async with self._tx(write=True) as conn:
            await self.record_request_in(conn, request_id=request_id, agent_id=agent_id,
                                         case=case, action=action, now=now)
