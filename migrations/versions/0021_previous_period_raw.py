"""account_scores, user_scores: the previous period's raw engagement, kept for the day

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-01 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("account_scores", "user_scores"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("previous_raw", sa.Double(), nullable=True))


def downgrade() -> None:
    for table in ("account_scores", "user_scores"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("previous_raw")
