"""Every statement of one tenant's work names the tenant: once the database is distributed by
tenant, such a statement goes to that tenant's shard alone (and no statement can join two
tenants' rows)."""

from __future__ import annotations

import re

from sqlalchemy import event

from app.models import Base
from app.scores.scoring_pass import recompute
from tests.helpers.events import NOW, acme_trial, ev, send

TENANT_TABLES = sorted(
    (t.name for t in Base.metadata.sorted_tables if "tenant_id" in t.c),
    key=len,
    reverse=True,
)
NOT_QUERIES = ("COPY ", "CREATE TEMPORARY", "DROP TABLE _", "ANALYZE", "PRAGMA", "SAVEPOINT")


def _statements(db, work) -> list[str]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    return seen


def _unrouted(statements: list[str]) -> list[str]:
    out = []
    for statement in statements:
        flat = " ".join(statement.split())
        if flat.upper().startswith(NOT_QUERIES):
            continue
        touched = [t for t in TENANT_TABLES if re.search(rf"\b{t}\b", flat)]
        if touched and "tenant_id" not in flat:
            out.append(flat[:200])
    return out


def test_ingestion_and_scoring_name_the_tenant_in_every_statement(client, db, tenant_key):
    tenant_id, key = tenant_key
    statements = _statements(db, lambda: acme_trial(client, key))
    statements += _statements(db, lambda: recompute(db, tenant_id, NOW))
    send(client, key, ev("ada", "Report Created", "acme", days_ago=0.01))
    statements += _statements(db, lambda: recompute(db, tenant_id, NOW, full=False))
    assert len(statements) > 50
    assert _unrouted(statements) == []
