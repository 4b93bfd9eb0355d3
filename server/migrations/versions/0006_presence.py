"""Agent presence for several server nodes: which node holds an agent, until when.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

This file is frozen history: it does not import the store's table definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_presence",
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agent_id", name="pk_agent_presence"),
    )
    op.create_index("ix_agent_presence_node_id", "agent_presence", ["node_id"])


def downgrade() -> None:
    op.drop_index("ix_agent_presence_node_id", table_name="agent_presence")
    op.drop_table("agent_presence")
