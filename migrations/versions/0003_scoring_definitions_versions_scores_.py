"""scoring: definitions versions, scores, history, runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 06:52:56.939197
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "definitions_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "document",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_definitions_versions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_definitions_versions")),
        sa.UniqueConstraint(
            "tenant_id", "version", name=op.f("uq_definitions_versions_tenant_id_version")
        ),
    )
    op.create_table(
        "score_history",
        sa.Column("subject", sa.String(length=1), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("engagement_score", sa.SmallInteger(), nullable=False),
        sa.Column("activation_rate", sa.SmallInteger(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_score_history_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subject", "subject_id", "day", name=op.f("pk_score_history")),
    )
    with op.batch_alter_table("score_history", schema=None) as batch_op:
        batch_op.create_index("ix_score_history_tenant_id_day", ["tenant_id", "day"], unique=False)

    op.create_table(
        "scoring_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.Column("started_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("finished_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("definitions_version", sa.Integer(), nullable=False),
        sa.Column("accounts", sa.Integer(), nullable=False),
        sa.Column("users", sa.Integer(), nullable=False),
        sa.Column(
            "percentiles",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_scoring_runs_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scoring_runs")),
    )
    with op.batch_alter_table("scoring_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_scoring_runs_tenant_id_started_at", ["tenant_id", "started_at"], unique=False
        )

    op.create_table(
        "account_scores",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("active_users", sa.Integer(), nullable=False),
        sa.Column("total_users", sa.Integer(), nullable=False),
        sa.Column("activated_users", sa.Integer(), nullable=False),
        sa.Column("average_user_activation", sa.Double(), nullable=False),
        sa.Column("pql", sa.Boolean(), nullable=False),
        sa.Column("pql_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("pql_kind", sa.String(length=30), nullable=True),
        sa.Column("pql_reason", sa.Text(), nullable=False),
        sa.Column("deal_size", sa.String(length=10), nullable=True),
        sa.Column("lead_type", sa.String(length=40), nullable=False),
        sa.Column("chance_to_convert", sa.Integer(), nullable=False),
        sa.Column("forecast_value", sa.Double(), nullable=False),
        sa.Column("definitions_version", sa.Integer(), nullable=False),
        sa.Column("computed_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("profile", sa.String(length=80), nullable=False),
        sa.Column("activation_rate", sa.Double(), nullable=False),
        sa.Column("activated", sa.Boolean(), nullable=False),
        sa.Column("activated_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("next_step", sa.String(length=120), nullable=True),
        sa.Column(
            "steps_done",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("engagement_raw", sa.Double(), nullable=False),
        sa.Column("engagement_score", sa.Double(), nullable=False),
        sa.Column("engagement_segment", sa.String(length=40), nullable=False),
        sa.Column("trend_change", sa.Double(), nullable=True),
        sa.Column("trend_segment", sa.String(length=20), nullable=True),
        sa.Column("adoption_rate", sa.Double(), nullable=False),
        sa.Column("adoption_rate_ever", sa.Double(), nullable=False),
        sa.Column("active_days", sa.Integer(), nullable=False),
        sa.Column("last_active_at", app.models.UTCDateTime(), nullable=True),
        sa.Column(
            "segments",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_account_scores_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_account_scores_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_scores")),
    )
    with op.batch_alter_table("account_scores", schema=None) as batch_op:
        batch_op.create_index(
            "ix_account_scores_tenant_id_engagement",
            ["tenant_id", "engagement_score"],
            unique=False,
        )

    op.create_table(
        "user_scores",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("definitions_version", sa.Integer(), nullable=False),
        sa.Column("computed_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("profile", sa.String(length=80), nullable=False),
        sa.Column("activation_rate", sa.Double(), nullable=False),
        sa.Column("activated", sa.Boolean(), nullable=False),
        sa.Column("activated_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("next_step", sa.String(length=120), nullable=True),
        sa.Column(
            "steps_done",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("engagement_raw", sa.Double(), nullable=False),
        sa.Column("engagement_score", sa.Double(), nullable=False),
        sa.Column("engagement_segment", sa.String(length=40), nullable=False),
        sa.Column("trend_change", sa.Double(), nullable=True),
        sa.Column("trend_segment", sa.String(length=20), nullable=True),
        sa.Column("adoption_rate", sa.Double(), nullable=False),
        sa.Column("adoption_rate_ever", sa.Double(), nullable=False),
        sa.Column("active_days", sa.Integer(), nullable=False),
        sa.Column("last_active_at", app.models.UTCDateTime(), nullable=True),
        sa.Column(
            "segments",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_user_scores_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_scores_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_scores")),
    )
    with op.batch_alter_table("user_scores", schema=None) as batch_op:
        batch_op.create_index("ix_user_scores_tenant_id", ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("user_scores", schema=None) as batch_op:
        batch_op.drop_index("ix_user_scores_tenant_id")

    op.drop_table("user_scores")
    with op.batch_alter_table("account_scores", schema=None) as batch_op:
        batch_op.drop_index("ix_account_scores_tenant_id_engagement")

    op.drop_table("account_scores")
    with op.batch_alter_table("scoring_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_scoring_runs_tenant_id_started_at")

    op.drop_table("scoring_runs")
    with op.batch_alter_table("score_history", schema=None) as batch_op:
        batch_op.drop_index("ix_score_history_tenant_id_day")

    op.drop_table("score_history")
    op.drop_table("definitions_versions")
