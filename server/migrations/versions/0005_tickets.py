"""On-site service: field technicians, tickets and their history, and the booking tables
that make double booking and double use of a free visit impossible in the database.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

This file is frozen history: it does not import the store's table definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "field_techs",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("base", sa.String(100), nullable=False),
        sa.Column("skills", sa.String(1000), nullable=False),
        sa.Column("daily_capacity", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_field_techs"),
    )
    op.create_table(
        "tickets",
        sa.Column("ticket_id", sa.String(24), nullable=False),
        sa.Column("case_number", sa.String(32), nullable=False),
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
        sa.Column("booked_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("booked_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("technician", sa.String(128), nullable=True),
        sa.Column("accepted_by", sa.String(128), nullable=True),
        sa.Column("acceptance", sa.LargeBinary, nullable=True),
        sa.Column("acceptance_sig", sa.LargeBinary, nullable=True),
        sa.Column("total", sa.Integer, nullable=True),
        sa.Column("free_visit", sa.Boolean, nullable=False),
        sa.Column("resolved", sa.Boolean, nullable=True),
        sa.Column("root_cause", sa.String(32), nullable=True),
        sa.Column("signoff_note", sa.Text, nullable=False),
        sa.Column("signoff_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fee", sa.Integer, nullable=True),
        sa.Column("confirmation", sa.LargeBinary, nullable=True),
        sa.Column("confirmation_sig", sa.LargeBinary, nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("followup_due", sa.Date, nullable=True),
        sa.Column("followup_resolved", sa.Boolean, nullable=True),
        sa.Column("satisfaction", sa.Integer, nullable=True),
        sa.Column("followup_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("case_opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_tickets"),
    )
    op.create_index("ix_tickets_case_number", "tickets", ["case_number"])
    op.create_table(
        "ticket_events",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("ticket_id", sa.String(24), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_events"),
    )
    op.create_index("ix_ticket_events_ticket_id", "ticket_events", ["ticket_id"])
    op.create_table(
        "tech_hours",
        sa.Column("technician", sa.String(128), nullable=False),
        sa.Column("hour_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ticket_id", sa.String(24), nullable=False),
        sa.PrimaryKeyConstraint("technician", "hour_start", name="pk_tech_hours"),
    )
    op.create_index("ix_tech_hours_ticket_id", "tech_hours", ["ticket_id"])
    op.create_table(
        "tech_day_visits",
        sa.Column("technician", sa.String(128), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("visit_no", sa.Integer, nullable=False),
        sa.Column("ticket_id", sa.String(24), nullable=False),
        sa.PrimaryKeyConstraint("technician", "day", "visit_no", name="pk_tech_day_visits"),
        sa.UniqueConstraint("ticket_id", name="uq_tech_day_visits_ticket_id"),
    )
    op.create_table(
        "contract_visits",
        sa.Column("contract_id", sa.String(40), nullable=False),
        sa.Column("visit_no", sa.Integer, nullable=False),
        sa.Column("ticket_id", sa.String(24), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("contract_id", "visit_no", name="pk_contract_visits"),
        sa.UniqueConstraint("ticket_id", name="uq_contract_visits_ticket_id"),
    )


def downgrade() -> None:
    op.drop_table("contract_visits")
    op.drop_table("tech_day_visits")
    op.drop_table("tech_hours")
    op.drop_table("ticket_events")
    op.drop_table("tickets")
    op.drop_table("field_techs")
