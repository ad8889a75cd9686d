"""``app.db.overlapped``: statements sent in a pipeline run while Python goes on, and their
errors still surface."""

from __future__ import annotations

import os
import time

import psycopg
import pytest
from sqlalchemy import text

from app.db import overlapped

postgresql_only = pytest.mark.skipif(
    os.environ.get("PQL_TEST_DB", "sqlite") != "postgresql", reason="libpq pipelines"
)


def _running(db, marker: str) -> bool:
    with db.engine.connect() as other:
        return bool(
            other.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND query LIKE :q AND pid <> pg_backend_pid()"
                ),
                {"q": f"%{marker}%"},
            )
        )


@postgresql_only
def test_a_statement_within_runs_in_the_database_while_python_goes_on(db):
    marker = "overlapped-probe-1"
    with db.system_session() as session, session.begin():
        with overlapped(session):
            session.execute(text(f"DO $$ BEGIN PERFORM pg_sleep(1.5); END $$ /* {marker} */"))
            # Back in Python at once: the statement is still running in the database.
            seen = False
            deadline = time.monotonic() + 1.2
            while not seen and time.monotonic() < deadline:
                seen = _running(db, marker)
            assert seen
        # Leaving waited for it.
        assert not _running(db, marker)
        assert session.execute(text("SELECT 1")).scalar() == 1


@postgresql_only
def test_an_error_within_is_raised_on_leaving_and_the_transaction_rolls_back(db):
    with db.system_session() as session:
        session.execute(text("CREATE TEMP TABLE probe (n int PRIMARY KEY)"))
        session.commit()
        with pytest.raises(psycopg.errors.UniqueViolation), overlapped(session):
            session.execute(text("INSERT INTO probe VALUES (1)"))
            session.execute(text("INSERT INTO probe VALUES (1)"))
        session.rollback()
        assert session.execute(text("SELECT count(*) FROM probe")).scalar() == 0


@pytest.mark.skipif(os.environ.get("PQL_TEST_DB", "sqlite") == "postgresql", reason="SQLite")
def test_elsewhere_statements_run_as_they_are_executed(db):
    with db.system_session() as session, overlapped(session):
        assert session.execute(text("SELECT 7")).scalar() == 7
