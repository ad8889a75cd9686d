"""per-key ingestion windows

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27 09:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ingest_windows",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["write_keys.id"],
            name=op.f("fk_ingest_windows_key_id_write_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", "window_start", name=op.f("pk_ingest_windows")),
    )


def downgrade() -> None:
    op.drop_table("ingest_windows")
