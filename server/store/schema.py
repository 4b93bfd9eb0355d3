"""The tables as the store expects them (the alembic migrations in ``server/migrations`` are
what create them), and the timestamp convention: every datetime going in must be
timezone-aware and every datetime coming out is timezone-aware UTC (SQLite stores naive UTC
text; it is re-tagged)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "METADATA", "UTCDateTime", "agents", "as_utc", "audit", "case_events", "cases",
    "consent_receipts", "contracts", "customers", "enroll_tokens", "recordings", "requests",
    "results", "revoked_tech_keys", "technicians", "tunnels",
]

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
        return as_utc(value)

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
    # Roles the certificate was issued with, "remote,desk" (migration 0008); NULL: issued
    # before roles (the certificate, not this column, is the authority).
    sa.Column("roles", sa.String(200), nullable=True),
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
    # The technician who owns the case (migration 0008); NULL: in the unassigned queue.
    sa.Column("owner", sa.String(100), nullable=True),
    sa.UniqueConstraint("number_day", "number_seq"),
    sa.UniqueConstraint("agent_id", "open_request_id"),
    sa.Index(None, "state"),
    sa.Index(None, "owner"),
    # migration 0007: an agent's recent cases (quotas), listings newest first (pages)
    sa.Index(None, "agent_id", "opened_at"),
    sa.Index(None, "opened_at"),
    sa.Index(None, "customer_id", "opened_at"),
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
    # migration 0009: the brokered tunnel it was recorded in (attribution comes from there;
    # NULL for rows from before), the technician key of that tunnel, and whether ``data``
    # is sealed to the recording key (``size``/``sha256`` are of the plaintext either way)
    sa.Column("tunnel_id", sa.String(64), nullable=True),
    sa.Column("key_fingerprint", sa.String(128), nullable=True),
    sa.Column("sealed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index(None, "agent_id", "received_at"),
    sa.Index(None, "tunnel_id"),
)
"""Tunnel-session recordings (asciicast v2 shells, SFTP operation lists), migrations 0004
and 0009."""

tunnels = sa.Table(
    "tunnels",
    METADATA,
    sa.Column("tunnel_id", sa.String(64), primary_key=True),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("case_number", sa.String(32), nullable=False),
    sa.Column("tech", sa.String(128), nullable=False),
    sa.Column("key_fingerprint", sa.String(128), nullable=False),
    sa.Column("opened_at", UTCDateTime, nullable=False),
    sa.Column("closed_at", UTCDateTime, nullable=True),
    sa.Index(None, "agent_id", "case_number"),
)
"""Every SSH tunnel the server brokered (migration 0009): who, with which key, to which
agent and case, when; a recording is kept only for one of these, attributed from it."""


requests = sa.Table(
    "requests",
    METADATA,
    # Every request the relay sent to an agent (migration 0007): a result is stored only if
    # it answers one of these, sent to that agent for that case and action, once.
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("agent_id", sa.String(100), nullable=False),
    sa.Column("case_number", sa.String(32), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("sent_at", UTCDateTime, nullable=False),
    sa.Column("answered_by", sa.String(100), nullable=True),  # the result's msg_id
    sa.Column("answered_at", UTCDateTime, nullable=True),
)
"""Requests sent to agents, and the result that answered each (migration 0007)."""


def as_utc(value: datetime, what: str = "datetime") -> datetime:
    """Return ``value`` in UTC; refuse naive datetimes (a caller bug, not data)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got a naive datetime")
    return value.astimezone(UTC)
