"""activity_bases: fillfactor 70 on PostgreSQL, room for the daily pass's in-place updates

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-01 11:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Pages written from now on keep the room; the next full rebuild rewrites them all.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE activity_bases SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE activity_bases RESET (fillfactor)")
