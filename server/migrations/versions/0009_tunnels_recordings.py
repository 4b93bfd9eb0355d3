"""Brokered tunnels, and recordings bound to them and sealed at rest.

Table ``tunnels``: every SSH tunnel the server brokered (agent, case, technician, key
fingerprint, opened, closed). Table ``recordings`` gains ``tunnel_id`` and
``key_fingerprint`` (taken from the tunnel, NULL on older rows), ``sealed`` (the data is
sealed to the recording key; older rows are plaintext, ``false``) and an index on
``(agent_id, received_at)`` for the per-agent quotas.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

This file is frozen history: it does not import the store's table definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tunnels",
        sa.Column("tunnel_id", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("case_number", sa.String(32), nullable=False),
        sa.Column("tech", sa.String(128), nullable=False),
        sa.Column("key_fingerprint", sa.String(128), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tunnel_id", name="pk_tunnels"),
    )
    op.create_index("ix_tunnels_agent_id_case_number", "tunnels", ["agent_id", "case_number"])
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("tunnel_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("key_fingerprint", sa.String(128), nullable=True))
        batch.add_column(sa.Column("sealed", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
    op.create_index("ix_recordings_agent_id_received_at", "recordings",
                    ["agent_id", "received_at"])
    op.create_index("ix_recordings_tunnel_id", "recordings", ["tunnel_id"])


def downgrade() -> None:
    op.drop_index("ix_recordings_tunnel_id", table_name="recordings")
    op.drop_index("ix_recordings_agent_id_received_at", table_name="recordings")
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("sealed")
        batch.drop_column("key_fingerprint")
        batch.drop_column("tunnel_id")
    op.drop_index("ix_tunnels_agent_id_case_number", table_name="tunnels")
    op.drop_table("tunnels")
