"""The requests the relay sent to agents: a result is stored only as the answer to one.

The relay records each :class:`~proto.messages.Request` it sends (its id, the agent, the
case and the action, when) in the same group-committed batch as the ``command`` audit entry
(:meth:`RequestStore.record_request_in`), so recording costs one more INSERT in a
transaction that commits anyway, and the row is durable before the agent can answer.
Storing a result (:meth:`server.store.cases.CaseStore.store_result_in`) checks it against
that row and marks the row answered by it, in one UPDATE by primary key in the result's
transaction (:func:`answer_request_sqlite`, :func:`answer_request`; the reason of a
refusal is read only when it matched no row). The record is in
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

__all__ = ["RequestStore", "answer_request", "answer_request_sqlite", "check_answer"]

_SQLITE_RECORD: Final = ("INSERT INTO requests (request_id, agent_id, case_number, action, "
                         "sent_at) VALUES (?, ?, ?, ?, ?)")
# One statement on the hot path: it both checks and marks (0 rows: refused, see why below).
_SQLITE_ANSWER: Final = (
    "UPDATE requests SET answered_by = ?, answered_at = coalesce(answered_at, ?) "
    "WHERE request_id = ? AND agent_id = ? AND case_number = ? AND action = ? "
    "AND (answered_by IS NULL OR answered_by = ?)")
_SQLITE_FIND: Final = ("SELECT case_number, action, answered_by FROM requests "
                       "WHERE request_id = ? AND agent_id = ?")


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


def answer_request_sqlite(db: sqlite3.Connection, *, request_id: str, agent_id: str,
                          case: str, action: str, msg_id: str, now: datetime) -> None:
    """Mark request ``request_id`` answered by result ``msg_id`` if it was sent to
    ``agent_id`` for ``case`` and ``action`` and no other result answered it, on the SQLite
    fast path (in the batch's BEGIN IMMEDIATE transaction: no other writer runs meanwhile).

    Raises:
        ResultRefused: it answers no such request; nothing was written.
    """
    if db.execute(_SQLITE_ANSWER, (msg_id, sqlite_time(now), request_id, agent_id, case,
                                   action, msg_id)).rowcount != 1:
        found = db.execute(_SQLITE_FIND, (request_id, agent_id)).fetchone()
        check_answer(found, request_id=request_id, case=case, action=action, msg_id=msg_id)
        raise ResultRefused("answered", request_id)  # pragma: no cover - found it above


async def answer_request(conn: AsyncConnection, *, request_id: str, agent_id: str,
                         case: str, action: str, msg_id: str, now: datetime) -> None:
    """:func:`answer_request_sqlite` through SQLAlchemy (PostgreSQL, or SQLite in memory).
    On PostgreSQL the UPDATE locks the row until the transaction ends and re-checks its
    condition after a concurrent one commits, so two results cannot both answer it."""
    marked = await conn.execute(sa.update(requests).where(
        requests.c.request_id == request_id, requests.c.agent_id == agent_id,
        requests.c.case_number == case, requests.c.action == action,
        sa.or_(requests.c.answered_by.is_(None), requests.c.answered_by == msg_id),
    ).values(answered_by=msg_id,
             answered_at=sa.func.coalesce(requests.c.answered_at, now)))
    if marked.rowcount != 1:
        row = (await conn.execute(
            sa.select(requests.c.case_number, requests.c.action, requests.c.answered_by)
            .where(requests.c.request_id == request_id, requests.c.agent_id == agent_id)
        )).one_or_none()
        check_answer(None if row is None else (row.case_number, row.action, row.answered_by),
                     request_id=request_id, case=case, action=action, msg_id=msg_id)
        raise ResultRefused("answered", request_id)  # pragma: no cover - found it above


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
