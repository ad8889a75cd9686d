"""The per-key ingestion limit: messages per 10 seconds counted in the database, so every web
process shares it."""

from __future__ import annotations

import datetime as dt

from app.bulk import dialect_insert
from app.db import Database
from app.models import IngestWindow

INGEST_WINDOW_SECONDS = 10


def admit(db: Database, key_id: int, messages: int, limit: int, now: dt.datetime) -> float | None:
    """Count ``messages`` against the key's current 10-second window (one upsert, shared by
    every web process). Returns None when they fit, else the seconds until the window ends
    (the request is refused and not counted)."""
    if limit <= 0:
        return None
    moment = now.timestamp()
    window = int(moment // INGEST_WINDOW_SECONDS) * INGEST_WINDOW_SECONDS
    with db.system_transaction() as session:
        table = IngestWindow.__table__
        statement = dialect_insert(session)(table).values(
            key_id=key_id, window_start=window, messages=messages
        )
        statement = statement.on_conflict_do_update(
            index_elements=["key_id", "window_start"],
            set_={"messages": table.c.messages + messages},
        ).returning(table.c.messages)
        total = session.execute(statement).scalar_one()
        if total <= limit:
            return None
        session.execute(
            table.update()
            .where(table.c.key_id == key_id, table.c.window_start == window)
            .values(messages=table.c.messages - messages)
        )
    return max(1.0, window + INGEST_WINDOW_SECONDS - moment)


def forget_ingest_windows(db: Database, now: dt.datetime) -> int:
    """Drop the windows that ended (the worker's hourly clean-up)."""
    current = int(now.timestamp() // INGEST_WINDOW_SECONDS) * INGEST_WINDOW_SECONDS
    with db.system_transaction() as session:
        result = session.execute(
            IngestWindow.__table__.delete().where(IngestWindow.window_start < current)
        )
        return result.rowcount or 0
