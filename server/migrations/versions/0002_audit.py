"""Audit log, consent receipts, revoked technician keys.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

- ``audit``: the hash-chained audit log (``server/audit.py``); ids are assigned by the store
  (previous + 1) because they are hashed, and ``prev_hash`` is unique so the chain cannot fork.
- ``consent_receipts``: agent-signed consent receipts, kept exactly as signed.
- ``revoked_tech_keys``: every technician key fingerprint ever revoked or replaced, seeded
  from the technicians already revoked.

This file is frozen history: it does not import the store's table definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        _ts("at"),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_audit_prev_hash")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_audit_subject"), "audit", ["subject"])
    op.create_table(
        "consent_receipts",
        sa.Column("receipt_id", sa.String(100), nullable=False),
        sa.Column("agent_id", sa.String(100), nullable=False),
        sa.Column("case_number", sa.String(32), nullable=False),
        sa.Column("tech", sa.String(100), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        _ts("granted_at"),
        _ts("expires_at"),
        _ts("revoked_at", nullable=True),
        _ts("received_at"),
        sa.PrimaryKeyConstraint("receipt_id", name=op.f("pk_consent_receipts")),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.agent_id"], name=op.f("fk_consent_receipts_agent_id_agents")
        ),
    )
    op.create_index(op.f("ix_consent_receipts_agent_id"), "consent_receipts", ["agent_id"])
    op.create_index(
        op.f("ix_consent_receipts_case_number"), "consent_receipts", ["case_number"]
    )
    revoked_tech_keys = op.create_table(
        "revoked_tech_keys",
        sa.Column("key_fingerprint", sa.String(200), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        _ts("revoked_at"),
        sa.PrimaryKeyConstraint("key_fingerprint", name=op.f("pk_revoked_tech_keys")),
    )
    technicians = sa.table(
        "technicians",
        sa.column("name", sa.String),
        sa.column("key_fingerprint", sa.String),
        sa.column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.execute(
        sa.insert(revoked_tech_keys).from_select(
            ["key_fingerprint", "name", "revoked_at"],
            sa.select(
                technicians.c.key_fingerprint,
                sa.func.min(technicians.c.name),
                sa.func.min(technicians.c.revoked_at),
            )
            .where(technicians.c.revoked_at.is_not(None))
            .group_by(technicians.c.key_fingerprint),
        )
    )


def downgrade() -> None:
    op.drop_table("revoked_tech_keys")
    op.drop_index(op.f("ix_consent_receipts_case_number"), table_name="consent_receipts")
    op.drop_index(op.f("ix_consent_receipts_agent_id"), table_name="consent_receipts")
    op.drop_table("consent_receipts")
    op.drop_index(op.f("ix_audit_subject"), table_name="audit")
    op.drop_table("audit")
