"""Technician roles (for listing) and case owners.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

This file is frozen history: it does not import the store's table definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("technicians") as batch:
        batch.add_column(sa.Column("roles", sa.String(200), nullable=True))
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("owner", sa.String(100), nullable=True))
        batch.create_index("ix_cases_owner", ["owner"])


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_index("ix_cases_owner")
        batch.drop_column("owner")
    with op.batch_alter_table("technicians") as batch:
        batch.drop_column("roles")
