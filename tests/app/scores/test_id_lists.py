"""Id lists in scoring's reads: one array parameter of the column's own type on PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select
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
