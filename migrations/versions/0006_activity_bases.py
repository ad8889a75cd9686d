"""activity bases: per-subject activity before the basis day, for incremental scoring

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 05:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "activity_bases",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=1), nullable=False),
        sa.Column("subject_id", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.String(length=255), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=True),
        sa.Column("last_day", sa.Date(), nullable=True),
        sa.Column("in_1", sa.BigInteger(), nullable=False),
        sa.Column("in_7", sa.BigInteger(), nullable=False),
        sa.Column("in_30", sa.BigInteger(), nullable=False),
        sa.Column("users", sa.JSON(), nullable=True),
        sa.Column("active_days", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_activity_bases_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "subject", "subject_id", "event", name=op.f("pk_activity_bases")
        ),
    )
    with op.batch_alter_table("scoring_runs") as batch:
        batch.add_column(sa.Column("basis_day", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scoring_runs") as batch:
        batch.drop_column("basis_day")
    op.drop_table("activity_bases")
