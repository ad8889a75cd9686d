"""scoring jobs (runs and previews asked for by admins)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 01:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "scoring_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=255), nullable=True),
        sa.Column("requested_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("started_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("finished_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_scoring_jobs_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scoring_jobs")),
    )
    with op.batch_alter_table("scoring_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_scoring_jobs_tenant_id_status", ["tenant_id", "status"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("scoring_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_scoring_jobs_tenant_id_status")
    op.drop_table("scoring_jobs")
