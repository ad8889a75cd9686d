"""events: the user index also orders by time

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01 07:20:00

ix_events_user_id (user_id) becomes ix_events_user_id_timestamp (user_id, timestamp): the same
lookups by user, and the Activation moments of a first pass read one day of one user's events
instead of all of them (at ten million events, most of a first pass).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_events_user_id_timestamp", "events", ["user_id", "timestamp"])
    op.drop_index("ix_events_user_id", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_user_id", "events", ["user_id"])
    op.drop_index("ix_events_user_id_timestamp", table_name="events")
