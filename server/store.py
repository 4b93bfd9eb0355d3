"""The server's durable store: customers, tokens, agents, technicians, cases, results, audit.

SQLAlchemy 2 async Core (no ORM) over SQLite (``sqlite+aiosqlite:////abs/path/store.db``, the
embedded default) or PostgreSQL (``postgresql+asyncpg://...``) with the same code. The schema
is owned by the alembic migrations in ``server/migrations``; :meth:`Store.open` upgrades the
database to head before returning, so a store is always at the schema this module expects.

Every method is one transaction. Every datetime going in must be timezone-aware and every
datetime coming out is timezone-aware UTC (SQLite stores naive UTC text; it is re-tagged).

Exceptions (messages say what happened and what to do; never secrets, keys or payloads)::

    StoreError          base; also: bad input, database unavailable or busy
    ├── TokenRefused    an enrollment token that is unknown, already used or expired (.reason)
    ├── NotFound        no such agent, technician or case (or not the caller's case)
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

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from . import audit as _audit

__all__ = [
    "CUSTOMER_KINDS",
    "AgentRecord",
    "AuditCheck",
    "AuditEntry",
    "CaseEventRecord",
    "CaseRecord",
    "Conflict",
    "ConsentReceiptRecord",
    "NotFound",
    "ResultRecord",
    "Store",
    "StoreError",
    "TechnicianRecord",
    "TokenRefused",
]

CUSTOMER_KINDS: Final = ("individual", "small-business", "enterprise")
"""Allowed values of a customer's ``kind``."""

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS: Final = 10_000
CASE_NUMBER_ATTEMPTS: Final = 20
PUBLIC_KEY_SIZE: Final = 32  # raw Ed25519 public key

_CHINA: Final = timezone(timedelta(hours=8), "China")  # case numbers use China's date
_BEGIN_OPTION: Final = "helloword_sqlite_begin"
_SUPPORTED_DIALECTS: Final = ("sqlite", "postgresql")
_WAL_RETRY_DELAYS: Final = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0)
_PG_MIGRATION_LOCK: Final = 0x48574D494752  # "HWMIGR": advisory lock held while migrating
_PG_AUDIT_LOCK: Final = 0x4857415544495400  # "HWAUDIT": advisory lock held while appending
# Two-key advisory locks (space, key): case numbers of one China day, contract ids.
_PG_CASE_DAY_LOCK: Final = 0x48574344  # "HWCD", key = the day as YYYYMMDD
_PG_CONTRACT_LOCK: Final = 0x48574354  # "HWCT", key = 0
_AUDIT_VERIFY_BATCH: Final = 1000


# --------------------------------------------------------------------------- exceptions


class StoreError(Exception):
    """Base class of store errors; the text says what happened and what to do."""


class TokenRefused(StoreError):
    """An enrollment token cannot be redeemed; ``reason`` is "unknown", "used" or "expired"."""

    MESSAGES: Final = {
        "unknown": "this enrollment token is not known to the server; check it was copied "
        "completely, or ask HelloWord support for a new one",
        "used": "this enrollment token was already used; ask HelloWord support for a new one",
        "expired": "this enrollment token has expired; ask HelloWord support for a new one",
    }

    def __init__(self, reason: Literal["unknown", "used", "expired"]) -> None:
        super().__init__(self.MESSAGES[reason])
        self.reason = reason


class NotFound(StoreError):
    """No such agent, technician or case."""


class Conflict(StoreError):
    """The thing being created already exists."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class AgentRecord:
    """An enrolled agent and the customer it belongs to."""

    agent_id: str
    customer: str
    kind: str
    city: str
    public_key: bytes
    hostname: str
    os: str
    software: str
    enrolled_at: datetime
    last_seen: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class CaseRecord:
    """A support case; ``number`` looks like ``HW-20261126-0001``."""

    number: str
    agent_id: str
    customer: str
    description: str
    state: str
    opened_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class CaseEventRecord:
    """One entry of a case's state history."""

    state: str
    at: datetime
    actor: str
    note: str


@dataclass(frozen=True)
class ResultRecord:
    """A result an agent sent for a request in one of its cases; ``payload`` is JSON bytes."""

    msg_id: str
    request_id: str
    case: str
    agent_id: str
    action: str
    ok: bool
    payload: bytes
    error: str
    received_at: datetime


@dataclass(frozen=True)
class ContractRecord:
    """An enterprise service contract: free on-site visits per period, then ``rate``."""

    contract_id: str
    customer: str
    free_visits: int
    valid_from: date
    valid_to: date
    rate: int | None
    created_at: datetime
    visits_used: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.free_visits - self.visits_used)


@dataclass(frozen=True)
class TechnicianRecord:
    """A technician allowed to sign requests with the key of ``key_fingerprint``."""

    name: str
    key_fingerprint: str
    valid_before: datetime
    added_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the hash-chained audit log (see :meth:`Store.append_audit`)."""

    id: int
    at: datetime
    actor: str
    event: str
    subject: str
    detail: dict[str, Any]
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class AuditCheck:
    """The outcome of :meth:`Store.verify_audit`.

    ``entries`` counts every entry examined; ``first_bad_id`` and ``reason`` name the first
    broken link (``reason`` is ``""`` when ``ok``), e.g. "entry 17: its hash does not match
    its contents (edited?)". ``head`` is the hash of the newest intact entry (32 zero bytes
    for an empty log): record it elsewhere to detect a truncated tail later.
    """

    ok: bool
    entries: int
    first_bad_id: int | None
    reason: str
    head: bytes = _audit.GENESIS


@dataclass(frozen=True)
class ConsentReceiptRecord:
    """A consent receipt an agent signed: ``payload`` is the exact bytes ``signature`` covers."""

    receipt_id: str
    agent_id: str
    case: str
    tech: str
    scopes: str
    payload: bytes
    signature: bytes
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    received_at: datetime


# --------------------------------------------------------------------------- schema


class UTCDateTime(sa.TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that only accepts aware datetimes and returns aware UTC.

    Values are converted to UTC before binding (SQLite would otherwise store the wall-clock
    time of whatever offset they carry) and naive values read back (SQLite) are tagged UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return _as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


METADATA: Final = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
"""The tables as this module expects them; the migrations are what create them."""

customers = sa.Table(
    "customers",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("city", sa.String(100), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("name", "kind", "city"),
    sa.CheckConstraint("kind IN ('individual', 'small-business', 'enterprise')", name="kind"),
)

enroll_tokens = sa.Table(
    "enroll_tokens",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("secret_hash", sa.LargeBinary(64), nullable=False, unique=True),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("used_at", UTCDateTime, nullable=True),
    sa.Column("agent_id", sa.String(100), sa.ForeignKey("agents.agent_id"), nullable=True),
)

agents = sa.Table(
    "agents",
    METADATA,
    sa.Column("agent_id", sa.String(100), primary_key=True),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("public_key", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("os", sa.String(255), nullable=False),
    sa.Column("software", sa.Text, nullable=False),
    sa.Column("enrolled_at", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

technicians = sa.Table(
    "technicians",
    METADATA,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("key_fingerprint", sa.String(200), nullable=False),
    sa.Column("valid_before", UTCDateTime, nullable=False),
    sa.Column("added_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

cases = sa.Table(
    "cases",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("number", sa.String(32), nullable=False, unique=True),
    sa.Column("number_day", sa.String(8), nullable=False),  # China date, YYYYMMDD
    sa.Column("number_seq", sa.Integer, nullable=False),  # 1, 2, ... within number_day
    sa.Column("agent_id", sa.String(100), sa.ForeignKey("agents.agent_id"), nullable=False),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("opened_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("open_request_id", sa.String(100), nullable=False),
    sa.UniqueConstraint("number_day", "number_seq"),
    sa.UniqueConstraint("agent_id", "open_request_id"),
    sa.Index(None, "state"),
)

case_events = sa.Table(
    "case_events",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
)

results = sa.Table(
    "results",
    METADATA,
    sa.Column("msg_id", sa.String(100), primary_key=True),
    sa.Column("request_id", sa.String(100), nullable=False),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("agent_id", sa.String(100), sa.ForeignKey("agents.agent_id"), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
)

audit = sa.Table(
    "audit",
    METADATA,
    # Ids are given by append_audit (previous + 1) because they are part of the hash.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # canonical JSON, hashed as stored
    sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
    sa.UniqueConstraint("prev_hash"),  # one successor per entry: the chain cannot fork
    sa.Index(None, "subject"),
    sqlite_autoincrement=True,
)

consent_receipts = sa.Table(
    "consent_receipts",
    METADATA,
    sa.Column("receipt_id", sa.String(100), primary_key=True),
    sa.Column("agent_id", sa.String(100), sa.ForeignKey("agents.agent_id"), nullable=False,
              index=True),
    sa.Column("case_number", sa.String(32), nullable=False, index=True),
    sa.Column("tech", sa.String(100), nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("signature", sa.LargeBinary, nullable=False),
    sa.Column("granted_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
)

revoked_tech_keys = sa.Table(
    "revoked_tech_keys",
    METADATA,
    # Every technician key ever revoked or superseded, so re-issuing a technician's key does
    # not make the old (revoked or replaced) key valid again.
    sa.Column("key_fingerprint", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=False),
)


contracts = sa.Table(
    "contracts",
    METADATA,
    sa.Column("contract_id", sa.String(40), primary_key=True),
    sa.Column("customer", sa.String(200), nullable=False),
    sa.Column("free_visits", sa.Integer, nullable=False),
    sa.Column("valid_from", sa.Date, nullable=False),
    sa.Column("valid_to", sa.Date, nullable=False),
    sa.Column("rate", sa.Integer, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)


# --------------------------------------------------------------------------- helpers


#: Free visits consumed by bookings (the table is owned by server.onsite.tables).
_contract_visits = sa.table("contract_visits", sa.column("contract_id"))


def _contract_select() -> sa.Select[Any]:
    used = (sa.select(sa.func.count()).select_from(_contract_visits)
            .where(_contract_visits.c.contract_id == contracts.c.contract_id)
            .scalar_subquery())
    return sa.select(contracts, used.label("visits_used"))


def _contract(row: Any) -> ContractRecord:
    """Visits used are the free visits on-site bookings consumed (``contract_visits``)."""
    return ContractRecord(row.contract_id, row.customer, int(row.free_visits), row.valid_from,
                          row.valid_to, row.rate, row.created_at, int(row.visits_used))


def _as_utc(value: datetime, what: str = "datetime") -> datetime:
    """Return ``value`` in UTC; refuse naive datetimes (a caller bug, not data)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got a naive datetime")
    return value.astimezone(UTC)


def case_number(day: str, seq: int) -> str:
    """Format a case number: ``HW-YYYYMMDD-NNNN`` (more digits past 9999)."""
    return f"HW-{day}-{seq:04d}"


def china_day(at: datetime) -> str:
    """The China (UTC+8) calendar date of ``at`` as ``YYYYMMDD``."""
    return _as_utc(at).astimezone(_CHINA).strftime("%Y%m%d")


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: do not echo it, it may hold a password
        return "<unparsable database URL>"


def _on_sqlite_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # The store emits BEGIN itself (see _on_sqlite_begin); turn off sqlite3's legacy control.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_MS)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        with contextlib.suppress(sqlite3.OperationalError):
            # A file not yet in WAL mode cannot switch while another connection holds a lock
            # (SQLite fails at once, ignoring busy_timeout). WAL is a property of the file, so
            # this is only a first try: Store.open makes sure, waiting without blocking.
            cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def _switch_to_wal(sync_conn: Connection) -> str:
    """Ask for WAL outside any transaction; return the journal mode now in effect."""
    cursor = sync_conn.connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        row = cursor.fetchone()
    finally:
        cursor.close()
    return str(row[0]) if row else ""


async def _ensure_sqlite_wal(engine: AsyncEngine) -> None:
    """Put the SQLite file in WAL mode, retrying while another connection holds a lock."""
    for delay in _WAL_RETRY_DELAYS:
        await asyncio.sleep(delay)
        try:
            async with engine.connect() as conn:
                mode = await conn.run_sync(_switch_to_wal)
        except (OperationalError, sqlite3.OperationalError) as exc:
            # Wrapped by SQLAlchemy when raised while connecting, raw from our own cursor.
            orig = exc.orig if isinstance(exc, OperationalError) else exc
            if not isinstance(orig, sqlite3.OperationalError) or "locked" not in str(orig):
                raise
            continue
        if mode in ("wal", "memory"):  # an in-memory database has no WAL, nor needs one
            return
        raise StoreError(f"SQLite refused WAL journal mode (it reports {mode!r})")
    raise StoreError(
        "could not switch the SQLite store to WAL mode: another process keeps the database "
        "locked; stop it or retry"
    )


def _on_sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(_BEGIN_OPTION)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def _run_migrations(sync_conn: Connection, revision: str = "head") -> None:
    """Upgrade the database on ``sync_conn`` to ``revision`` with alembic."""
    if sync_conn.dialect.name == "postgresql":
        # Nodes starting together must not race on CREATE TABLE; released at commit.
        sync_conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    cfg = Config()
    # ConfigParser interpolation: a literal % in the path must be doubled.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, revision)


async def _pg_xact_lock(conn: AsyncConnection, space: int, key: int) -> None:
    """On PostgreSQL, take the advisory lock ``(space, key)`` until the transaction ends."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:space, :key)"),
                           {"space": space, "key": key})


def _current_revision(sync_conn: Connection) -> str | None:
    return MigrationContext.configure(sync_conn).get_current_revision()


_Row: TypeAlias = sa.Row[*tuple[Any, ...]]

_agent_columns: Final = (
    agents.c.agent_id,
    customers.c.name,
    customers.c.kind,
    customers.c.city,
    agents.c.public_key,
    agents.c.hostname,
    agents.c.os,
    agents.c.software,
    agents.c.enrolled_at,
    agents.c.last_seen,
    agents.c.revoked_at,
)
_agent_select: Final = sa.select(*_agent_columns).join_from(
    agents, customers, agents.c.customer_id == customers.c.id
)

_case_select: Final = sa.select(
    cases.c.number,
    cases.c.agent_id,
    customers.c.name,
    cases.c.description,
    cases.c.state,
    cases.c.opened_at,
    cases.c.updated_at,
).join_from(cases, customers, cases.c.customer_id == customers.c.id)

_result_select: Final = sa.select(
    results.c.msg_id,
    results.c.request_id,
    cases.c.number,
    results.c.agent_id,
    results.c.action,
    results.c.ok,
    results.c.payload,
    results.c.error,
    results.c.received_at,
).join_from(results, cases, results.c.case_id == cases.c.id)

_technician_select: Final = sa.select(
    technicians.c.name,
    technicians.c.key_fingerprint,
    technicians.c.valid_before,
    technicians.c.added_at,
    technicians.c.revoked_at,
)


_audit_select: Final = sa.select(
    audit.c.id,
    audit.c.at,
    audit.c.actor,
    audit.c.event,
    audit.c.subject,
    audit.c.detail,
    audit.c.prev_hash,
    audit.c.hash,
)

# For verify_audit: every column as raw as the driver gives it, so that a value edited into
# something unparsable is reported as a broken entry instead of crashing the check.
_audit_raw_select: Final = sa.select(
    audit.c.id,
    sa.type_coerce(audit.c.at, sa.String).label("at"),
    sa.type_coerce(audit.c.actor, sa.String).label("actor"),
    sa.type_coerce(audit.c.event, sa.String).label("event"),
    sa.type_coerce(audit.c.subject, sa.String).label("subject"),
    sa.type_coerce(audit.c.detail, sa.String).label("detail"),
    audit.c.prev_hash,
    audit.c.hash,
)

_receipt_select: Final = sa.select(
    consent_receipts.c.receipt_id,
    consent_receipts.c.agent_id,
    consent_receipts.c.case_number,
    consent_receipts.c.tech,
    consent_receipts.c.scopes,
    consent_receipts.c.payload,
    consent_receipts.c.signature,
    consent_receipts.c.granted_at,
    consent_receipts.c.expires_at,
    consent_receipts.c.revoked_at,
    consent_receipts.c.received_at,
)


def _agent(row: _Row) -> AgentRecord:
    return AgentRecord(
        agent_id=row.agent_id,
        customer=row.name,
        kind=row.kind,
        city=row.city,
        public_key=bytes(row.public_key),
        hostname=row.hostname,
        os=row.os,
        software=row.software,
        enrolled_at=row.enrolled_at,
        last_seen=row.last_seen,
        revoked_at=row.revoked_at,
    )


def _case(row: _Row) -> CaseRecord:
    return CaseRecord(
        number=row.number,
        agent_id=row.agent_id,
        customer=row.name,
        description=row.description,
        state=row.state,
        opened_at=row.opened_at,
        updated_at=row.updated_at,
    )


def _result(row: _Row) -> ResultRecord:
    return ResultRecord(
        msg_id=row.msg_id,
        request_id=row.request_id,
        case=row.number,
        agent_id=row.agent_id,
        action=row.action,
        ok=bool(row.ok),
        payload=bytes(row.payload),
        error=row.error,
        received_at=row.received_at,
    )


def _audit_detail(text: str) -> dict[str, Any]:
    """The stored detail as a dict; an unreadable one (tampering) is shown, not hidden."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text}
    return value if isinstance(value, dict) else {"unreadable": text}


def _audit_entry(row: _Row) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=row.at,
        actor=row.actor,
        event=row.event,
        subject=row.subject,
        detail=_audit_detail(row.detail),
        prev_hash=bytes(row.prev_hash),
        hash=bytes(row.hash),
    )


def _raw_bytes(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else None


def _raw_datetime(value: object) -> datetime | None:
    """A timestamp as the driver returned it (SQLite: text, PostgreSQL: datetime), or None."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _audit_computed_hash(row: _Row) -> bytes | None:
    """Recompute a raw entry's hash from its contents (``None`` if they are unreadable)."""
    at = _raw_datetime(row.at)
    prev_hash = _raw_bytes(row.prev_hash)
    texts = (row.actor, row.event, row.subject, row.detail)
    if at is None or prev_hash is None or not all(isinstance(t, str) for t in texts):
        return None
    return _audit.entry_hash(
        prev_hash=prev_hash,
        id=row.id,
        at=at,
        actor=row.actor,
        event=row.event,
        subject=row.subject,
        detail_json=row.detail,
    )


def _receipt(row: _Row) -> ConsentReceiptRecord:
    return ConsentReceiptRecord(
        receipt_id=row.receipt_id,
        agent_id=row.agent_id,
        case=row.case_number,
        tech=row.tech,
        scopes=row.scopes,
        payload=bytes(row.payload),
        signature=bytes(row.signature),
        granted_at=row.granted_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        received_at=row.received_at,
    )


def _technician(row: _Row) -> TechnicianRecord:
    return TechnicianRecord(
        name=row.name,
        key_fingerprint=row.key_fingerprint,
        valid_before=row.valid_before,
        added_at=row.added_at,
        revoked_at=row.revoked_at,
    )


# --------------------------------------------------------------------------- the store


class Store:
    """The durable store. Create with :meth:`open`; every method is its own transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Wrap an engine whose schema is already at head; use :meth:`open` instead."""
        self._engine = engine
        # Same pool; on SQLite its transactions start with BEGIN IMMEDIATE.
        self._write_engine = engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        dialect = engine.dialect.name
        self._insert: Callable[[sa.Table], Any] = (
            sqlite.insert if dialect == "sqlite" else postgresql.insert
        )
        # SQLite has one writer at a time. Writers of this process queue here, in order,
        # instead of on SQLite's busy handler, which polls with sleeps of up to 100 ms and
        # cut concurrent writes to ~70 transactions/s (bench/agents.py fan-out). Other
        # processes still meet the busy timeout. PostgreSQL needs no such lock.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if dialect == "sqlite" else None

    @classmethod
    async def open(cls, url: str) -> Store:
        """Connect to ``url`` and upgrade its schema to head (a no-op when already there).

        Raises:
            StoreError: the URL names an unsupported database, or it cannot be opened or
                migrated (the message names the URL without its password).
        """
        try:
            backend = make_url(url).get_backend_name()
        except Exception as exc:
            raise StoreError(
                "the store URL is not a valid database URL; expected e.g. "
                "sqlite+aiosqlite:////var/lib/helloword/store.db"
            ) from exc
        if backend not in _SUPPORTED_DIALECTS:
            raise StoreError(
                f"the store does not support {backend!r} databases; use "
                "sqlite+aiosqlite:///... or postgresql+asyncpg://..."
            )
        database = make_url(url).database
        if backend == "sqlite" and database and database != ":memory:":
            folder = Path(database).parent
            if not folder.is_dir():
                raise StoreError(
                    f"the folder of the SQLite store, {folder}, does not exist; create it "
                    "(hw-server init does) or fix the store URL"
                )
        try:
            engine = create_async_engine(url, hide_parameters=True)
        except ImportError as exc:
            raise StoreError(
                f"the database driver for {_safe_url(url)} is not installed "
                f"({exc.name or 'unknown module'}); install it, e.g. pip install asyncpg"
            ) from exc
        if backend == "sqlite":
            event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
            event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        store = cls(engine)
        try:
            if backend == "sqlite":
                await _ensure_sqlite_wal(engine)
            async with store._write_engine.begin() as conn:
                await conn.run_sync(_run_migrations)
        except (sa.exc.SQLAlchemyError, sqlite3.Error, OSError, CommandError) as exc:
            await engine.dispose()
            raise StoreError(
                f"could not open or migrate the store at {_safe_url(url)} "
                f"({type(exc).__name__}); check that the database exists, is reachable "
                "and writable, and was not created by a newer hw-server"
            ) from exc
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _tx(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        engine = self._write_engine if write else self._engine
        lock = self._write_lock if write else None
        try:
            async with contextlib.AsyncExitStack() as stack:
                if lock is not None:
                    await stack.enter_async_context(lock)
                conn = await stack.enter_async_context(engine.begin())
                yield conn
        except (OperationalError, sa.exc.InterfaceError) as exc:
            raise StoreError(
                f"the store is unavailable or busy ({type(exc.orig).__name__}); "
                "retry, and check the database if it keeps happening"
            ) from exc
        except sa.exc.TimeoutError as exc:  # every pooled connection busy for too long
            raise StoreError(
                "the store is overloaded (no database connection free in time); retry in "
                "a moment"
            ) from exc
        except OSError as exc:  # asyncpg: the server refused or dropped the connection
            raise StoreError(
                f"the store's database server cannot be reached ({type(exc).__name__}); "
                "check that it is running and reachable, then retry"
            ) from exc

    async def schema_revision(self) -> str | None:
        """The alembic revision the database is at (``None`` for an empty database)."""
        async with self._tx(write=False) as conn:
            return await conn.run_sync(_current_revision)

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
        expires_at = _as_utc(expires_at, "expires_at")
        now = _as_utc(now, "now")
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
        now = _as_utc(now, "now")
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
                row = (await conn.execute(_agent_select.where(agents.c.agent_id == agent_id))).one()
        except IntegrityError as exc:  # a concurrent enrollment won the race
            raise Conflict(
                f"agent {agent_id!r} or its public key was enrolled concurrently; "
                "generate a new agent key and enroll again with a new token"
            ) from exc
        return _agent(row)

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
                await conn.execute(_agent_select.where(agents.c.agent_id == agent_id))
            ).one_or_none()
        return None if row is None else _agent(row)

    async def revoked_agent_ids(self) -> set[str]:
        """Ids of revoked agents (the server re-reads them to expire its agent cache)."""
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(sa.select(agents.c.agent_id).where(
                agents.c.revoked_at.is_not(None)))).scalars()
            return {str(r) for r in rows}

    async def list_agents(self, *, customer: str | None = None) -> list[AgentRecord]:
        """Every agent (revoked ones included), or ``customer``'s, oldest enrollment first."""
        query = _agent_select.order_by(agents.c.enrolled_at, agents.c.agent_id)
        if customer is not None:
            query = query.where(customers.c.name == customer)
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [_agent(row) for row in rows]

    async def touch_agent(self, agent_id: str, *, now: datetime) -> None:
        """Record that the agent was seen at ``now``.

        Raises:
            NotFound: no such agent.
        """
        now = _as_utc(now, "now")
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
        rows = [{"aid": a, "seen": _as_utc(at, "seen")} for a, at in seen.items()]
        async with self._tx(write=True) as conn:
            await conn.execute(
                sa.update(agents).where(agents.c.agent_id == sa.bindparam("aid"))
                .values(last_seen=sa.bindparam("seen")), rows)

    async def revoke_agent(self, agent_id: str, *, now: datetime) -> None:
        """Mark the agent revoked at ``now``; revoking twice keeps the first time.

        Raises:
            NotFound: no such agent.
        """
        now = _as_utc(now, "now")
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
    ) -> TechnicianRecord:
        """Add a technician, or with ``replace=True`` replace (and un-revoke) an existing one.

        Replacing gives the technician a new key: the key it replaces, if different, is
        revoked for good (listed by :meth:`revoked_technician_fingerprints`), so a stolen old
        key does not come back to life when its owner is re-issued a key.

        Raises:
            Conflict: ``name`` exists (revoked or not) and ``replace`` is false, or
                ``key_fingerprint`` is a revoked key (issue a new key instead).
        """
        valid_before = _as_utc(valid_before, "valid_before")
        now = _as_utc(now, "now")
        values = {
            "key_fingerprint": key_fingerprint,
            "valid_before": valid_before,
            "added_at": now,
            "revoked_at": None,
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
                    await conn.execute(_technician_select.where(technicians.c.name == name))
                ).one()
        except IntegrityError as exc:  # a concurrent add of the same name
            raise conflict from exc
        return _technician(row)

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
                await conn.execute(_technician_select.where(technicians.c.name == name))
            ).one_or_none()
        return None if row is None else _technician(row)

    async def revoke_technician(self, name: str, *, now: datetime) -> None:
        """Mark the technician revoked at ``now``; revoking twice keeps the first time.

        The technician's key joins :meth:`revoked_technician_fingerprints` for good.

        Raises:
            NotFound: no such technician.
        """
        now = _as_utc(now, "now")
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
        now = _as_utc(now, "now")
        async with self._tx(write=True) as conn:
            await _pg_xact_lock(conn, _PG_CONTRACT_LOCK, 0)  # ids from the count: one at a time
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
            row = (await conn.execute(_contract_select().where(
                contracts.c.contract_id == contract_id))).one_or_none()
        return None if row is None else _contract(row)

    async def list_contracts(self, *, customer: str | None = None) -> list[ContractRecord]:
        query = _contract_select().order_by(contracts.c.contract_id)
        if customer is not None:
            query = query.where(contracts.c.customer == customer)
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [_contract(r) for r in rows]

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

    # ----------------------------------------------------------------- cases

    async def open_case(
        self, *, agent_id: str, description: str, request_id: str, now: datetime
    ) -> tuple[CaseRecord, bool]:
        """Open a case for the agent, idempotently per ``(agent_id, request_id)``.

        Returns ``(case, True)`` for a new case (state "open", first history entry by the
        agent) or ``(existing, False)`` when this request already opened one. The number is
        ``HW-YYYYMMDD-NNNN`` with the China (UTC+8) date of ``now`` and a per-day sequence from
        0001; a number taken by a concurrent insert is retried with the next one.

        Raises:
            NotFound: no such agent.
            StoreError: no free number after :data:`CASE_NUMBER_ATTEMPTS` attempts.
        """
        now = _as_utc(now, "now")
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
                    await _pg_xact_lock(conn, _PG_CASE_DAY_LOCK, int(day))
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
                    row = (await conn.execute(_case_select.where(cases.c.id == case_id))).one()
                    return _case(row), True
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
                _case_select.where(
                    cases.c.agent_id == agent_id, cases.c.open_request_id == request_id
                )
            )
        ).one_or_none()
        return None if row is None else _case(row)

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
        async with self._tx(write=False) as conn:
            row = (await conn.execute(_case_select.where(cases.c.number == number))).one_or_none()
        return None if row is None else _case(row)

    async def list_cases(
        self, *, state: str | None = None, agent_id: str | None = None
    ) -> list[CaseRecord]:
        """Cases, newest first, optionally only those in ``state`` and/or of ``agent_id``."""
        query = _case_select.order_by(cases.c.opened_at.desc(), cases.c.id.desc())
        if state is not None:
            query = query.where(cases.c.state == state)
        if agent_id is not None:
            query = query.where(cases.c.agent_id == agent_id)
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [_case(row) for row in rows]

    async def set_case_state(
        self, number: str, state: str, *, actor: str, now: datetime, note: str = ""
    ) -> CaseRecord:
        """Move the case to ``state`` and append it to the case's history, in one transaction.

        The store does not judge transitions; the case lifecycle does that before calling.

        Raises:
            NotFound: no such case.
        """
        now = _as_utc(now, "now")
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
            row = (await conn.execute(_case_select.where(cases.c.id == case_id))).one()
        return _case(row)

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
    ) -> bool:
        """Store an agent's result exactly once; ``False`` if ``msg_id`` was already stored.

        With ``case_state``, a newly stored result also moves the case to that state (and
        appends it to the history, noting the result) in the same transaction, unless the
        case is in that state already. With ``audit_detail``, a newly stored result is also
        appended to the audit log (event ``result``) in that transaction.

        Raises:
            NotFound: the case does not exist or is not ``agent_id``'s (the same error for
                both, so an agent learns nothing about other agents' cases).
        """
        async with self._tx(write=True) as conn:
            return await self.store_result_in(
                conn, msg_id=msg_id, request_id=request_id, case=case, agent_id=agent_id,
                action=action, ok=ok, payload=payload, error=error, now=now,
                case_state=case_state, audit_detail=audit_detail)

    async def store_result_in(
        self,
        conn: AsyncConnection,
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
    ) -> bool:
        """:meth:`store_result` inside the caller's write transaction (see
        :meth:`run_batch`). ``NotFound`` is raised before anything is written."""
        now = _as_utc(now, "now")
        try:
            detail_json = (None if audit_detail is None
                           else _audit.canonical_detail(audit_detail))
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        found = (
            await conn.execute(
                sa.select(cases.c.id, cases.c.state).where(
                    cases.c.number == case, cases.c.agent_id == agent_id
                )
            )
        ).one_or_none()
        if found is None:
            raise NotFound(
                f"agent {agent_id!r} has no case {case!r}; an agent can only send "
                "results for its own cases"
            )
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
            await self._append_audit(
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
                    _result_select.where(cases.c.number == case).order_by(
                        results.c.received_at, results.c.msg_id
                    )
                )
            ).all()
        return [_result(row) for row in rows]

    async def get_result(self, msg_id: str) -> ResultRecord | None:
        """The result ``msg_id``, or ``None``."""
        async with self._tx(write=False) as conn:
            row = (
                await conn.execute(_result_select.where(results.c.msg_id == msg_id))
            ).one_or_none()
        return None if row is None else _result(row)

    # ----------------------------------------------------------------- audit

    async def append_audit(
        self,
        *,
        event: str,
        actor: str,
        subject: str = "",
        detail: Mapping[str, Any] | None = None,
        now: datetime,
    ) -> AuditEntry:
        """Append an entry to the hash-chained audit log and return it.

        ``event`` names what happened (``"enroll"``, ``"consent.grant"``, ``"command"``, ...),
        ``actor`` who did it (``"tech:alice"``, ``"agent:<id>"``, ``"operator"``), ``subject``
        what it was done to (a case number, an agent id), for :meth:`list_audit` filtering.

        ``detail`` must never carry secrets: no tokens or token hashes, keys, passwords,
        signatures or payloads; it is shown to operators and kept forever. Record facts
        (a fingerprint, an action name, a verdict) instead. It must be JSON-representable and
        at most :data:`server.audit.DETAIL_MAX_BYTES` once canonicalised.

        The entry's id is the previous entry's plus one and its hash covers the previous
        hash (``server/audit.py``). Appends are serialised across connections, processes and
        PostgreSQL nodes, so concurrent appenders never fork the chain.

        Raises:
            StoreError: ``detail`` is not JSON-representable or too large.
        """
        async with self._tx(write=True) as conn:
            return await self.append_audit_in(conn, event=event, actor=actor, subject=subject,
                                              detail=detail, now=now)

    async def append_audit_in(
        self,
        conn: AsyncConnection,
        *,
        event: str,
        actor: str,
        subject: str = "",
        detail: Mapping[str, Any] | None = None,
        now: datetime,
    ) -> AuditEntry:
        """:meth:`append_audit` inside the caller's write transaction (see :meth:`run_batch`);
        a bad ``detail`` raises ``StoreError`` before anything is written."""
        now = _as_utc(now, "now")
        try:
            detail_json = _audit.canonical_detail(detail)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        return await self._append_audit(
            conn, event=event, actor=actor, subject=subject, detail_json=detail_json, now=now
        )

    async def run_batch(
        self, jobs: Sequence[Callable[[AsyncConnection], Awaitable[Any]]]
    ) -> list[Any]:
        """Run write jobs in ONE transaction (group commit) and return each job's value, or
        the ``NotFound``/``StoreError`` it raised (such jobs raise before writing anything,
        so the others still commit). Any other failure rolls the whole batch back and
        propagates: then nothing of it is stored, and the callers retry."""
        out: list[Any] = []
        async with self._tx(write=True) as conn:
            for job in jobs:
                try:
                    out.append(await job(conn))
                except StoreError as exc:
                    out.append(exc)
        return out

    @staticmethod
    async def _append_audit(
        conn: AsyncConnection,
        *,
        event: str,
        actor: str,
        subject: str,
        detail_json: str,
        now: datetime,
    ) -> AuditEntry:
        """Append within the caller's write transaction (so an action and its audit commit
        together); on SQLite the transaction must have been begun with BEGIN IMMEDIATE."""
        if conn.dialect.name == "postgresql":
            # Released at commit; serialises appenders on every node sharing the database.
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_AUDIT_LOCK})")
        last = (
            await conn.execute(
                sa.select(audit.c.id, audit.c.hash).order_by(audit.c.id.desc()).limit(1)
            )
        ).first()
        entry_id = 1 if last is None else int(last.id) + 1
        prev_hash = _audit.GENESIS if last is None else bytes(last.hash)
        digest = _audit.entry_hash(
            prev_hash=prev_hash,
            id=entry_id,
            at=now,
            actor=actor,
            event=event,
            subject=subject,
            detail_json=detail_json,
        )
        await conn.execute(
            sa.insert(audit).values(
                id=entry_id,
                at=now,
                actor=actor,
                event=event,
                subject=subject,
                detail=detail_json,
                prev_hash=prev_hash,
                hash=digest,
            )
        )
        return AuditEntry(
            id=entry_id,
            at=now,
            actor=actor,
            event=event,
            subject=subject,
            detail=json.loads(detail_json),
            prev_hash=prev_hash,
            hash=digest,
        )

    async def list_audit(self, *, limit: int = 100, subject: str | None = None) -> list[AuditEntry]:
        """The newest ``limit`` audit entries (only those about ``subject``), newest last.

        Raises:
            StoreError: ``limit`` is negative.
        """
        if limit < 0:
            raise StoreError(f"limit must be 0 or more, got {limit}")
        query = _audit_select.order_by(audit.c.id.desc()).limit(limit)
        if subject is not None:
            query = query.where(audit.c.subject == subject)
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [_audit_entry(row) for row in reversed(rows)]

    async def verify_audit(self) -> AuditCheck:
        """Re-hash the whole audit log and check every link; report the first broken one.

        Detects an edited entry (its hash no longer matches), a deleted or reordered entry
        (the next one does not follow its predecessor) and deleted first entries. A chain
        cannot detect a truncated tail (deleting the newest entries leaves a shorter valid
        chain): compare :attr:`AuditCheck.head` with a copy recorded elsewhere for that.
        Reads in batches, so memory does not grow with the log.
        """
        checker = _audit.ChainChecker()
        after = 0
        async with self._tx(write=False) as conn:
            while True:
                rows = (
                    await conn.execute(
                        _audit_raw_select.where(audit.c.id > after)
                        .order_by(audit.c.id)
                        .limit(_AUDIT_VERIFY_BATCH)
                    )
                ).all()
                if not rows:
                    break
                for row in rows:
                    checker.feed(
                        id=row.id,
                        prev_hash=_raw_bytes(row.prev_hash),
                        hash=_raw_bytes(row.hash),
                        computed=_audit_computed_hash(row),
                    )
                after = rows[-1].id
        return AuditCheck(
            ok=checker.ok,
            entries=checker.entries,
            first_bad_id=checker.first_bad_id,
            reason=checker.reason,
            head=checker.head,
        )

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
        granted_at = _as_utc(granted_at, "granted_at")
        expires_at = _as_utc(expires_at, "expires_at")
        revoked_at = None if revoked_at is None else _as_utc(revoked_at, "revoked_at")
        now = _as_utc(now, "now")
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
        query = _receipt_select.order_by(
            consent_receipts.c.received_at, consent_receipts.c.receipt_id
        )
        if case is not None:
            query = query.where(consent_receipts.c.case_number == case)
        if agent_id is not None:
            query = query.where(consent_receipts.c.agent_id == agent_id)
        async with self._tx(write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [_receipt(row) for row in rows]

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
        started_at = _as_utc(started_at, "started_at")
        ended = None if ended_at is None else _as_utc(ended_at, "ended_at")
        now = _as_utc(now, "now")
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
                await self._append_audit(
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
        return [_recording(row, b"") for row in rows]

    async def get_recording(self, recording_id: str) -> RecordingRecord | None:
        """One recording with its data, or ``None``."""
        query = sa.select(recordings).where(recordings.c.recording_id == recording_id)
        async with self._tx(write=False) as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _recording(row, bytes(row.data))


recordings = sa.Table(
    "recordings",
    METADATA,
    sa.Column("recording_id", sa.String(64), primary_key=True),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("case_number", sa.String(32), nullable=False, index=True),
    sa.Column("tech", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("sha256", sa.LargeBinary, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
)
"""Tunnel-session recordings (asciicast v2 shells, SFTP operation lists), migration 0004."""


@dataclass(frozen=True)
class RecordingRecord:
    recording_id: str
    agent_id: str
    case: str
    tech: str
    kind: str
    started_at: datetime
    ended_at: datetime | None
    size: int
    sha256: bytes
    data: bytes
    received_at: datetime


def _recording(row: Any, data: bytes) -> RecordingRecord:
    return RecordingRecord(
        recording_id=row.recording_id, agent_id=row.agent_id, case=row.case_number,
        tech=row.tech, kind=row.kind, started_at=row.started_at, ended_at=row.ended_at,
        size=row.size, sha256=bytes(row.sha256), data=data, received_at=row.received_at)
