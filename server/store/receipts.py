"""Consent receipts agents signed; kept exactly once (``ON CONFLICT DO NOTHING`` on the
receipt id), never changed or deleted: a revocation arrives as a new receipt."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from .base import StoreBase
from .errors import NotFound
from .records import ConsentReceiptRecord
from .rows import receipt_select, to_receipt
from .schema import agents, as_utc, consent_receipts

__all__ = ["ReceiptStore"]


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
    ) -> bool:
        """Keep an agent-signed consent receipt exactly once; ``False`` for a resend.

        ``payload`` is the exact bytes the agent signed and ``signature`` its signature; the
        caller verifies the signature with the agent's key before storing, and the other
        fields are what that payload says. Receipts are never changed: a revocation arrives
        as a new receipt (a new ``receipt_id``) with ``revoked_at`` set.

        A receipt is never replaced: for a ``receipt_id`` already stored this returns
        ``False`` and keeps the first one, even if the resent one differs.

        Raises:
            NotFound: no such agent.
        """
        granted_at = as_utc(granted_at, "granted_at")
        expires_at = as_utc(expires_at, "expires_at")
        revoked_at = None if revoked_at is None else as_utc(revoked_at, "revoked_at")
        now = as_utc(now, "now")
        async with self._tx(write=True) as conn:
            known = (
                await conn.execute(
                    sa.select(agents.c.agent_id).where(agents.c.agent_id == agent_id)
                )
            ).first()
            if known is None:
                raise NotFound(f"agent {agent_id!r} is not enrolled")
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
