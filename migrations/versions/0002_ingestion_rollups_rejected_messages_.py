"""ingestion: rollups, rejected messages, user current account, events by receipt time

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 06:24:28.886257
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rejected_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("received_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("message_id", sa.String(length=100), nullable=True),
        sa.Column(
            "errors",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("payload_excerpt", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_rejected_messages_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_messages")),
    )
    with op.batch_alter_table("rejected_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_rejected_messages_tenant_id_received_at", ["tenant_id", "received_at"], unique=False
        )

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_tenant_id_received_at", ["tenant_id", "received_at"], unique=False
        )

    op.create_table(
        "account_event_days",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_account_event_days_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_account_event_days_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_account_event_days_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "event", "day", "user_id", name=op.f("pk_account_event_days")
        ),
    )
    with op.batch_alter_table("account_event_days", schema=None) as batch_op:
        batch_op.create_index("ix_account_event_days_user_id", ["user_id"], unique=False)

    op.create_table(
        "user_event_days",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_user_event_days_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_event_days_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "event", "day", name=op.f("pk_user_event_days")),
    )
    # changed_at is NOT NULL: add it empty, fill existing rows from last_seen_at, then tighten.
    for table in ("accounts", "users"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("changed_at", app.models.UTCDateTime(), nullable=True))
        op.execute(f"UPDATE {table} SET changed_at = last_seen_at")
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "changed_at", existing_type=app.models.UTCDateTime(), nullable=False
            )

    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_accounts_changed_at"), ["changed_at"], unique=False)

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("current_account_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_users_changed_at"), ["changed_at"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_users_current_account_id_accounts"),
            "accounts",
            ["current_account_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_users_current_account_id_accounts"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_users_changed_at"))
        batch_op.drop_column("changed_at")
        batch_op.drop_column("current_account_id")

    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_changed_at"))
        batch_op.drop_column("changed_at")

    op.drop_table("user_event_days")
    with op.batch_alter_table("account_event_days", schema=None) as batch_op:
        batch_op.drop_index("ix_account_event_days_user_id")

    op.drop_table("account_event_days")
    with op.batch_alter_table("rejected_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_rejected_messages_tenant_id_received_at")

    op.drop_table("rejected_messages")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_tenant_id_received_at")
