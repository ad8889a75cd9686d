"""lead type, chance to convert and forecast are empty for paying accounts

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("account_scores", schema=None) as batch_op:
        batch_op.alter_column("lead_type", existing_type=sa.String(length=40), nullable=True)
        batch_op.alter_column("chance_to_convert", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("forecast_value", existing_type=sa.Double(), nullable=True)


def downgrade() -> None:
    op.execute(
        "UPDATE account_scores SET lead_type = '', chance_to_convert = 0, forecast_value = 0 "
        "WHERE lead_type IS NULL"
    )
    with op.batch_alter_table("account_scores", schema=None) as batch_op:
        batch_op.alter_column("forecast_value", existing_type=sa.Double(), nullable=False)
        batch_op.alter_column("chance_to_convert", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("lead_type", existing_type=sa.String(length=40), nullable=False)
