"""Enrollment: customers, enrollment tokens, agents and technicians (with their revoked keys).

PostgreSQL: customers are inserted with ``ON CONFLICT DO NOTHING`` on their unique key and a
token is claimed by a conditional UPDATE, so two nodes never enroll twice with one token.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from .base import StoreBase
from .errors import Conflict, NotFound, StoreError, TokenRefused
from .records import AgentRecord, TechnicianRecord
from .rows import agent_select, technician_select, to_agent, to_technician
from .schema import (
    agents,
    as_utc,
    cases,
    customers,
    enroll_tokens,
    revoked_tech_keys,
    technicians,
)
from .sqlitewriter import SqliteBusy

__all__ = ["CUSTOMER_KINDS", "PUBLIC_KEY_SIZE", "EnrollmentStore"]

CUSTOMER_KINDS: Final = ("individual", "small-business", "enterprise")
"""Allowed values of a customer's ``kind``."""

PUBLIC_KEY_SIZE: Final = 32  # raw Ed25519 public key


class EnrollmentStore(StoreBase):
    """Enrollment tokens, agents and technicians."""

    # ----------------------------------------------------------------- enrollment

    async def add_enroll_token(
        self,
        *,
        secret_hash: bytes,
        customer: str,
        kind: str,
        city: str,
        expires_at: datetime,
        now: datetime,
    ) -> int:
        """Record an enrollment token for a customer; return the token's id.

        The customer is created, or reused when one with the same name, kind and city exists.
        Only the hash of the token's secret is stored.

        Raises:
            StoreError: ``kind`` is not one of :data:`CUSTOMER_KINDS`.
            Conflict: a token with this secret hash already exists.
        """
        if kind not in CUSTOMER_KINDS:
            raise StoreError(f"customer kind {kind!r} is not one of {', '.join(CUSTOMER_KINDS)}")
        expires_at = as_utc(expires_at, "expires_at")
        now = as_utc(now, "now")
        try:
            async with self._tx(write=True) as conn:
                await conn.execute(
                    self._insert(customers)
                    .values(name=customer, kind=kind, city=city, created_at=now)
                    .on_conflict_do_nothing(index_elements=["name", "kind", "city"])
                )
                customer_id = (
                    await conn.execute(
                        sa.select(customers.c.id).where(
                            customers.c.name == customer,
                            customers.c.kind == kind,
                            customers.c.city == city,
                        )
                    )
                ).scalar_one()
                inserted = await conn.execute(
                    sa.insert(enroll_tokens).values(
                        secret_hash=secret_hash,
                        customer_id=customer_id,
                        expires_at=expires_at,
                        created_at=now,
                    )
                )
                (token_id,) = inserted.inserted_primary_key or (None,)
        except IntegrityError as exc:
            raise Conflict(
                "an enrollment token with this secret already exists; generate a new token"
            ) from exc
        assert isinstance(token_id, int)
        return token_id

    async def redeem_enroll_token(
        self,
        *,
        secret_hash: bytes,
        now: datetime,
        agent_id: str,
        public_key: bytes,
        hostname: str,
        os: str,
        software: str,
    ) -> AgentRecord:
        """Use up an enrollment token and enroll the agent, in one transaction.

        The token is claimed with a conditional UPDATE (unused and not expired at ``now``), so
        of two concurrent redeemers exactly one succeeds. If the agent cannot be inserted the
        whole transaction rolls back and the token stays usable.

        Raises:
            TokenRefused: the token is unknown, already used or expired (``reason``).
            Conflict: ``agent_id`` or ``public_key`` is already enrolled.
            StoreError: ``public_key`` is not 32 bytes.
        """
        if len(public_key) != PUBLIC_KEY_SIZE:
            raise StoreError(
                f"an agent public key is {PUBLIC_KEY_SIZE} bytes (Ed25519), "
                f"got {len(public_key)} bytes"
            )
        now = as_utc(now, "now")
        try:
            async with self._tx(write=True) as conn:
                claimed = await conn.execute(
                    sa.update(enroll_tokens)
                    .where(
                        enroll_tokens.c.secret_hash == secret_hash,
                        enroll_tokens.c.used_at.is_(None),
                        enroll_tokens.c.expires_at > now,
                    )
                    .values(used_at=now)
                )
                token = (
                    await conn.execute(
                        sa.select(
                            enroll_tokens.c.id,
                            enroll_tokens.c.customer_id,
                            enroll_tokens.c.used_at,
                        ).where(enroll_tokens.c.secret_hash == secret_hash)
                    )
                ).one_or_none()
                if claimed.rowcount != 1 or token is None:
                    if token is None:
                        raise TokenRefused("unknown")
                    raise TokenRefused("used" if token.used_at is not None else "expired")
                await self._check_new_agent(conn, agent_id, public_key)
                await conn.execute(
                    sa.insert(agents).values(
                        agent_id=agent_id,
                        customer_id=token.customer_id,
                        public_key=public_key,
                        hostname=hostname,
                        os=os,
                        software=software,
                        enrolled_at=now,
                    )
                )
                await conn.execute(
                    sa.update(enroll_tokens)
                    .where(enroll_tokens.c.id == token.id)
                    .values(agent_id=agent_id)
                )
                row = (await conn.execute(agent_select.where(agents.c.agent_id == agent_id))).one()
        except IntegrityError as exc:  # a concurrent enrollment won the race
            raise Conflict(
                f"agent {agent_id!r} or its public key was enrolled concurrently; "
                "generate a new agent key and enroll again with a new token"
            ) from exc
        return to_agent(row)

    @staticmethod
    async def _check_new_agent(conn: AsyncConnection, agent_id: str, public_key: bytes) -> None:
        taken = (
            await conn.execute(
                sa.select(agents.c.agent_id, agents.c.public_key).where(
                    sa.or_(agents.c.agent_id == agent_id, agents.c.public_key == public_key)
                )
            )
        ).first()
        if taken is None:
            return
        if taken.agent_id == agent_id:
            raise Conflict(f"agent {agent_id!r} is already enrolled; enroll with a new agent id")
        raise Conflict(
            "this agent public key is already enrolled for another agent; "
            "generate a new agent key and enroll again"
        )

    # ----------------------------------------------------------------- agents

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        """The agent ``agent_id`` (revoked ones included), or ``None``."""
        async with self._tx(write=False) as conn:
            row = (
                await conn.execute(agent_select.where(agents.c.agent_id == agent_id))
            ).one_or_none()
        return None if row is None else to_agent(row)

    async def revoked_agent_ids(self) -> set[str]:
        """Ids of revoked agents (the server re-reads them to expire its agent cache)."""
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(sa.select(agents.c.agent_id).where(
                agents.c.revoked_at.is_not(None)))).scalars()
            return {str(r) for r in rows}

    async def list_agents(self, *, customer: str | None = None,
                          with_cases_of: str | None = None) -> list[AgentRecord]:
        """Every agent (revoked ones included), or ``customer``'s, oldest enrollment first.

        ``with_cases_of``: only the agents with a case that technician may read as a
        ``remote`` technician (one they own or one of the unassigned queue); filtered in the
        same query (an ``EXISTS`` on the cases' agent index), not one query per agent.
        """
        query = agent_select.order_by(agents.c.enrolled_at, agents.c.agent_id)
        if customer is not None:
            query = query.where(customers.c.name == customer)
        if with_cases_of is not None:
            query = query.where(sa.exists().where(
                cases.c.agent_id == agents.c.agent_id,
                sa.or_(cases.c.owner == with_cases_of, cases.c.owner.is_(None))))
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [to_agent(row) for row in rows]

    async def touch_agent(self, agent_id: str, *, now: datetime) -> None:
        """Record that the agent was seen at ``now``.

        Raises:
            NotFound: no such agent.
        """
        now = as_utc(now, "now")
        async with self._tx(write=True) as conn:
            updated = await conn.execute(
                sa.update(agents).where(agents.c.agent_id == agent_id).values(last_seen=now)
            )
        if updated.rowcount != 1:
            raise NotFound(f"agent {agent_id!r} is not enrolled")

    async def touch_agents(self, seen: Mapping[str, datetime]) -> None:
        """Record when each agent was last seen, all in one transaction (agents that no
        longer exist are skipped). The server batches connects and disconnects this way, so
        a reconnect storm costs one write every few seconds, not one per agent."""
        if not seen:
            return
        rows = [{"aid": a, "seen": as_utc(at, "seen")} for a, at in seen.items()]
        async with self._tx(write=True) as conn:
            await conn.execute(
                sa.update(agents).where(agents.c.agent_id == sa.bindparam("aid"))
                .values(last_seen=sa.bindparam("seen")), rows)

    async def revoke_agent(self, agent_id: str, *, now: datetime) -> None:
        """Mark the agent revoked at ``now``; revoking twice keeps the first time.

        Raises:
            NotFound: no such agent.
        """
        now = as_utc(now, "now")
        async with self._tx(write=True) as conn:
            await conn.execute(
                sa.update(agents)
                .where(agents.c.agent_id == agent_id, agents.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            exists = (
                await conn.execute(
                    sa.select(agents.c.agent_id).where(agents.c.agent_id == agent_id)
                )
            ).first()
        if exists is None:
            raise NotFound(f"agent {agent_id!r} is not enrolled")

    # ----------------------------------------------------------------- technicians

    async def add_technician(
        self,
        *,
        name: str,
        key_fingerprint: str,
        valid_before: datetime,
        now: datetime,
        replace: bool = False,
        roles: str | None = None,
    ) -> TechnicianRecord:
        """Add a technician, or with ``replace=True`` replace (and un-revoke) an existing one.

        Replacing gives the technician a new key: the key it replaces, if different, is
        revoked for good (listed by :meth:`revoked_technician_fingerprints`), so a stolen old
        key does not come back to life when its owner is re-issued a key. ``roles`` are the
        roles the certificate was issued with (``remote,desk``), kept for listing only.

        Raises:
            Conflict: ``name`` exists (revoked or not) and ``replace`` is false, or
                ``key_fingerprint`` is a revoked key (issue a new key instead).
        """
        valid_before = as_utc(valid_before, "valid_before")
        now = as_utc(now, "now")
        values = {
            "key_fingerprint": key_fingerprint,
            "valid_before": valid_before,
            "added_at": now,
            "revoked_at": None,
            "roles": roles,
        }
        conflict = Conflict(
            f"technician {name!r} already exists (possibly revoked); "
            "choose another name or replace the existing entry"
        )
        try:
            async with self._tx(write=True) as conn:
                exists = (
                    await conn.execute(
                        sa.select(technicians.c.name).where(technicians.c.name == name)
                    )
                ).first()
                if exists is not None and not replace:
                    raise conflict
                revoked_key = (
                    await conn.execute(
                        sa.select(revoked_tech_keys.c.key_fingerprint).where(
                            revoked_tech_keys.c.key_fingerprint == key_fingerprint
                        )
                    )
                ).first()
                if revoked_key is not None:
                    raise Conflict(
                        f"the key {key_fingerprint} was revoked and cannot be used again; "
                        "issue the technician a new key"
                    )
                if exists is not None:
                    old = (
                        await conn.execute(
                            sa.select(technicians.c.key_fingerprint).where(
                                technicians.c.name == name
                            )
                        )
                    ).scalar_one()
                    if old != key_fingerprint:
                        await self._revoke_key(conn, old, name=name, now=now)
                    await conn.execute(
                        sa.update(technicians).where(technicians.c.name == name).values(values)
                    )
                else:
                    await conn.execute(sa.insert(technicians).values(name=name, **values))
                row = (
                    await conn.execute(technician_select.where(technicians.c.name == name))
                ).one()
        except IntegrityError as exc:  # a concurrent add of the same name
            raise conflict from exc
        return to_technician(row)

    async def _revoke_key(
        self, conn: AsyncConnection, key_fingerprint: str, *, name: str, now: datetime
    ) -> None:
        await conn.execute(
            self._insert(revoked_tech_keys)
            .values(key_fingerprint=key_fingerprint, name=name, revoked_at=now)
            .on_conflict_do_nothing(index_elements=["key_fingerprint"])
        )

    async def get_technician(self, name: str) -> TechnicianRecord | None:
        """The technician ``name`` (revoked ones included), or ``None``."""
        async with self._tx(write=False) as conn:
            row = (
                await conn.execute(technician_select.where(technicians.c.name == name))
            ).one_or_none()
        return None if row is None else to_technician(row)

    async def list_technicians(self) -> list[TechnicianRecord]:
        """Every technician (revoked ones included), by name."""
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(technician_select.order_by(technicians.c.name))).all()
        return [to_technician(row) for row in rows]

    async def revoke_technician(self, name: str, *, now: datetime) -> None:
        """Mark the technician revoked at ``now``; revoking twice keeps the first time.

        The technician's key joins :meth:`revoked_technician_fingerprints` for good.

        Raises:
            NotFound: no such technician.
        """
        now = as_utc(now, "now")
        async with self._tx(write=True) as conn:
            await conn.execute(
                sa.update(technicians)
                .where(technicians.c.name == name, technicians.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            found = (
                await conn.execute(
                    sa.select(technicians.c.key_fingerprint, technicians.c.revoked_at).where(
                        technicians.c.name == name
                    )
                )
            ).first()
            if found is not None:
                await self._revoke_key(
                    conn, found.key_fingerprint, name=name, now=found.revoked_at
                )
        if found is None:
            raise NotFound(f"technician {name!r} does not exist")

    async def technician_revocation_count(self) -> int:
        """How many technician keys were ever revoked or replaced: a cheap marker each
        server node polls to learn of a revocation made by another process (the list only
        grows, so a new revocation always changes it). On the request path: a SQLite file
        store reads it on the loop's thread (microseconds)."""
        if self._sqlite_reader is not None:
            try:
                found = self._sqlite_reader.fetchone("SELECT count(*) FROM revoked_tech_keys", ())
            except SqliteBusy:
                pass
            else:
                assert found is not None
                return int(found[0])
        async with self._tx(write=False) as conn:
            return int((await conn.execute(
                sa.select(sa.func.count()).select_from(revoked_tech_keys))).scalar_one())

    async def revoked_technician_fingerprints(self) -> list[str]:
        """Fingerprints of every technician key revoked or replaced, sorted; it only grows.

        This is the revocation list agents need: a key listed here is refused even while its
        certificate is within its validity period.
        """
        async with self._tx(write=False) as conn:
            rows = (
                await conn.execute(
                    sa.select(revoked_tech_keys.c.key_fingerprint).order_by(
                        revoked_tech_keys.c.key_fingerprint
                    )
                )
            ).scalars()
            return [str(fp) for fp in rows]
