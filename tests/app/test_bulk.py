"""Bulk inserts (COPY on PostgreSQL, executemany elsewhere) store every row's own values, however
much the rows repeat one another: COPY converts each distinct JSON document and moment once."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Column, Integer, MetaData, Table, select
from sqlalchemy.orm import Session

from app.bulk import insert_rows
from app.models import UTCDateTime

NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)


def _probe(db) -> Table:
    table = Table(
        "bulk_probe",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("doc", JSON),
        Column("at", UTCDateTime),
    )
    table.create(db.engine)
    return table


def test_rows_that_repeat_and_differ_slightly_are_each_stored_as_given(db):
    table = _probe(db)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    docs = [
        {"done": ["a", "b"], "total": 3},
        {"done": ["a", "b"], "total": 3},
        {"n": 1},
        {"n": True},
        {"n": 1.0},
        {"n": "1"},
        None,
        [1, 2],
        {"names": []},
        {"done": ["a", "b"], "total": 3},
    ]
    moments = [
        NOW,
        NOW,
        NOW.astimezone(plus_two),  # the same instant, written in another zone
        NOW + dt.timedelta(hours=2),
        (NOW + dt.timedelta(hours=2)).replace(tzinfo=None).replace(tzinfo=plus_two),
        None,
        NOW,
        NOW + dt.timedelta(microseconds=1),
        NOW,
        NOW,
    ]
    rows = [
        {"id": n, "doc": doc, "at": at}
        for n, (doc, at) in enumerate(zip(docs, moments, strict=True))
    ]
    with db.engine.begin() as connection:
        with Session(bind=connection) as session:
            insert_rows(session, table, [dict(r) for r in rows])
            session.flush()
        stored = {r.id: (r.doc, r.at) for r in connection.execute(select(table))}
    for row in rows:
        doc, at = stored[row["id"]]
        assert doc == row["doc"] and type(doc) is type(row["doc"]), row
        if isinstance(doc, dict) and "n" in doc:
            assert type(doc["n"]) is type(row["doc"]["n"]), row
        assert at == row["at"], row
    assert stored[2][1] == NOW and stored[4][1] == NOW
