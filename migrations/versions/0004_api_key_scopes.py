"""api key scopes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 06:54:53.381925
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("write_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scope", sa.String(length=10), server_default="write", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("write_keys", schema=None) as batch_op:
        batch_op.drop_column("scope")
