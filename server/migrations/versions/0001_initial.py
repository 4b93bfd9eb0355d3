"""Initial schema: customers, enrollment tokens, agents, technicians, cases, results.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Portable types only (SQLite and PostgreSQL). Constraint names follow the naming convention of
``server.store.METADATA`` so later migrations (and SQLite batch mode) can address them.
This file is frozen history: it does not import the store's table definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("city", sa.String(100), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("name", "kind", "city", name=op.f("uq_customers_name_kind_city")),
        sa.CheckConstraint(
            "kind IN ('individual', 'small-business', 'enterprise')", name=op.f("ck_customers_kind")
        ),
    )
    op.create_table(
        "agents",
        sa.Column("agent_id", sa.String(100), nullable=False),
        sa.Column("customer_id", sa.Integer, nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("os", sa.String(255), nullable=False),
        sa.Column("software", sa.Text, nullable=False),
        _ts("enrolled_at"),
        _ts("last_seen", nullable=True),
        _ts("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_agents")),
        sa.UniqueConstraint("public_key", name=op.f("uq_agents_public_key")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_agents_customer_id_customers")
        ),
    )
    op.create_table(
        "enroll_tokens",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("secret_hash", sa.LargeBinary(64), nullable=False),
        sa.Column("customer_id", sa.Integer, nullable=False),
        _ts("expires_at"),
        _ts("created_at"),
        _ts("used_at", nullable=True),
        sa.Column("agent_id", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enroll_tokens")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_enroll_tokens_secret_hash")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_enroll_tokens_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.agent_id"], name=op.f("fk_enroll_tokens_agent_id_agents")
        ),
    )
    op.create_table(
        "technicians",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_fingerprint", sa.String(200), nullable=False),
        _ts("valid_before"),
        _ts("added_at"),
        _ts("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_technicians")),
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("number_day", sa.String(8), nullable=False),
        sa.Column("number_seq", sa.Integer, nullable=False),
        sa.Column("agent_id", sa.String(100), nullable=False),
        sa.Column("customer_id", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        _ts("opened_at"),
        _ts("updated_at"),
        sa.Column("open_request_id", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        sa.UniqueConstraint("number", name=op.f("uq_cases_number")),
        sa.UniqueConstraint(
            "number_day", "number_seq", name=op.f("uq_cases_number_day_number_seq")
        ),
        sa.UniqueConstraint(
            "agent_id", "open_request_id", name=op.f("uq_cases_agent_id_open_request_id")
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.agent_id"], name=op.f("fk_cases_agent_id_agents")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_cases_customer_id_customers")
        ),
    )
    op.create_index(op.f("ix_cases_state"), "cases", ["state"])
    op.create_table(
        "case_events",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("case_id", sa.Integer, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        _ts("at"),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_events")),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_events_case_id_cases")
        ),
    )
    op.create_index(op.f("ix_case_events_case_id"), "case_events", ["case_id"])
    op.create_table(
        "results",
        sa.Column("msg_id", sa.String(100), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("case_id", sa.Integer, nullable=False),
        sa.Column("agent_id", sa.String(100), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        _ts("received_at"),
        sa.PrimaryKeyConstraint("msg_id", name=op.f("pk_results")),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_results_case_id_cases")),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.agent_id"], name=op.f("fk_results_agent_id_agents")
        ),
    )
    op.create_index(op.f("ix_results_case_id"), "results", ["case_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_results_case_id"), table_name=op.f("results"))
    op.drop_table("results")
    op.drop_index(op.f("ix_case_events_case_id"), table_name=op.f("case_events"))
    op.drop_table("case_events")
    op.drop_index(op.f("ix_cases_state"), table_name=op.f("cases"))
    op.drop_table("cases")
    op.drop_table("technicians")
    op.drop_table("enroll_tokens")
    op.drop_table("agents")
    op.drop_table("customers")
