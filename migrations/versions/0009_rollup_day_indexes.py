"""account rollup day index: incremental passes read the current day's rows by day

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 06:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_account_event_days_day", "account_event_days", ["day"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_account_event_days_day", table_name="account_event_days")
