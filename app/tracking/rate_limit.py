"""The ingestion limits: messages per 10 seconds per write key and per tenant (all its keys
together), counted in the database so every web process shares them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Table

from app.bulk import dialect_insert
from app.db import Database
from app.models import IngestWindow, TenantIngestWindow

INGEST_WINDOW_SECONDS = 10


@dataclass(frozen=True)
class Refusal:
    """Over a limit: which one (``"key"`` or ``"tenant"``), its size, and the seconds until
    the window ends."""

    scope: str
    limit: int
    retry_after: float


def _count(session, table: Table, column: str, owner: int, window: int, messages: int) -> int:
    statement = dialect_insert(session)(table).values(
        {column: owner, "window_start": window, "messages": messages}
    )
    statement = statement.on_conflict_do_update(
        index_elements=[column, "window_start"],
        set_={"messages": table.c.messages + messages},
    ).returning(table.c.messages)
    return session.execute(statement).scalar_one()


def _uncount(session, table: Table, column: str, owner: int, window: int, messages: int) -> None:
    session.execute(
        table.update()
        .where(table.c[column] == owner, table.c.window_start == window)
        .values(messages=table.c.messages - messages)
    )


def admit(
    db: Database,
    key_id: int,
    tenant_id: int,
    messages: int,
    key_limit: int,
    tenant_limit: int,
    now: dt.datetime,
) -> Refusal | None:
    """Count ``messages`` against the key's and the tenant's current 10-second windows (one
    upsert each, shared by every web process). None when they fit in both; else which limit
    refused them (they are then not counted). A limit of 0 is no limit."""
    moment = now.timestamp()
    window = int(moment // INGEST_WINDOW_SECONDS) * INGEST_WINDOW_SECONDS
    retry_after = max(1.0, window + INGEST_WINDOW_SECONDS - moment)
    scopes = [
        (IngestWindow.__table__, "key_id", key_id, key_limit, "key"),
        (TenantIngestWindow.__table__, "tenant_id", tenant_id, tenant_limit, "tenant"),
    ]
    with db.system_transaction() as session:
        counted = []
        for table, column, owner, limit, scope in scopes:
            if limit <= 0:
                continue
            counted.append((table, column, owner))
            if _count(session, table, column, owner, window, messages) > limit:
                for done in counted:
                    _uncount(session, *done, window, messages)
                return Refusal(scope, limit, retry_after)
    return None


def forget_ingest_windows(db: Database, now: dt.datetime) -> int:
    """Drop the windows that ended (the worker's hourly clean-up)."""
    current = int(now.timestamp() // INGEST_WINDOW_SECONDS) * INGEST_WINDOW_SECONDS
    dropped = 0
    with db.system_transaction() as session:
        for model in (IngestWindow, TenantIngestWindow):
            result = session.execute(
                model.__table__.delete().where(model.__table__.c.window_start < current)
            )
            dropped += result.rowcount or 0
    return dropped
