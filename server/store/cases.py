"""Cases (numbers, state and history) and the results agents send for them.

Case numbers are ``HW-YYYYMMDD-NNNN`` with the China (UTC+8) date; the numbers of one day
are allocated under a transaction-scoped advisory lock on PostgreSQL (BEGIN IMMEDIATE on
SQLite), with the unique (day, seq) as the last word. Results are inserted with
``ON CONFLICT DO NOTHING`` on their message id: each is stored exactly once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import audit as _audit
from ..quota import CASE_RATE_WINDOW, Quotas, check_case_open
from .audit import append_entry, append_entry_sqlite
from .base import StoreBase
from .engine import pg_xact_lock
from .errors import Conflict, NotFound, StoreError
from .records import CaseEventRecord, CaseRecord, ResultRecord
from .requests import answer_request, answer_request_sqlite
from .rows import case_select, result_select, to_case, to_result
from .schema import agents, as_utc, case_events, cases, customers, recordings, results
from .sqlitewriter import SqliteBatch, SqliteBusy, sqlite_time, utc_from_sqlite

__all__ = ["CASE_NUMBER_ATTEMPTS", "CASE_PAGE_MAX", "CaseStore", "case_number", "china_day"]

CASE_NUMBER_ATTEMPTS: Final = 20
#: Cases one :meth:`CaseStore.list_cases` call returns at most.
CASE_PAGE_MAX: Final = 10_000
_CHINA: Final = timezone(timedelta(hours=8), "China")  # case numbers use China's date
_PG_CASE_DAY_LOCK: Final = 0x48574344  # "HWCD", key = the day as YYYYMMDD


def case_number(day: str, seq: int) -> str:
    """Format a case number: ``HW-YYYYMMDD-NNNN`` (more digits past 9999)."""
    return f"HW-{day}-{seq:04d}"


def china_day(at: datetime) -> str:
    """The China (UTC+8) calendar date of ``at`` as ``YYYYMMDD``."""
    return as_utc(at).astimezone(_CHINA).strftime("%Y%m%d")


def _not_agents_case(agent_id: str, case: str) -> NotFound:
    return NotFound(f"agent {agent_id!r} has no case {case!r}; an agent can only send "
                    "results for its own cases")


_SQLITE_CASE: Final = "SELECT id, state FROM cases WHERE number = ? AND agent_id = ?"
_SQLITE_RESULT: Final = (
    "INSERT INTO results (msg_id, request_id, case_id, agent_id, action, ok, payload, error, "
    "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (msg_id) DO NOTHING")
_SQLITE_CASE_STATE: Final = "UPDATE cases SET state = ?, updated_at = ? WHERE id = ?"
_SQLITE_GET_CASE: Final = (
    "SELECT cases.number, cases.agent_id, customers.name, cases.description, cases.state, "
    "cases.opened_at, cases.updated_at, cases.owner FROM cases JOIN customers "
    "ON cases.customer_id = customers.id WHERE cases.number = ?")
_SQLITE_CASE_EVENT: Final = ("INSERT INTO case_events (case_id, state, at, actor, note) "
                             "VALUES (?, ?, ?, ?, ?)")


def _store_result_sqlite(
    db: sqlite3.Connection, *, msg_id: str, request_id: str, case: str, agent_id: str,
    action: str, ok: bool, payload: bytes, error: str, now: datetime,
    case_state: str | None, detail_json: str | None, answers_request: bool,
) -> bool:
    """:meth:`CaseStore.store_result_in` on the SQLite fast path (:mod:`.sqlitewriter`):
    the same rows, the same checks, in the batch's transaction."""
    found = db.execute(_SQLITE_CASE, (case, agent_id)).fetchone()
    if found is None:
        raise _not_agents_case(agent_id, case)
    case_id, state = found
    if answers_request:  # raises ResultRefused before anything is written
        answer_request_sqlite(db, request_id=request_id, agent_id=agent_id, case=case,
                              action=action, msg_id=msg_id, now=now)
    at = sqlite_time(now)
    inserted = db.execute(_SQLITE_RESULT, (msg_id, request_id, case_id, agent_id, action,
                                           1 if ok else 0, payload, error, at)).rowcount == 1
    if inserted and detail_json is not None:
        append_entry_sqlite(db, event="result", actor=f"agent:{agent_id}", subject=case,
                            detail_json=detail_json, now=now)
    if inserted and case_state is not None and state != case_state:
        db.execute(_SQLITE_CASE_STATE, (case_state, at, case_id))
        db.execute(_SQLITE_CASE_EVENT, (case_id, case_state, at, agent_id, f"result {msg_id}"))
    return inserted


class CaseStore(StoreBase):
    """Cases and results."""

    # ----------------------------------------------------------------- cases

    async def open_case(
        self, *, agent_id: str, description: str, request_id: str, now: datetime,
        quotas: Quotas | None = None,
    ) -> tuple[CaseRecord, bool]:
        """Open a case for the agent, idempotently per ``(agent_id, request_id)``.

        Returns ``(case, True)`` for a new case (state "open", first history entry by the
        agent) or ``(existing, False)`` when this request already opened one. The number is
        ``HW-YYYYMMDD-NNNN`` with the China (UTC+8) date of ``now`` and a per-day sequence from
        0001; a number taken by a concurrent insert is retried with the next one.

        With ``quotas``, a new case is refused when the agent has too many cases in state
        ``open`` or opened too many in the last minute (:func:`server.quota.check_case_open`);
        the counts are read in the transaction that would insert the case, after the
        day's lock, so concurrent opens of one agent cannot pass a limit together. A retry
        of a request that already opened a case gets that case, whatever the counts.

        Raises:
            NotFound: no such agent.
            QuotaExceeded: a limit of ``quotas``; nothing was written.
            StoreError: no free number after :data:`CASE_NUMBER_ATTEMPTS` attempts.
        """
        now = as_utc(now, "now")
        day = china_day(now)
        for _attempt in range(CASE_NUMBER_ATTEMPTS):
            try:
                async with self._tx(write=True) as conn:
                    existing = await self._case_for_request(conn, agent_id, request_id)
                    if existing is not None:
                        return existing, False
                    customer_id = (
                        await conn.execute(
                            sa.select(agents.c.customer_id).where(agents.c.agent_id == agent_id)
                        )
                    ).scalar_one_or_none()
                    if customer_id is None:
                        raise NotFound(f"agent {agent_id!r} is not enrolled")
                    # Openers of the same day queue here on PostgreSQL (on SQLite BEGIN
                    # IMMEDIATE already did); the unique (day, seq) is the last word.
                    await pg_xact_lock(conn, _PG_CASE_DAY_LOCK, int(day))
                    if quotas is not None:
                        await self._check_quotas(conn, agent_id, quotas, now)
                    seq = await self._next_case_seq(conn, day)
                    number = case_number(day, seq)
                    inserted = await conn.execute(
                        sa.insert(cases).values(
                            number=number,
                            number_day=day,
                            number_seq=seq,
                            agent_id=agent_id,
                            customer_id=customer_id,
                            description=description,
                            state="open",
                            opened_at=now,
                            updated_at=now,
                            open_request_id=request_id,
                        )
                    )
                    (case_id,) = inserted.inserted_primary_key or (None,)
                    await conn.execute(
                        sa.insert(case_events).values(
                            case_id=case_id, state="open", at=now, actor=agent_id, note=""
                        )
                    )
                    row = (await conn.execute(case_select.where(cases.c.id == case_id))).one()
                    return to_case(row), True
            except IntegrityError:
                # Either the same request was opened concurrently (found next time round) or
                # the number was taken concurrently (the next attempt reads a higher one).
                await asyncio.sleep(0)
        raise StoreError(
            f"could not allocate a case number for {day} after {CASE_NUMBER_ATTEMPTS} "
            "attempts; retry"
        )

    @staticmethod
    async def _case_for_request(
        conn: AsyncConnection, agent_id: str, request_id: str
    ) -> CaseRecord | None:
        row = (
            await conn.execute(
                case_select.where(
                    cases.c.agent_id == agent_id, cases.c.open_request_id == request_id
                )
            )
        ).one_or_none()
        return None if row is None else to_case(row)

    @staticmethod
    async def _check_quotas(conn: AsyncConnection, agent_id: str, quotas: Quotas,
                            now: datetime) -> None:
        """Raise QuotaExceeded if ``agent_id`` may not open one more case now."""
        since = now - CASE_RATE_WINDOW
        recent = cases.c.opened_at > since
        waiting, opened, oldest = (await conn.execute(
            sa.select(sa.func.count().filter(cases.c.state == "open"),
                      sa.func.count().filter(recent),
                      sa.func.min(cases.c.opened_at).filter(recent))
            .where(cases.c.agent_id == agent_id))).one()
        if isinstance(oldest, str):  # SQLite returns an aggregate's text as it is stored
            oldest = utc_from_sqlite(oldest)
        check_case_open(quotas, waiting=int(waiting), recent=int(opened),
                        oldest_recent=None if oldest is None else as_utc(oldest), now=now)

    @staticmethod
    async def _next_case_seq(conn: AsyncConnection, day: str) -> int:
        highest = (
            await conn.execute(
                sa.select(sa.func.max(cases.c.number_seq)).where(cases.c.number_day == day)
            )
        ).scalar_one()
        return 1 if highest is None else int(highest) + 1

    async def get_case(self, number: str) -> CaseRecord | None:
        """The case ``number``, or ``None``."""
        if self._sqlite_reader is not None:  # on the command path: the case's agent
            try:
                found = self._sqlite_reader.fetchone(_SQLITE_GET_CASE, (number,))
            except SqliteBusy:
                pass
            else:
                return None if found is None else CaseRecord(
                    number=found[0], agent_id=found[1], customer=found[2],
                    description=found[3], state=found[4],
                    opened_at=utc_from_sqlite(found[5]), updated_at=utc_from_sqlite(found[6]),
                    owner=found[7])
        async with self._tx(write=False) as conn:
            row = (await conn.execute(case_select.where(cases.c.number == number))).one_or_none()
        return None if row is None else to_case(row)

    async def list_cases(
        self, *, state: str | None = None, agent_id: str | None = None,
        customer: str | None = None, offset: int = 0, limit: int = CASE_PAGE_MAX,
        owner: str | None = None, unassigned: bool = False, visible_to: str | None = None,
    ) -> list[CaseRecord]:
        """Cases, newest first (then by number, descending), optionally only those in
        ``state``, of ``agent_id`` and/or of ``customer`` (exact name), owned by ``owner``,
        ``unassigned``, or ``visible_to`` a technician (the cases they own and the unassigned
        queue: what a ``remote`` technician sees); ``offset`` and ``limit`` select a page of
        that order (a case opened meanwhile moves the later pages down by one: listed twice
        across pages, never skipped).

        Raises:
            StoreError: ``offset`` below 0 or ``limit`` not in 1..:data:`CASE_PAGE_MAX`.
        """
        if offset < 0 or not 1 <= limit <= CASE_PAGE_MAX:
            raise StoreError(f"a case page needs offset >= 0 and limit 1..{CASE_PAGE_MAX}, got "
                             f"offset {offset} and limit {limit}")
        query = case_select.order_by(cases.c.opened_at.desc(), cases.c.id.desc())
        if state is not None:
            query = query.where(cases.c.state == state)
        if agent_id is not None:
            query = query.where(cases.c.agent_id == agent_id)
        if customer is not None:
            query = query.where(customers.c.name == customer)
        if owner is not None:
            query = query.where(cases.c.owner == owner)
        if unassigned:
            query = query.where(cases.c.owner.is_(None))
        if visible_to is not None:
            query = query.where(sa.or_(cases.c.owner == visible_to, cases.c.owner.is_(None)))
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query.offset(offset).limit(limit))).all()
        return [to_case(row) for row in rows]

    async def set_case_owner(
        self, number: str, owner: str, *, actor: str, now: datetime,
        expect: str | None = None, any_owner: bool = False,
    ) -> tuple[CaseRecord, str | None]:
        """Make ``owner`` the case's owner and audit it, in one transaction.

        ``expect``: the owner the case must have now (``None``: unassigned), else nothing
        changes; with ``any_owner``, whoever owns it (a supervisor's assignment). The audit event is
        ``case.claimed`` (``actor`` takes an unassigned case for themself),
        ``case.assigned`` (an unassigned case to someone else) or ``case.transferred`` (from
        one owner to another); setting the owner it already has changes and audits nothing.

        Returns:
            The case and its previous owner.

        Raises:
            NotFound: no such case.
            Conflict: the case's owner is not ``expect`` (someone else took it first).
        """
        now = as_utc(now, "now")
        async with self._tx(write=True) as conn:
            found = (await conn.execute(sa.select(cases.c.id, cases.c.owner)
                                        .where(cases.c.number == number))).one_or_none()
            if found is None:
                raise NotFound(f"no case {number}; list cases with `hw-tech cases`")
            before: str | None = found.owner
            if not any_owner and before != expect:
                raise Conflict(
                    f"case {number} is owned by {before or 'nobody'} now, not "
                    f"{expect or 'nobody'}; list it again (`hw-tech case {number}`) and retry")
            if before != owner:
                await conn.execute(sa.update(cases).where(cases.c.id == found.id)
                                   .values(owner=owner))
                event = ("case.transferred" if before is not None else
                         "case.claimed" if actor == f"tech:{owner}" else "case.assigned")
                await append_entry(
                    conn, event=event, actor=actor, subject=number, now=now,
                    detail_json=_audit.canonical_detail({"from": before, "to": owner}))
            row = (await conn.execute(case_select.where(cases.c.id == found.id))).one()
        return to_case(row), before

    async def recording_techs(self, case: str) -> list[tuple[str, str]]:
        """``(recording id, technician)`` of the case's recordings, newest first (the
        technician's access check, without reading any recording's data)."""
        query = (sa.select(recordings.c.recording_id, recordings.c.tech)
                 .where(recordings.c.case_number == case)
                 .order_by(recordings.c.started_at.desc(), recordings.c.recording_id))
        async with self._tx(write=False) as conn:
            return [(str(r.recording_id), str(r.tech)) for r in (await conn.execute(query))]

    async def set_case_state(
        self, number: str, state: str, *, actor: str, now: datetime, note: str = ""
    ) -> CaseRecord:
        """Move the case to ``state`` and append it to the case's history, in one transaction.

        The store does not judge transitions; the case lifecycle does that before calling.

        Raises:
            NotFound: no such case.
        """
        now = as_utc(now, "now")
        async with self._tx(write=True) as conn:
            case_id = (
                await conn.execute(sa.select(cases.c.id).where(cases.c.number == number))
            ).scalar_one_or_none()
            if case_id is None:
                raise NotFound(f"case {number!r} does not exist")
            await conn.execute(
                sa.update(cases).where(cases.c.id == case_id).values(state=state, updated_at=now)
            )
            await conn.execute(
                sa.insert(case_events).values(
                    case_id=case_id, state=state, at=now, actor=actor, note=note
                )
            )
            row = (await conn.execute(case_select.where(cases.c.id == case_id))).one()
        return to_case(row)

    async def case_history(self, number: str) -> list[CaseEventRecord]:
        """The case's state changes, oldest first.

        Raises:
            NotFound: no such case.
        """
        async with self._tx(write=False) as conn:
            case_id = (
                await conn.execute(sa.select(cases.c.id).where(cases.c.number == number))
            ).scalar_one_or_none()
            if case_id is None:
                raise NotFound(f"case {number!r} does not exist")
            rows = (
                await conn.execute(
                    sa.select(
                        case_events.c.state,
                        case_events.c.at,
                        case_events.c.actor,
                        case_events.c.note,
                    )
                    .where(case_events.c.case_id == case_id)
                    .order_by(case_events.c.at, case_events.c.id)
                )
            ).all()
        return [CaseEventRecord(state=r.state, at=r.at, actor=r.actor, note=r.note) for r in rows]

    # ----------------------------------------------------------------- results

    async def store_result(
        self,
        *,
        msg_id: str,
        request_id: str,
        case: str,
        agent_id: str,
        action: str,
        ok: bool,
        payload: bytes,
        error: str,
        now: datetime,
        case_state: str | None = None,
        audit_detail: Mapping[str, Any] | None = None,
        answers_request: bool = False,
    ) -> bool:
        """Store an agent's result exactly once; ``False`` if ``msg_id`` was already stored.

        With ``case_state``, a newly stored result also moves the case to that state (and
        appends it to the history, noting the result) in the same transaction, unless the
        case is in that state already. With ``audit_detail``, a newly stored result is also
        appended to the audit log (event ``result``) in that transaction.

        With ``answers_request`` (the agent gateway always sets it), the result must answer
        a request the relay recorded (:mod:`.requests`) as sent to ``agent_id`` for this
        ``case`` and ``action``, not yet answered by another result; the request is then
        marked answered by ``msg_id`` in the same transaction.

        Raises:
            NotFound: the case does not exist or is not ``agent_id``'s (the same error for
                both, so an agent learns nothing about other agents' cases).
            ResultRefused: ``answers_request`` and the result answers no such request.
        """
        async with self._tx(write=True) as conn:
            return await self.store_result_in(
                conn, msg_id=msg_id, request_id=request_id, case=case, agent_id=agent_id,
                action=action, ok=ok, payload=payload, error=error, now=now,
                case_state=case_state, audit_detail=audit_detail,
                answers_request=answers_request)

    async def store_result_in(
        self,
        conn: AsyncConnection | SqliteBatch,
        *,
        msg_id: str,
        request_id: str,
        case: str,
        agent_id: str,
        action: str,
        ok: bool,
        payload: bytes,
        error: str,
        now: datetime,
        case_state: str | None = None,
        audit_detail: Mapping[str, Any] | None = None,
        answers_request: bool = False,
    ) -> bool:
        """:meth:`store_result` inside the caller's write transaction (see
        :meth:`run_batch`). ``NotFound`` and ``ResultRefused`` are raised before anything
        is written."""
        now = as_utc(now, "now")
        try:
            detail_json = (None if audit_detail is None
                           else _audit.canonical_detail(audit_detail))
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        if isinstance(conn, SqliteBatch):
            return _store_result_sqlite(
                conn.db, msg_id=msg_id, request_id=request_id, case=case, agent_id=agent_id,
                action=action, ok=ok, payload=payload, error=error, now=now,
                case_state=case_state, detail_json=detail_json,
                answers_request=answers_request)
        found = (
            await conn.execute(
                sa.select(cases.c.id, cases.c.state).where(
                    cases.c.number == case, cases.c.agent_id == agent_id
                )
            )
        ).one_or_none()
        if found is None:
            raise _not_agents_case(agent_id, case)
        if answers_request:  # raises ResultRefused before anything is written
            await answer_request(conn, request_id=request_id, agent_id=agent_id, case=case,
                                 action=action, msg_id=msg_id, now=now)
        inserted = await conn.execute(
            self._insert(results)
            .values(
                msg_id=msg_id,
                request_id=request_id,
                case_id=found.id,
                agent_id=agent_id,
                action=action,
                ok=ok,
                payload=payload,
                error=error,
                received_at=now,
            )
            .on_conflict_do_nothing(index_elements=["msg_id"])
        )
        if inserted.rowcount == 1 and detail_json is not None:
            await append_entry(
                conn, event="result", actor=f"agent:{agent_id}", subject=case,
                detail_json=detail_json, now=now)
        if inserted.rowcount == 1 and case_state is not None and found.state != case_state:
            await conn.execute(sa.update(cases).where(cases.c.id == found.id)
                               .values(state=case_state, updated_at=now))
            await conn.execute(sa.insert(case_events).values(
                case_id=found.id, state=case_state, at=now, actor=agent_id,
                note=f"result {msg_id}"))
        return bool(inserted.rowcount == 1)

    async def list_results(self, case: str) -> list[ResultRecord]:
        """The results stored for ``case``, oldest first (``[]`` for an unknown case)."""
        async with self._tx(write=False) as conn:
            rows = (
                await conn.execute(
                    result_select.where(cases.c.number == case).order_by(
                        results.c.received_at, results.c.msg_id
                    )
                )
            ).all()
        return [to_result(row) for row in rows]

    async def get_result(self, msg_id: str) -> ResultRecord | None:
        """The result ``msg_id``, or ``None``."""
        async with self._tx(write=False) as conn:
            row = (
                await conn.execute(result_select.where(results.c.msg_id == msg_id))
            ).one_or_none()
        return None if row is None else to_result(row)
