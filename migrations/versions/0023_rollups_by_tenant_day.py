"""rollups: both daily rollup tables indexed by (tenant_id, day)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-01 13:10:00

user_event_days gets ix_user_event_days_tenant_id_day: an incremental pass reads the current
day's rollups of the users it rescores, and the daily pass the few days that join or leave the
time frames; through the primary key (tenant, user, event, day) that walked every day of each
user (0.37 s for 10,000 users at 10M events, 0.02 s by day), and the daily move read the
whole table. ix_account_event_days_day (day) becomes ix_account_event_days_tenant_id_day
(tenant_id, day): the same reads, without stepping over other tenants' rows of those days.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_user_event_days_tenant_id_day", "user_event_days", ["tenant_id", "day"])
    op.create_index(
        "ix_account_event_days_tenant_id_day", "account_event_days", ["tenant_id", "day"]
    )
    op.drop_index("ix_account_event_days_day", table_name="account_event_days")


def downgrade() -> None:
    op.create_index("ix_account_event_days_day", "account_event_days", ["day"])
    op.drop_index("ix_account_event_days_tenant_id_day", table_name="account_event_days")
    op.drop_index("ix_user_event_days_tenant_id_day", table_name="user_event_days")
