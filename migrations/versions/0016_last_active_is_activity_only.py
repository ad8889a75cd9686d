"""last_active_at on users and accounts: the last track, page or screen only

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 02:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVITY = "('track', 'page', 'screen')"


def upgrade() -> None:
    for table in ("users", "accounts"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("last_active_at", app.models.UTCDateTime(), nullable=True)
            )
    # From the stored events (identify and group calls are not activity).
    op.execute(
        "UPDATE users SET last_active_at = (SELECT max(events.timestamp) FROM events "
        f"WHERE events.user_id = users.id AND events.type IN {ACTIVITY})"
    )
    op.execute(
        "UPDATE accounts SET last_active_at = (SELECT max(events.timestamp) FROM events "
        f"WHERE events.account_id = accounts.id AND events.type IN {ACTIVITY})"
    )


def downgrade() -> None:
    for table in ("accounts", "users"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("last_active_at")
