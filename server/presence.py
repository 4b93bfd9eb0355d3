"""Which node holds which agent's ``run`` session, with leases (several nodes only).

A node claims an agent when its run session is authenticated and releases it when the
session ends; it renews the leases of all its agents every ``lease / 3`` seconds. A node that
dies stops renewing: its agents count as offline once their leases run out, and an agent
that reconnects elsewhere is claimed by its new node at once (the newest claim wins). One
node needs none of this: its in-memory links are the truth, and nothing is written.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from .store import METADATA, Store, UTCDateTime

agent_presence = sa.Table(
    "agent_presence",
    METADATA,
    sa.Column("agent_id", sa.String(64), primary_key=True),
    sa.Column("node_id", sa.String(64), nullable=False, index=True),
    sa.Column("lease_until", UTCDateTime, nullable=False),
    sa.Column("connected_at", UTCDateTime, nullable=False),
)


class Presence:
    def __init__(self, store: Store, node_id: str, lease: timedelta) -> None:
        self.store = store
        self.node_id = node_id
        self.lease = lease

    async def claim(self, agent_id: str, now: datetime) -> None:
        stmt = self.store._insert(agent_presence).values(
            agent_id=agent_id, node_id=self.node_id, lease_until=now + self.lease,
            connected_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=[agent_presence.c.agent_id],
            set_={"node_id": self.node_id, "lease_until": now + self.lease,
                  "connected_at": now})
        async with self.store._tx(write=True) as conn:
            await conn.execute(stmt)

    async def release(self, agent_id: str) -> None:
        async with self.store._tx(write=True) as conn:
            await conn.execute(sa.delete(agent_presence).where(
                agent_presence.c.agent_id == agent_id,
                agent_presence.c.node_id == self.node_id))

    async def renew(self, now: datetime) -> None:
        async with self.store._tx(write=True) as conn:
            await conn.execute(sa.update(agent_presence).where(
                agent_presence.c.node_id == self.node_id).values(lease_until=now + self.lease))

    async def forget_mine(self) -> None:
        """On start: whatever this node held before a crash is gone."""
        async with self.store._tx(write=True) as conn:
            await conn.execute(sa.delete(agent_presence).where(
                agent_presence.c.node_id == self.node_id))

    async def node_of(self, agent_id: str, now: datetime) -> str | None:
        async with self.store._tx(write=False) as conn:
            node = (await conn.execute(sa.select(agent_presence.c.node_id).where(
                agent_presence.c.agent_id == agent_id,
                agent_presence.c.lease_until > now))).scalar_one_or_none()
        return None if node is None else str(node)

    async def online(self, now: datetime) -> set[str]:
        async with self.store._tx(write=False) as conn:
            rows = (await conn.execute(sa.select(agent_presence.c.agent_id).where(
                agent_presence.c.lease_until > now))).scalars()
            return {str(r) for r in rows}

    async def nodes(self, now: datetime) -> set[str]:
        """Nodes holding at least one agent with a live lease (this one included)."""
        async with self.store._tx(write=False) as conn:
            rows = (await conn.execute(sa.select(agent_presence.c.node_id).distinct().where(
                agent_presence.c.lease_until > now))).scalars()
            return {str(r) for r in rows}

    async def agents_on(self, node: str, now: datetime) -> set[str]:
        """Agents whose live lease is held by ``node``."""
        async with self.store._tx(write=False) as conn:
            rows = (await conn.execute(sa.select(agent_presence.c.agent_id).where(
                agent_presence.c.node_id == node,
                agent_presence.c.lease_until > now))).scalars()
            return {str(r) for r in rows}
