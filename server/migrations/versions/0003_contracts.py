"""Service contracts (enterprise free on-site visits per period, then a contract rate).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

This file is frozen history: it does not import the store's table definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "contracts",
        sa.Column("contract_id", sa.String(40), nullable=False),
        sa.Column("customer", sa.String(200), nullable=False),
        sa.Column("free_visits", sa.Integer, nullable=False),
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("valid_to", sa.Date, nullable=False),
        sa.Column("rate", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("contract_id", name="pk_contracts"),
    )


def downgrade() -> None:
    op.drop_table("contracts")
