"""The schema can be distributed by tenant: tenant_id leads the primary key and every unique
key of each tenant-owned table, and foreign keys between tenant tables carry the tenant."""

from __future__ import annotations

from sqlalchemy import UniqueConstraint, inspect

from app import migrate
from app.db import make_engine
from app.models import Base

# Replicated to every node rather than distributed, with why.
REFERENCE_TABLES = {
    # A request's key is looked up before its tenant is known: one global unique key_hash.
    "write_keys",
}


def _tenant_tables():
    return [
        t
        for t in Base.metadata.sorted_tables
        if "tenant_id" in t.c and t.name not in REFERENCE_TABLES
    ]


def test_every_tenant_owned_table_leads_its_keys_with_tenant_id():
    tables = _tenant_tables()
    assert len(tables) > 20
    problems = []
    for table in tables:
        if table.primary_key.columns.keys()[0] != "tenant_id":
            problems.append(f"{table.name}: primary key {table.primary_key.columns.keys()}")
        uniques = [c for c in table.constraints if isinstance(c, UniqueConstraint)]
        uniques += [i for i in table.indexes if i.unique]
        for unique in uniques:
            if unique.columns.keys()[0] != "tenant_id":
                problems.append(f"{table.name}: unique {unique.name}")
        for column in table.columns:
            if column.unique and column.name != "tenant_id":
                problems.append(f"{table.name}: unique column {column.name}")
        for fk in table.foreign_key_constraints:
            referred = fk.referred_table
            if referred.name == "tenants" or "tenant_id" not in referred.c:
                continue
            if fk.column_keys[0] != "tenant_id" or fk.elements[0].column.name != "tenant_id":
                problems.append(f"{table.name}: foreign key {fk.column_keys} to {referred.name}")
    assert problems == []


def test_the_migrated_database_has_the_keys_the_models_declare(db_factory):
    url = db_factory.new_url()
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        schema = inspect(engine)
        sqlite = engine.dialect.name == "sqlite"
        for table in _tenant_tables():
            declared = table.primary_key.columns.keys()
            actual = schema.get_pk_constraint(table.name)["constrained_columns"]
            if sqlite and declared == ["tenant_id", "id"]:
                # SQLite's auto-increment needs id alone as the key (see the migration).
                assert actual == ["id"], table.name
            else:
                assert actual == declared, table.name
            for fk in schema.get_foreign_keys(table.name):
                if fk["referred_table"] != "tenants":
                    assert fk["constrained_columns"][0] == "tenant_id", (table.name, fk)
                    assert fk["referred_columns"] == ["tenant_id", "id"], (table.name, fk)
    finally:
        engine.dispose()
