"""crm_pending on score rows: the push reads only rows written since it last looked

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 06:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("account_scores", "user_scores"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("crm_pending", sa.Boolean(), server_default=sa.true(), nullable=False)
            )


def downgrade() -> None:
    for table in ("account_scores", "user_scores"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("crm_pending")
