import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from app import migrate
from app.db import make_engine
from app.models import Base


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_to_base_and_upgrade_again(db_factory):
    url = db_factory.new_url()
    migrate.upgrade(url)
    assert _tables(url) == set(Base.metadata.tables)
    migrate.downgrade(url, "base")
    assert _tables(url) == set()
    migrate.upgrade(url)
    assert _tables(url) == set(Base.metadata.tables)


def _sqlite_stand_ins(diff: list) -> tuple[list, set[str]]:
    """SQLite keeps ``id INTEGER PRIMARY KEY`` (its auto-increment) where the models say
    (tenant_id, id), with a unique index on (tenant_id, id) on the tables foreign keys point
    at: those indexes are the only difference the models do not declare."""
    stand_ins, rest = set(), []
    for change in diff:
        if (
            change[0] == "remove_index"
            and change[1].name == f"uq_{change[1].table.name}_tenant_id_id"
            and [c.name for c in change[1].columns] == ["tenant_id", "id"]
            and change[1].unique
        ):
            stand_ins.add(change[1].table.name)
        else:
            rest.append(change)
    return rest, stand_ins


def test_migrations_produce_exactly_the_models_schema(db_factory):
    url = db_factory.new_url()
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
            if connection.dialect.name == "sqlite":
                diff, stand_ins = _sqlite_stand_ins(diff)
                assert stand_ins == {"accounts", "users", "triggers"}
            assert diff == []
    finally:
        engine.dispose()


def _tenant(connection, seen: str) -> None:
    from sqlalchemy import text

    connection.execute(
        text(
            "INSERT INTO tenants (id, name, crm, status, settings, created_at, updated_at)"
            " VALUES (1, 'A', 'none', 'active', '{}', :t, :t)"
        ),
        {"t": seen},
    )


def test_upgrade_keeps_existing_rows_and_backfills_new_columns(db_factory):
    from sqlalchemy import text

    url = db_factory.new_url()
    migrate.upgrade(url, "0001")
    engine = make_engine(url)
    seen = "2026-11-01 10:00:00"
    try:
        with engine.begin() as c:
            _tenant(c, seen)
            for table in ("accounts", "users"):
                c.execute(
                    text(
                        f"INSERT INTO {table} (tenant_id, external_id, traits, trait_times,"
                        " first_seen_at, last_seen_at) VALUES (1, 'x', '{}', '{}', :t, :t)"
                    ),
                    {"t": seen},
                )
        migrate.upgrade(url)
        with engine.connect() as c:
            for table in ("accounts", "users"):
                changed = c.execute(text(f"SELECT changed_at FROM {table}")).scalar_one()
                assert str(changed).startswith("2026-11-01 10:00:00")
    finally:
        engine.dispose()


def test_rebuilding_a_table_keeps_the_rows_that_point_at_it(db_factory):
    """0019 rebuilds users and accounts' children on SQLite (copy, drop, rename): the rows of
    other tables pointing at a rebuilt table survive it, both ways."""
    from sqlalchemy import text

    url = db_factory.new_url()
    migrate.upgrade(url, "0018")
    engine = make_engine(url)
    seen = "2026-11-01 10:00:00"
    tables = ("account_memberships", "user_event_days", "account_event_days", "events")
    try:
        with engine.begin() as c:
            _tenant(c, seen)
            for table in ("accounts", "users"):
                c.execute(
                    text(
                        f"INSERT INTO {table} (id, tenant_id, external_id, traits, trait_times,"
                        " first_seen_at, last_seen_at, changed_at)"
                        " VALUES (7, 1, 'x', '{}', '{}', :t, :t, :t)"
                    ),
                    {"t": seen},
                )
            c.execute(
                text(
                    "INSERT INTO account_memberships (tenant_id, account_id, user_id, created_at)"
                    " VALUES (1, 7, 7, :t)"
                ),
                {"t": seen},
            )
            c.execute(
                text(
                    "INSERT INTO user_event_days (tenant_id, user_id, event, day, count)"
                    " VALUES (1, 7, 'Logged In', '2026-11-01', 2)"
                )
            )
            c.execute(
                text(
                    "INSERT INTO account_event_days (tenant_id, account_id, event, day, user_id,"
                    " count) VALUES (1, 7, 'Logged In', '2026-11-01', 7, 2)"
                )
            )
            c.execute(
                text(
                    "INSERT INTO events (tenant_id, message_id, type, name, user_id, account_id,"
                    " timestamp, received_at, payload)"
                    " VALUES (1, 'm1', 'track', 'Logged In', 7, 7, :t, :t, '{}')"
                ),
                {"t": seen},
            )

        def rows() -> dict:
            with engine.connect() as c:
                counts = {t: c.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in tables}
                counts["event ids"] = c.execute(
                    text("SELECT user_id, account_id FROM events")
                ).one()
                return counts

        kept = {**dict.fromkeys(tables, 1), "event ids": (7, 7)}
        migrate.upgrade(url)
        assert rows() == kept
        migrate.downgrade(url, "0018")
        assert rows() == kept
    finally:
        engine.dispose()


def test_the_activity_basis_keeps_room_for_in_place_updates_on_postgresql(db_factory):
    """The models ask for fillfactor 70 on activity_bases (the daily pass updates its rows in
    place); alembic does not compare storage parameters, so the migration is checked here."""
    url = db_factory.new_url()
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name != "postgresql":
                pytest.skip("a PostgreSQL storage parameter")
            options = connection.execute(
                text("SELECT reloptions FROM pg_class WHERE relname = 'activity_bases'")
            ).scalar()
        assert options == ["fillfactor=70"]
        assert Base.metadata.tables["activity_bases"].dialect_options["postgresql"]["with"] == {
            "fillfactor": 70
        }
    finally:
        engine.dispose()


def test_both_daily_rollups_are_read_by_tenant_and_day(db_factory):
    """A pass reads the current day's rollups of the subjects it rescores, and the daily pass
    the days that join or leave a time frame: both tables have (tenant_id, day), and no index by
    day alone (it steps over other tenants' rows of the day)."""
    url = db_factory.new_url()
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        schema = inspect(engine)
        for table in ("user_event_days", "account_event_days"):
            indexes = [i["column_names"] for i in schema.get_indexes(table)]
            assert ["tenant_id", "day"] in indexes, table
            assert ["day"] not in indexes, table
    finally:
        engine.dispose()
