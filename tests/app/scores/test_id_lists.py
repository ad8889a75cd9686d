"""Id lists in scoring's reads: one array parameter of the column's own type on PostgreSQL."""

from __future__ import annotations

from sqlalchemy import BigInteger, event, literal, select, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import CacheStats

from app.models import AccountEventDay, ActivityBasis, UserEventDay
from app.scores.activity_basis import only


def _sql(column, dialect) -> str:
    return str(select(column).where(*only(column, [3, 1, 2])).compile(dialect=dialect))


def test_the_id_array_has_the_type_of_the_column_it_is_compared_with():
    # integer = ANY(bigint[]) cannot be hashed by PostgreSQL: each row would be compared with
    # every id of the list in turn.
    assert "= ANY (%(param_1)s::INTEGER[])" in _sql(
        AccountEventDay.account_id, postgresql.dialect()
    )
    assert "= ANY (%(param_1)s::INTEGER[])" in _sql(UserEventDay.user_id, postgresql.dialect())
    assert "= ANY (%(param_1)s::BIGINT[])" in _sql(ActivityBasis.subject_id, postgresql.dialect())


def test_elsewhere_the_ids_are_one_json_parameter():
    assert "IN (SELECT value FROM json_each(?))" in _sql(
        AccountEventDay.account_id, sqlite.dialect()
    )
    assert only(AccountEventDay.account_id, None) == ()


def test_the_ids_reach_the_database_whole_and_in_the_arrays_text_form(db):
    # Ids beyond 32 bits included; on PostgreSQL the driver is handed one string ("{…}") that
    # the statement casts, not a list it would convert id by id.
    table = union_all(
        *[select(literal(i, BigInteger).label("id")) for i in (1, 2**40, 7, 12)]
    ).subquery()
    query = select(table.c.id).where(*only(table.c.id, [2**40, 7, 9]))
    sent = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        sent.extend(parameters.values() if isinstance(parameters, dict) else parameters)

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.engine.connect() as connection:
            found = sorted(connection.scalars(query))
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    assert found == [7, 2**40]
    if db.dialect == "postgresql":
        assert f"{{{2**40},7,9}}" in sent
        assert not any(isinstance(value, list) for value in sent)


def test_a_statement_that_differs_only_in_its_ids_is_compiled_once_and_reads_its_own_ids(db):
    # The ids are a parameter, not part of the statement's text: SQLAlchemy's compiled cache
    # serves the second statement, with the second list of ids.
    table = union_all(
        *[select(literal(i, BigInteger).label("id")) for i in (1, 2, 3, 4)]
    ).subquery()
    hits = []

    def record(conn, cursor, statement, parameters, context, executemany):
        hits.append(context.cache_hit)

    event.listen(db.engine, "after_cursor_execute", record)
    try:
        with db.engine.connect() as connection:
            found = [
                sorted(connection.scalars(select(table.c.id).where(*only(table.c.id, ids))))
                for ids in ([1, 3], [2, 4, 5], [4])
            ]
    finally:
        event.remove(db.engine, "after_cursor_execute", record)
    assert found == [[1, 3], [2, 4], [4]]
    assert hits[-2:] == [CacheStats.CACHE_HIT] * 2
