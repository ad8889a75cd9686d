"""account_scores: fit score, band and reason

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("account_scores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fit_score", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("fit_band", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("fit_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("account_scores", schema=None) as batch_op:
        batch_op.drop_column("fit_reason")
        batch_op.drop_column("fit_band")
        batch_op.drop_column("fit_score")
