"""The on-site tables (created by migration 0005), on the store's metadata.

What must not happen twice is enforced here, in the database, so it holds with concurrent
bookings and with several server nodes writing at once:

* ``tech_hours`` — one row per technician per booked hour (primary key): two visits of one
  technician can never overlap;
* ``tech_day_visits`` — visit number n of a technician on a day (primary key), n is at most the
  technician's daily capacity and each ticket holds at most one (unique ``ticket_id``);
* ``contract_visits`` — free visit number n of a contract (primary key), n is at most the
  contract's free visits and each ticket consumes at most one.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..store import METADATA, UTCDateTime

field_techs = sa.Table(
    "field_techs",
    METADATA,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("base", sa.String(100), nullable=False),
    sa.Column("skills", sa.String(1000), nullable=False),
    sa.Column("daily_capacity", sa.Integer, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

tickets = sa.Table(
    "tickets",
    METADATA,
    sa.Column("ticket_id", sa.String(24), primary_key=True),
    sa.Column("case_number", sa.String(32), nullable=False, index=True),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("customer", sa.String(200), nullable=False),
    sa.Column("customer_kind", sa.String(32), nullable=False),
    sa.Column("contract_id", sa.String(40), nullable=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("service", sa.String(64), nullable=False),
    sa.Column("city", sa.String(100), nullable=False),
    sa.Column("tier", sa.String(16), nullable=False),
    sa.Column("eligible", sa.Boolean, nullable=False),
    sa.Column("covered", sa.Boolean, nullable=False),
    sa.Column("provisional", sa.Boolean, nullable=False),
    sa.Column("currency", sa.String(8), nullable=False),
    sa.Column("quote", sa.Text, nullable=False),
    sa.Column("slots", sa.Text, nullable=False),
    sa.Column("preparation", sa.Text, nullable=False),
    sa.Column("checklist", sa.Text, nullable=False),
    sa.Column("findings", sa.Text, nullable=False),
    sa.Column("fixes", sa.Text, nullable=False),
    sa.Column("booked_start", UTCDateTime, nullable=True),
    sa.Column("booked_end", UTCDateTime, nullable=True),
    sa.Column("technician", sa.String(128), nullable=True),
    sa.Column("accepted_by", sa.String(128), nullable=True),
    sa.Column("acceptance", sa.LargeBinary, nullable=True),
    sa.Column("acceptance_sig", sa.LargeBinary, nullable=True),
    sa.Column("total", sa.Integer, nullable=True),
    sa.Column("free_visit", sa.Boolean, nullable=False),
    sa.Column("resolved", sa.Boolean, nullable=True),
    sa.Column("root_cause", sa.String(32), nullable=True),
    sa.Column("signoff_note", sa.Text, nullable=False),
    sa.Column("signoff_at", UTCDateTime, nullable=True),
    sa.Column("fee", sa.Integer, nullable=True),
    sa.Column("confirmation", sa.LargeBinary, nullable=True),
    sa.Column("confirmation_sig", sa.LargeBinary, nullable=True),
    sa.Column("confirmed_at", UTCDateTime, nullable=True),
    sa.Column("followup_due", sa.Date, nullable=True),
    sa.Column("followup_resolved", sa.Boolean, nullable=True),
    sa.Column("satisfaction", sa.Integer, nullable=True),
    sa.Column("followup_at", UTCDateTime, nullable=True),
    sa.Column("case_opened_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

ticket_events = sa.Table(
    "ticket_events",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ticket_id", sa.String(24), nullable=False, index=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
)

tech_hours = sa.Table(
    "tech_hours",
    METADATA,
    sa.Column("technician", sa.String(128), primary_key=True),
    sa.Column("hour_start", UTCDateTime, primary_key=True),
    sa.Column("ticket_id", sa.String(24), nullable=False, index=True),
)

tech_day_visits = sa.Table(
    "tech_day_visits",
    METADATA,
    sa.Column("technician", sa.String(128), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("visit_no", sa.Integer, primary_key=True),
    sa.Column("ticket_id", sa.String(24), nullable=False, unique=True),
)

contract_visits = sa.Table(
    "contract_visits",
    METADATA,
    sa.Column("contract_id", sa.String(40), primary_key=True),
    sa.Column("visit_no", sa.Integer, primary_key=True),
    sa.Column("ticket_id", sa.String(24), nullable=False, unique=True),
    sa.Column("used_at", UTCDateTime, nullable=False),
)
