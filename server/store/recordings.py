"""Tunnel-session recordings (asciicast v2 shells, SFTP operation lists), kept exactly once
and audited when first stored; and the tunnels the server brokered, which a recording must
name (:mod:`server.recordings` decides; this module keeps)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from .. import audit as _audit
from .audit import append_entry
from .base import StoreBase
from .errors import NotFound
from .records import RecordingRecord, TunnelRecord
from .rows import to_recording, to_tunnel
from .schema import as_utc, cases, recordings, tunnels

__all__ = ["RecordingStore", "RecordingUsage"]


@dataclass(frozen=True)
class RecordingUsage:
    """What an agent stored lately, for the quotas (:mod:`server.recordings`)."""

    bytes_last_hour: int
    count_last_minute: int


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
        tunnel_id: str | None = None,
        key_fingerprint: str | None = None,
        sealed: bool = False,
        size: int | None = None,
        sha256: bytes | None = None,
    ) -> bool:
        """Keep an agent's tunnel-session recording exactly once; ``False`` for a resend.

        ``sealed``: ``data`` is sealed to the recording key; then ``size`` and ``sha256``
        are of the plaintext (the caller's), else they are computed from ``data``.

        Raises:
            NotFound: ``case`` does not exist or is not ``agent_id``'s.
        """
        if sealed and (size is None or sha256 is None):
            raise ValueError("a sealed recording needs the plaintext's size and sha256")
        size = len(data) if size is None else size
        digest = hashlib.sha256(data).digest() if sha256 is None else sha256
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
                    size=size,
                    sha256=digest,
                    data=data,
                    received_at=now,
                    tunnel_id=tunnel_id,
                    key_fingerprint=key_fingerprint,
                    sealed=sealed,
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
                         "size": size, "tunnel": tunnel_id, "sealed": sealed}
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

    async def recording_exists(self, recording_id: str) -> bool:
        query = sa.select(recordings.c.recording_id).where(
            recordings.c.recording_id == recording_id)
        async with self._tx(write=False) as conn:
            return (await conn.execute(query)).first() is not None

    async def recording_usage(self, agent_id: str, now: datetime) -> RecordingUsage:
        """Bytes ``agent_id``'s recordings stored in the last hour, and how many in the last
        minute (by the server's arrival time)."""
        now = as_utc(now, "now")
        hour = sa.select(sa.func.coalesce(sa.func.sum(recordings.c.size), 0)).where(
            recordings.c.agent_id == agent_id,
            recordings.c.received_at > now - timedelta(hours=1))
        minute = sa.select(sa.func.count()).select_from(recordings).where(
            recordings.c.agent_id == agent_id,
            recordings.c.received_at > now - timedelta(minutes=1))
        async with self._tx(write=False) as conn:
            used = int((await conn.execute(hour)).scalar_one())
            count = int((await conn.execute(minute)).scalar_one())
        return RecordingUsage(bytes_last_hour=used, count_last_minute=count)

    async def count_tunnel_recordings(self, tunnel_id: str) -> int:
        query = sa.select(sa.func.count()).select_from(recordings).where(
            recordings.c.tunnel_id == tunnel_id)
        async with self._tx(write=False) as conn:
            return int((await conn.execute(query)).scalar_one())

    # ----------------------------------------------------------------- brokered tunnels

    async def tunnel_opened(self, *, tunnel_id: str, agent_id: str, case: str, tech: str,
                            key_fingerprint: str, now: datetime) -> None:
        """Record a tunnel the server brokered (when the agent's end arrived)."""
        async with self._tx(write=True) as conn:
            await conn.execute(sa.insert(tunnels).values(
                tunnel_id=tunnel_id, agent_id=agent_id, case_number=case, tech=tech,
                key_fingerprint=key_fingerprint, opened_at=as_utc(now, "now"),
                closed_at=None))

    async def tunnel_closed(self, tunnel_id: str, now: datetime) -> None:
        """Mark a brokered tunnel closed (once; a second call changes nothing)."""
        async with self._tx(write=True) as conn:
            await conn.execute(sa.update(tunnels).where(
                tunnels.c.tunnel_id == tunnel_id, tunnels.c.closed_at.is_(None)
            ).values(closed_at=as_utc(now, "now")))

    async def get_tunnel(self, tunnel_id: str) -> TunnelRecord | None:
        query = sa.select(tunnels).where(tunnels.c.tunnel_id == tunnel_id)
        async with self._tx(write=False) as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else to_tunnel(row)

    async def find_tunnels(self, *, agent_id: str, case: str, tech: str, started: datetime,
                           slack: timedelta) -> list[TunnelRecord]:
        """The tunnels brokered to ``agent_id`` on ``case`` for technician ``tech`` that were
        open at ``started`` (give or take ``slack``, for the agent's clock): how a recording
        from a v2 agent, which does not name its tunnel, is matched."""
        started = as_utc(started, "started")
        query = sa.select(tunnels).where(
            tunnels.c.agent_id == agent_id, tunnels.c.case_number == case,
            tunnels.c.tech == tech, tunnels.c.opened_at <= started + slack,
            sa.or_(tunnels.c.closed_at.is_(None), tunnels.c.closed_at >= started - slack))
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [to_tunnel(r) for r in rows]
