"""Bulk inserts (COPY on PostgreSQL, executemany elsewhere) store every row's own values, however
much the rows repeat one another: COPY converts each distinct JSON document and moment once."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from sqlalchemy import JSON, Boolean, Column, Integer, MetaData, String, Table, event, select
from sqlalchemy.orm import Session

from app.bulk import insert_rows, store_changed
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


def test_changed_rows_are_stored_as_given_and_share_what_changed_in_them(db):
    if db.dialect != "postgresql":
        pytest.skip("the database compares on PostgreSQL; elsewhere the pass compares itself")
    table = Table(
        "store_probe",
        MetaData(),
        Column("tenant_id", Integer, primary_key=True),
        Column("item_id", Integer, primary_key=True),
        Column("score", Integer),
        Column("label", String),
        Column("version", Integer),
        Column("crm_pending", Boolean),
    )
    table.create(db.engine)
    compared = ["tenant_id", "item_id", "score", "label", "version"]

    def store(rows, full=True):
        given = copy.deepcopy(rows)
        with Session(db.engine) as session, session.begin():
            written = store_changed(
                session, table, 7, "item_id", rows, compared, full, {"version": 3}, "_id"
            )
        # The rows are written as they are: no key, tenant or version added to them.
        assert rows == given
        return written

    first = [{"_id": n, "score": n * 10, "label": "a"} for n in (1, 2, 3, 4)]
    written = store(first)
    assert set(written) == {1, 2, 3, 4} and written[1] == set(compared)
    with db.engine.begin() as connection:
        connection.execute(table.update().values(crm_pending=False))
    again = [
        {"_id": 1, "score": 11, "label": "a"},
        {"_id": 2, "score": 21, "label": "a"},
        {"_id": 3, "score": 30, "label": "b"},
        {"_id": 4, "score": 40, "label": "a"},
        {"_id": 5, "score": 50, "label": "a"},
    ]
    written = store(again)
    assert written == {1: {"score"}, 2: {"score"}, 3: {"label"}, 5: set(compared)}
    assert written[1] is written[2]  # changed alike: one set
    with db.engine.connect() as connection:
        stored = connection.execute(select(table).order_by(table.c.item_id)).all()
    assert [tuple(r) for r in stored] == [
        (7, 1, 11, "a", 3, True),
        (7, 2, 21, "a", 3, True),
        (7, 3, 30, "b", 3, True),
        (7, 4, 40, "a", 3, False),  # unchanged: left alone, not flagged for the push
        (7, 5, 50, "a", 3, True),
    ]


def _three_stored(db, name: str) -> Table:
    """A scores-like table of tenant 7 holding items 1, 2 and 3 (score = item, version 3, not
    flagged for the push)."""
    table = Table(
        name,
        MetaData(),
        Column("tenant_id", Integer, primary_key=True),
        Column("item_id", Integer, primary_key=True),
        Column("score", Integer),
        Column("version", Integer),
        Column("crm_pending", Boolean),
    )
    table.create(db.engine)
    with db.engine.begin() as connection:
        connection.execute(
            table.insert(),
            [
                {"tenant_id": 7, "item_id": n, "score": n, "version": 3, "crm_pending": False}
                for n in (1, 2, 3)
            ],
        )
    return table


def _store_items(session, table, full: bool, **options):
    """Store items 1 (unchanged), 2 (score 20) and 4 (new) into ``_three_stored``'s table."""
    return store_changed(
        session,
        table,
        7,
        "item_id",
        [{"_id": 1, "score": 1}, {"_id": 2, "score": 20}, {"_id": 4, "score": 40}],
        ["tenant_id", "item_id", "score", "version"],
        full,
        {"version": 3},
        "_id",
        **options,
    )


@pytest.mark.parametrize("full", [False, True])
def test_rows_known_to_be_new_go_straight_into_the_table(db, full):
    """Given the keys that have a stored row, the others are COPYed into the table itself:
    nothing looks for them a second time (no INSERT from the staging table), and a full set
    still deletes only the rows it does not contain."""
    if db.dialect != "postgresql":
        pytest.skip("the database compares on PostgreSQL; elsewhere the pass compares itself")
    table = _three_stored(db, f"store_known_probe_{int(full)}")
    compared = ["tenant_id", "item_id", "score", "version"]
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        with Session(db.engine) as session, session.begin():
            written = _store_items(session, table, full, existing={1, 2, 3})
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert written == {2: {"score"}, 4: set(compared)}
    assert not [s for s in statements if s.startswith("INSERT")]
    with db.engine.connect() as connection:
        stored = [tuple(r) for r in connection.execute(select(table).order_by(table.c.item_id))]
    assert stored == [
        (7, 1, 1, 3, False),
        (7, 2, 20, 3, True),
        *([] if full else [(7, 3, 3, 3, False)]),
        (7, 4, 40, 3, True),
    ]


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("known", [False, True])
def test_left_for_later_the_compare_and_write_store_the_same_rows(db, full, known):
    """Given ``later``, only the COPYs run at once: the statements that compare and write wait
    in ``later`` (to be sent in a pipeline while Python works), nothing is read back, and once
    they run the table holds what the same call without ``later`` stores. A full set's
    deletion comes before the new rows, known or not, are written."""
    if db.dialect != "postgresql":
        pytest.skip("the database compares on PostgreSQL; elsewhere the pass compares itself")
    table = _three_stored(db, f"store_later_probe_{int(full)}_{int(known)}")

    def stored(connection):
        return [tuple(r) for r in connection.execute(select(table).order_by(table.c.item_id))]

    later: list = []
    with Session(db.engine) as session, session.begin():
        before = stored(session.connection())
        returned = _store_items(
            session, table, full, existing={1, 2, 3} if known else None, later=later
        )
        assert returned is None
        # Only a row known to be new (and not under a full set's deletion) is in already.
        straight = [(7, 4, 40, 3, True)] if known and not full else []
        assert stored(session.connection()) == before + straight
        for statement in later:
            statement()
    with db.engine.connect() as connection:
        assert stored(connection) == [
            (7, 1, 1, 3, False),
            (7, 2, 20, 3, True),
            *([] if full else [(7, 3, 3, 3, False)]),
            (7, 4, 40, 3, True),
        ]
