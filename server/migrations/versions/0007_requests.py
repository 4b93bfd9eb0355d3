"""Requests the relay sent to agents (a result must answer one), and case indexes for the
per-agent quotas and paged case listings.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

This file is frozen history: it does not import the store's table definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(100), nullable=False),
        sa.Column("case_number", sa.String(32), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_by", sa.String(100), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name="pk_requests"),
    )
    op.create_index("ix_cases_agent_id_opened_at", "cases", ["agent_id", "opened_at"])
    op.create_index("ix_cases_opened_at", "cases", ["opened_at"])
    op.create_index("ix_cases_customer_id_opened_at", "cases", ["customer_id", "opened_at"])


def downgrade() -> None:
    op.drop_index("ix_cases_customer_id_opened_at", table_name="cases")
    op.drop_index("ix_cases_opened_at", table_name="cases")
    op.drop_index("ix_cases_agent_id_opened_at", table_name="cases")
    op.drop_table("requests")
