"""Tunnel-session recordings (asciicast v2 shells, SFTP operation lists), kept exactly once
and audited when first stored."""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa

from .. import audit as _audit
from .audit import append_entry
from .base import StoreBase
from .errors import NotFound
from .records import RecordingRecord
from .rows import to_recording
from .schema import as_utc, cases, recordings

__all__ = ["RecordingStore"]


class RecordingStore(StoreBase):
    """Session recordings."""

    # ----------------------------------------------------------------- session recordings

    async def store_recording(
        self,
        *,
        recording_id: str,
        agent_id: str,
        case: str,
        tech: str,
        kind: str,
        started_at: datetime,
        ended_at: datetime | None,
        data: bytes,
        now: datetime,
    ) -> bool:
        """Keep an agent's tunnel-session recording exactly once; ``False`` for a resend.

        Raises:
            NotFound: ``case`` does not exist or is not ``agent_id``'s.
        """
        started_at = as_utc(started_at, "started_at")
        ended = None if ended_at is None else as_utc(ended_at, "ended_at")
        now = as_utc(now, "now")
        async with self._tx(write=True) as conn:
            owner = (
                await conn.execute(sa.select(cases.c.agent_id).where(cases.c.number == case))
            ).first()
            if owner is None or owner.agent_id != agent_id:
                raise NotFound(f"case {case!r} is not this agent's; the recording is refused")
            inserted = await conn.execute(
                self._insert(recordings)
                .values(
                    recording_id=recording_id,
                    agent_id=agent_id,
                    case_number=case,
                    tech=tech,
                    kind=kind,
                    started_at=started_at,
                    ended_at=ended,
                    size=len(data),
                    sha256=hashlib.sha256(data).digest(),
                    data=data,
                    received_at=now,
                )
                .on_conflict_do_nothing(index_elements=["recording_id"])
            )
            if inserted.rowcount == 1:
                await append_entry(
                    conn,
                    event="recording.stored",
                    actor=f"agent:{agent_id}",
                    subject=case,
                    now=now,
                    detail_json=_audit.canonical_detail(
                        {"recording": recording_id, "tech": tech, "kind": kind,
                         "size": len(data)}
                    ),
                )
        return bool(inserted.rowcount == 1)

    async def list_recordings(self, case: str) -> list[RecordingRecord]:
        """The recordings of ``case``, newest first, without their data (``data`` is b"")."""
        cols = [c for c in recordings.c if c.name != "data"]
        query = (
            sa.select(*cols)
            .where(recordings.c.case_number == case)
            .order_by(recordings.c.started_at.desc(), recordings.c.recording_id)
        )
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [to_recording(row, b"") for row in rows]

    async def get_recording(self, recording_id: str) -> RecordingRecord | None:
        """One recording with its data, or ``None``."""
        query = sa.select(recordings).where(recordings.c.recording_id == recording_id)
        async with self._tx(write=False) as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else to_recording(row, bytes(row.data))
