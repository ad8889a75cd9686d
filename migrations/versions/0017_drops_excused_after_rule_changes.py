"""account_scores.drop_excused: Ice Cold only because the scoring rules changed

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("account_scores", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("drop_excused", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("account_scores", schema=None) as batch_op:
        batch_op.drop_column("drop_excused")
