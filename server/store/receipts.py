"""Consent receipts agents signed; kept exactly once (``ON CONFLICT DO NOTHING`` on the
receipt id), never changed or deleted: a revocation arrives as a new receipt.

An agent is not trusted (``docs/security.md#a-rogue-agent``): a receipt is kept only for
one of that agent's own cases, and new receipts are held to the agent's
``receipts_per_minute`` quota (:mod:`server.quota`), both checked in the transaction that
stores the receipt."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..quota import RECEIPT_RATE_WINDOW, Quotas, check_receipt_rate
from .base import StoreBase
from .errors import NotFound
from .records import ConsentReceiptRecord
from .rows import receipt_select, to_receipt
from .schema import agents, as_utc, cases, consent_receipts
from .sqlitewriter import utc_from_sqlite

__all__ = ["NotOwnCase", "ReceiptStore"]


class NotOwnCase(NotFound):
    """A consent receipt for a case that is not the sending agent's (or no case at all);
    nothing was stored."""

    def __init__(self, case: str) -> None:
        super().__init__(f"consent receipt refused: case {case} is not this computer's (a "
                         "receipt is only kept for a case this computer opened); it was not "
                         "stored")
        self.case = case


class ReceiptStore(StoreBase):
    """Consent receipts."""

    # ----------------------------------------------------------------- consent receipts

    async def store_consent_receipt(
        self,
        *,
        receipt_id: str,
        agent_id: str,
        case: str,
        tech: str,
        scopes: str,
        payload: bytes,
        signature: bytes,
        granted_at: datetime,
        expires_at: datetime,
        revoked_at: datetime | None,
        now: datetime,
        quotas: Quotas | None = None,
    ) -> bool:
        """Keep an agent-signed consent receipt exactly once; ``False`` for a resend.

        ``payload`` is the exact bytes the agent signed and ``signature`` its signature; the
        caller verifies the signature with the agent's key before storing, and the other
        fields are what that payload says. Receipts are never changed: a revocation arrives
        as a new receipt (a new ``receipt_id``) with ``revoked_at`` set.

        A receipt is never replaced: for a ``receipt_id`` already stored this returns
        ``False`` and keeps the first one, even if the resent one differs (a resend is
        neither checked nor counted again).

        A new receipt must be for a case of ``agent_id``, and with ``quotas`` the agent may
        have stored at most ``quotas.receipts_per_minute`` new receipts in the last minute;
        both are read in this write transaction (on PostgreSQL the agent's row is locked,
        so one agent's concurrent receipts are counted one after the other).

        Raises:
            NotOwnCase: ``case`` is not a case of ``agent_id``; nothing stored.
            QuotaExceeded: ``receipts_per_minute``; nothing stored.
            NotFound: no such agent.
        """
        granted_at = as_utc(granted_at, "granted_at")
        expires_at = as_utc(expires_at, "expires_at")
        revoked_at = None if revoked_at is None else as_utc(revoked_at, "revoked_at")
        now = as_utc(now, "now")
        # Resends and refusals are decided in a read transaction (no write lock taken for
        # a flood of them); a case never changes agent, so the check still holds below.
        async with self._tx(write=False) as conn:
            if not await self._new_for_own_case(conn, receipt_id, agent_id, case):
                return False
        async with self._tx(write=True) as conn:
            known = (
                await conn.execute(
                    sa.select(agents.c.agent_id)
                    .where(agents.c.agent_id == agent_id)
                    .with_for_update()
                )
            ).first()
            if known is None:
                raise NotFound(f"agent {agent_id!r} is not enrolled")
            if quotas is not None:
                await self._check_rate(conn, agent_id, quotas, now)
            inserted = await conn.execute(
                self._insert(consent_receipts)
                .values(
                    receipt_id=receipt_id,
                    agent_id=agent_id,
                    case_number=case,
                    tech=tech,
                    scopes=scopes,
                    payload=payload,
                    signature=signature,
                    granted_at=granted_at,
                    expires_at=expires_at,
                    revoked_at=revoked_at,
                    received_at=now,
                )
                .on_conflict_do_nothing(index_elements=["receipt_id"])
            )
        return bool(inserted.rowcount == 1)

    @staticmethod
    async def _new_for_own_case(conn: AsyncConnection, receipt_id: str, agent_id: str,
                                case: str) -> bool:
        """``False``: ``receipt_id`` is stored already. Raises NotFound (no such agent) or
        NotOwnCase."""
        known = (
            await conn.execute(sa.select(agents.c.agent_id).where(agents.c.agent_id == agent_id))
        ).first()
        if known is None:
            raise NotFound(f"agent {agent_id!r} is not enrolled")
        stored = (
            await conn.execute(
                sa.select(consent_receipts.c.receipt_id).where(
                    consent_receipts.c.receipt_id == receipt_id
                )
            )
        ).first()
        if stored is not None:
            return False  # a resend (or an id taken): the first one stays
        own = (
            await conn.execute(
                sa.select(cases.c.id).where(cases.c.number == case, cases.c.agent_id == agent_id)
            )
        ).first()
        if own is None:
            raise NotOwnCase(case)
        return True

    @staticmethod
    async def _check_rate(conn: AsyncConnection, agent_id: str, quotas: Quotas,
                          now: datetime) -> None:
        """Raise QuotaExceeded if ``agent_id`` may not store one more receipt now."""
        since = now - RECEIPT_RATE_WINDOW
        recent, oldest = (
            await conn.execute(
                sa.select(sa.func.count(), sa.func.min(consent_receipts.c.received_at)).where(
                    consent_receipts.c.agent_id == agent_id,
                    consent_receipts.c.received_at > since,
                )
            )
        ).one()
        if isinstance(oldest, str):  # SQLite returns an aggregate's text as it is stored
            oldest = utc_from_sqlite(oldest)
        check_receipt_rate(quotas, recent=int(recent),
                           oldest_recent=None if oldest is None else as_utc(oldest), now=now)

    async def list_consent_receipts(
        self, *, case: str | None = None, agent_id: str | None = None
    ) -> list[ConsentReceiptRecord]:
        """Consent receipts, oldest first, optionally only for ``case`` and/or ``agent_id``."""
        query = receipt_select.order_by(
            consent_receipts.c.received_at, consent_receipts.c.receipt_id
        )
        if case is not None:
            query = query.where(consent_receipts.c.case_number == case)
        if agent_id is not None:
            query = query.where(consent_receipts.c.agent_id == agent_id)
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [to_receipt(row) for row in rows]
