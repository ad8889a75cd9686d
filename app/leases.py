"""Leases: one holder at a time per (tenant, job), across every worker process.

Acquiring is a single conditional UPDATE (the row is created first if missing), which both
SQLite and PostgreSQL make atomic, so exactly one of several racing workers gets it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from app.bulk import dialect_insert
from app.db import Database
from app.models import JobLease


def acquire(
    db: Database, tenant_id: int, job: str, holder: str, ttl: dt.timedelta, now: dt.datetime
) -> bool:
    """Take (or renew) the lease; False when another holder's lease has not expired."""
    with db.system_transaction() as session:
        session.connection().execute(
            dialect_insert(session)(JobLease.__table__).on_conflict_do_nothing(),
            [{"tenant_id": tenant_id, "job": job, "holder": "", "leased_until": now}],
        )
    with db.system_transaction() as session:
        table = JobLease.__table__
        result = session.connection().execute(
            update(table)
            .where(
                table.c.tenant_id == tenant_id,
                table.c.job == job,
                (table.c.leased_until <= now) | (table.c.holder == holder),
            )
            .values(holder=holder, leased_until=now + ttl)
        )
        return result.rowcount == 1


def release(db: Database, tenant_id: int, job: str, holder: str, now: dt.datetime) -> None:
    with db.system_transaction() as session:
        table = JobLease.__table__
        session.connection().execute(
            update(table)
            .where(table.c.tenant_id == tenant_id, table.c.job == job, table.c.holder == holder)
            .values(leased_until=now)
        )
