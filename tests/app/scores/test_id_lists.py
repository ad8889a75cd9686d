"""Id lists in scoring's reads: one array parameter of the column's own type on PostgreSQL."""

from __future__ import annotations

from sqlalchemy import BigInteger, event, literal, select, union_all
from sqlalchemy.dialects import postgresql, sqlite

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


def test_elsewhere_the_ids_are_an_in_list():
    assert "IN (__[POSTCOMPILE_" in _sql(AccountEventDay.account_id, sqlite.dialect())
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
