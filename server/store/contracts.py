"""Enterprise service contracts; ids ``CT-0001``, ... are allocated under a transaction-scoped
advisory lock on PostgreSQL (BEGIN IMMEDIATE on SQLite)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Final

import sqlalchemy as sa

from .base import StoreBase
from .engine import pg_xact_lock
from .errors import StoreError
from .records import ContractRecord
from .rows import contract_select, to_contract
from .schema import as_utc, contracts

__all__ = ["ContractStore"]

_PG_CONTRACT_LOCK: Final = 0x48574354  # "HWCT", key = 0 (two-key advisory lock)


class ContractStore(StoreBase):
    """Service contracts."""

    async def add_contract(self, *, customer: str, free_visits: int, valid_from: date,
                           valid_to: date, rate: int | None, now: datetime) -> ContractRecord:
        """Record a service contract; ids are ``CT-0001``, ``CT-0002``, ...

        Raises:
            StoreError: an empty customer, negative visits or rate, or a period that ends
                before it starts.
        """
        if not customer.strip():
            raise StoreError("a contract needs a customer name")
        if free_visits < 0 or (rate is not None and rate < 0):
            raise StoreError("free visits and the rate cannot be negative")
        if valid_to < valid_from:
            raise StoreError(f"the contract ends ({valid_to}) before it starts ({valid_from})")
        now = as_utc(now, "now")
        async with self._tx(write=True) as conn:
            await pg_xact_lock(conn, _PG_CONTRACT_LOCK, 0)  # ids from the count: one at a time
            count = (await conn.execute(sa.select(sa.func.count()).select_from(contracts))
                     ).scalar_one()
            contract_id = f"CT-{int(count) + 1:04d}"
            await conn.execute(sa.insert(contracts).values(
                contract_id=contract_id, customer=customer.strip(), free_visits=free_visits,
                valid_from=valid_from, valid_to=valid_to, rate=rate, created_at=now))
        return ContractRecord(contract_id, customer.strip(), free_visits, valid_from,
                              valid_to, rate, now)

    async def get_contract(self, contract_id: str) -> ContractRecord | None:
        async with self._tx(write=False) as conn:
            row = (await conn.execute(contract_select().where(
                contracts.c.contract_id == contract_id))).one_or_none()
        return None if row is None else to_contract(row)

    async def list_contracts(self, *, customer: str | None = None) -> list[ContractRecord]:
        query = contract_select().order_by(contracts.c.contract_id)
        if customer is not None:
            query = query.where(contracts.c.customer == customer)
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [to_contract(r) for r in rows]
