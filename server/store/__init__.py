"""The server's durable store: customers, tokens, agents, technicians, cases, results, audit.

SQLAlchemy 2 async Core (no ORM) over SQLite (``sqlite+aiosqlite:////abs/path/store.db``, the
embedded default) or PostgreSQL (``postgresql+asyncpg://...``) with the same code. The schema
is owned by the alembic migrations in ``server/migrations``; :meth:`Store.open` upgrades the
database to head before returning, so a store is always at the schema this package expects.

The package, by concept:

- :mod:`.engine`: engine creation, SQLite settings (WAL, busy timeout), migrations;
- :mod:`.schema`: the tables; :mod:`.records`: the records returned; :mod:`.errors`: the
  exceptions; :mod:`.rows`: common queries and row -> record helpers;
- one module per aggregate, each a mixin of :class:`Store`: :mod:`.enrollment` (customers,
  tokens, agents, technicians), :mod:`.contracts`, :mod:`.cases` (cases and results),
  :mod:`.audit` (the hash-chained log and group commit), :mod:`.receipts` (consent
  receipts), :mod:`.recordings` (tunnel-session recordings), :mod:`.requests` (the
  requests sent to agents, which results must answer).

Every method is one transaction. Every datetime going in must be timezone-aware and every
datetime coming out is timezone-aware UTC (SQLite stores naive UTC text; it is re-tagged).

Exceptions (messages say what happened and what to do; never secrets, keys or payloads)::

    StoreError          base; also: bad input, database unavailable or busy
    ├── TokenRefused    an enrollment token that is unknown, already used or expired (.reason)
    ├── NotFound        no such agent, technician or case (or not the caller's case)
    ├── ResultRefused   a result that answers no request sent to that agent (.reason)
    └── Conflict        already exists: agent id, public key, technician, token secret

SQLite concurrency: connections run with ``journal_mode=WAL``, a busy timeout and
``foreign_keys=ON``. sqlite3's own (legacy) transaction control is switched off and the store
emits ``BEGIN IMMEDIATE`` for transactions that write and plain ``BEGIN`` for reads, so DDL is
transactional, writers queue on the busy timeout instead of failing with a stale snapshot, and
reads within one method see one snapshot.

PostgreSQL concurrency (several ``hw-server`` processes on one database): transactions run at
READ COMMITTED; whatever must not happen twice is decided by the database, not by a read
followed by a write. Results, consent receipts and customers are inserted with
``ON CONFLICT DO NOTHING`` on their unique keys; a token is claimed by a conditional UPDATE;
case numbers of one day, contract ids, audit appends and migrations are allocated under
transaction-scoped advisory locks (released at commit), with unique constraints as the last
line of defence.

Audit log: :meth:`Store.append_audit` adds hash-chained entries (``server/audit.py`` has the
encoding); appends are serialised (``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory
lock on PostgreSQL) so concurrent writers, even on several nodes, never fork the chain. The
store has no method that updates or deletes audit entries or consent receipts.
"""

from __future__ import annotations

from .audit import AuditStore
from .base import StoreBase
from .cases import CASE_NUMBER_ATTEMPTS, CaseStore, case_number, china_day
from .contracts import ContractStore
from .engine import MIGRATIONS_DIR, SQLITE_BUSY_TIMEOUT_MS
from .enrollment import CUSTOMER_KINDS, PUBLIC_KEY_SIZE, EnrollmentStore
from .errors import Conflict, NotFound, ResultRefused, StoreError, TokenRefused
from .receipts import ReceiptStore
from .recordings import RecordingStore
from .records import (
    AgentRecord,
    AuditCheck,
    AuditEntry,
    CaseEventRecord,
    CaseRecord,
    ConsentReceiptRecord,
    ContractRecord,
    RecordingRecord,
    ResultRecord,
    TechnicianRecord,
)
from .requests import RequestStore
from .schema import METADATA, UTCDateTime

__all__ = [
    "CASE_NUMBER_ATTEMPTS",
    "CUSTOMER_KINDS",
    "METADATA",
    "MIGRATIONS_DIR",
    "PUBLIC_KEY_SIZE",
    "SQLITE_BUSY_TIMEOUT_MS",
    "AgentRecord",
    "AuditCheck",
    "AuditEntry",
    "CaseEventRecord",
    "CaseRecord",
    "Conflict",
    "ConsentReceiptRecord",
    "ContractRecord",
    "NotFound",
    "RecordingRecord",
    "ResultRecord",
    "ResultRefused",
    "Store",
    "StoreError",
    "TechnicianRecord",
    "TokenRefused",
    "UTCDateTime",
    "case_number",
    "china_day",
]


class Store(EnrollmentStore, ContractStore, CaseStore, AuditStore, ReceiptStore,
            RecordingStore, RequestStore, StoreBase):
    """The durable store. Create with :meth:`open`; every method is its own transaction."""
