"""Every tenant-owned table's primary key and foreign keys lead with tenant_id (shard-ready)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01 07:00:00

A database distributed by tenant (Citus or a managed equivalent) needs the distribution column
in every primary key, unique key and foreign key between distributed tables. Tables known by an
id of their own get (tenant_id, id) as primary key; tables keyed by other columns get tenant_id
in front; foreign keys between tenant tables become (tenant_id, x) -> (tenant_id, id).

Foreign keys that were ON DELETE SET NULL (events and users pointing at users and accounts)
become plain (NO ACTION): SET NULL on a composite key would null the tenant too. Users are only
deleted by a privacy deletion, which deletes their events and clears merges first, or with
their tenant; accounts only with their tenant.

SQLite keeps ``id INTEGER PRIMARY KEY`` on tables known by an id (its only auto-increment; a
SQLite database is one file and is never distributed), with a unique index on (tenant_id, id)
on the tables the new foreign keys point at.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWN_ID = [
    "accounts",
    "users",
    "events",
    "rejected_messages",
    "definitions_versions",
    "scoring_runs",
    "crm_records",
    "cs_tasks",
    "triggers",
    "scoring_jobs",
    "deliveries",
]
# Tables keyed by other columns: the key before.
KEYED = {
    "account_memberships": ["account_id", "user_id"],
    "user_event_days": ["user_id", "event", "day"],
    "account_event_days": ["account_id", "event", "day", "user_id"],
    "account_scores": ["account_id"],
    "user_scores": ["user_id"],
    "score_history": ["subject", "subject_id", "day"],
}
# (table, column, referred table, ondelete before, ondelete after)
FOREIGN_KEYS = [
    ("users", "merged_into_id", "users", "SET NULL", None),
    ("users", "current_account_id", "accounts", "SET NULL", None),
    ("account_memberships", "account_id", "accounts", "CASCADE", "CASCADE"),
    ("account_memberships", "user_id", "users", "CASCADE", "CASCADE"),
    ("events", "user_id", "users", "SET NULL", None),
    ("events", "account_id", "accounts", "SET NULL", None),
    ("user_event_days", "user_id", "users", "CASCADE", "CASCADE"),
    ("account_event_days", "account_id", "accounts", "CASCADE", "CASCADE"),
    ("account_event_days", "user_id", "users", "CASCADE", "CASCADE"),
    ("account_scores", "account_id", "accounts", "CASCADE", "CASCADE"),
    ("user_scores", "user_id", "users", "CASCADE", "CASCADE"),
    ("cs_tasks", "account_id", "accounts", "CASCADE", "CASCADE"),
    ("handoffs", "account_id", "accounts", "CASCADE", "CASCADE"),
    ("deliveries", "trigger_id", "triggers", "CASCADE", "CASCADE"),
]
# Made redundant by a primary key that now leads with tenant_id.
REDUNDANT_INDEXES = [
    ("ix_account_memberships_tenant_id", "account_memberships"),
    ("ix_user_scores_tenant_id", "user_scores"),
]
REFERRED = sorted({referred for _, _, referred, _, _ in FOREIGN_KEYS})


def _old_fk(table: str, column: str, referred: str) -> str:
    return f"fk_{table}_{column}_{referred}"


def _new_fk(table: str, referred: str) -> str:
    return f"fk_{table}_tenant_id_{referred}"


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _tables() -> list[str]:
    """Every table this migration changes, parents first."""
    names = list(KEYED) + [t for t, _, _, _, _ in FOREIGN_KEYS] + OWN_ID
    order = {t: i for i, t in enumerate(["accounts", "users", "triggers"])}
    return sorted(set(names), key=lambda t: (order.get(t, 99), t))


def upgrade() -> None:
    sqlite = _sqlite()
    if not sqlite:
        for table, column, referred, _, _ in FOREIGN_KEYS:
            op.drop_constraint(_old_fk(table, column, referred), table, type_="foreignkey")
        for name, table in REDUNDANT_INDEXES:
            op.drop_index(name, table_name=table)
        for table in OWN_ID:
            op.drop_constraint(f"pk_{table}", table, type_="primary")
            op.create_primary_key(f"pk_{table}", table, ["tenant_id", "id"])
        for table, columns in KEYED.items():
            op.drop_constraint(f"pk_{table}", table, type_="primary")
            op.create_primary_key(f"pk_{table}", table, ["tenant_id", *columns])
        for table, column, referred, _, ondelete in FOREIGN_KEYS:
            op.create_foreign_key(
                _new_fk(table, referred),
                table,
                referred,
                ["tenant_id", column],
                ["tenant_id", "id"],
                ondelete=ondelete,
            )
        return
    for name, table in REDUNDANT_INDEXES:
        op.drop_index(name, table_name=table)
    for table in REFERRED:
        op.create_index(f"uq_{table}_tenant_id_id", table, ["tenant_id", "id"], unique=True)
    for table in _tables():
        keys = [fk for fk in FOREIGN_KEYS if fk[0] == table]
        if table not in KEYED and not keys:
            continue
        with op.batch_alter_table(table, recreate="always") as batch_op:
            for _, column, referred, _, _ in keys:
                batch_op.drop_constraint(_old_fk(table, column, referred), type_="foreignkey")
            if table in KEYED:
                batch_op.drop_constraint(f"pk_{table}", type_="primary")
                batch_op.create_primary_key(f"pk_{table}", ["tenant_id", *KEYED[table]])
            for _, column, referred, _, ondelete in keys:
                batch_op.create_foreign_key(
                    _new_fk(table, referred),
                    referred,
                    ["tenant_id", column],
                    ["tenant_id", "id"],
                    ondelete=ondelete,
                )


def downgrade() -> None:
    sqlite = _sqlite()
    if not sqlite:
        for table, _, referred, _, _ in FOREIGN_KEYS:
            op.drop_constraint(_new_fk(table, referred), table, type_="foreignkey")
        for table, columns in KEYED.items():
            op.drop_constraint(f"pk_{table}", table, type_="primary")
            op.create_primary_key(f"pk_{table}", table, columns)
        for table in OWN_ID:
            op.drop_constraint(f"pk_{table}", table, type_="primary")
            op.create_primary_key(f"pk_{table}", table, ["id"])
        for table, column, referred, ondelete, _ in FOREIGN_KEYS:
            op.create_foreign_key(
                _old_fk(table, column, referred),
                table,
                referred,
                [column],
                ["id"],
                ondelete=ondelete,
            )
    else:
        for table in _tables():
            keys = [fk for fk in FOREIGN_KEYS if fk[0] == table]
            if table not in KEYED and not keys:
                continue
            with op.batch_alter_table(table, recreate="always") as batch_op:
                for _, _, referred, _, _ in keys:
                    batch_op.drop_constraint(_new_fk(table, referred), type_="foreignkey")
                if table in KEYED:
                    batch_op.drop_constraint(f"pk_{table}", type_="primary")
                    batch_op.create_primary_key(f"pk_{table}", KEYED[table])
                for _, column, referred, ondelete, _ in keys:
                    batch_op.create_foreign_key(
                        _old_fk(table, column, referred),
                        referred,
                        [column],
                        ["id"],
                        ondelete=ondelete,
                    )
        for table in REFERRED:
            op.drop_index(f"uq_{table}_tenant_id_id", table_name=table)
    op.create_index(
        "ix_account_memberships_tenant_id", "account_memberships", ["tenant_id"], unique=False
    )
    op.create_index("ix_user_scores_tenant_id", "user_scores", ["tenant_id"], unique=False)
