"""CRM sync: records, owners, webhook events, CS tasks, cursors, shared rate windows

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"],
        ["tenants.id"],
        name=op.f(f"fk_{table}_tenant_id_tenants"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "rate_windows",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("grants", sa.JSON(), nullable=False),
        sa.Column("paused_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_windows")),
    )
    op.create_table(
        "crm_owners",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("archived", sa.Boolean(), nullable=False),
        _tenant_fk("crm_owners"),
        sa.PrimaryKeyConstraint("tenant_id", "owner_id", name=op.f("pk_crm_owners")),
    )
    op.create_table(
        "crm_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("object_type", sa.String(length=20), nullable=False),
        sa.Column("subject_id", sa.BigInteger(), nullable=False),
        sa.Column("crm_id", sa.String(length=64), nullable=True),
        sa.Column("pushed", JSON_DOC, nullable=False),
        sa.Column("pushed_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failed_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("crm_fields", JSON_DOC, nullable=False),
        sa.Column("pulled_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        _tenant_fk("crm_records"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_records")),
        sa.UniqueConstraint(
            "tenant_id",
            "object_type",
            "subject_id",
            name=op.f("uq_crm_records_tenant_id_object_type_subject_id"),
        ),
    )
    op.create_index(
        "ix_crm_records_tenant_id_object_type_crm_id",
        "crm_records",
        ["tenant_id", "object_type", "crm_id"],
        unique=False,
    )
    op.create_table(
        "crm_webhook_events",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", app.models.UTCDateTime(), nullable=False),
        _tenant_fk("crm_webhook_events"),
        sa.PrimaryKeyConstraint("tenant_id", "event_id", name=op.f("pk_crm_webhook_events")),
    )
    op.create_table(
        "sync_cursors",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        _tenant_fk("sync_cursors"),
        sa.PrimaryKeyConstraint("tenant_id", "name", name=op.f("pk_sync_cursors")),
    )
    op.create_table(
        "cs_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("drop_seen_on", sa.Date(), nullable=False),
        sa.Column("crm_task_id", sa.String(length=64), nullable=True),
        sa.Column("owner_id", sa.String(length=64), nullable=True),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("resolved_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_cs_tasks_account_id_accounts"),
            ondelete="CASCADE",
        ),
        _tenant_fk("cs_tasks"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cs_tasks")),
        sa.UniqueConstraint(
            "tenant_id",
            "account_id",
            "drop_seen_on",
            name=op.f("uq_cs_tasks_tenant_id_account_id_drop_seen_on"),
        ),
    )


def downgrade() -> None:
    op.drop_table("cs_tasks")
    op.drop_table("sync_cursors")
    op.drop_table("crm_webhook_events")
    op.drop_index("ix_crm_records_tenant_id_object_type_crm_id", table_name="crm_records")
    op.drop_table("crm_records")
    op.drop_table("crm_owners")
    op.drop_table("rate_windows")
