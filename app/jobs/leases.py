"""Leases: one holder at a time per (tenant, job), across every worker process.

Acquiring is a single conditional UPDATE (the row is created first if missing), which both
SQLite and PostgreSQL make atomic, so exactly one of several racing workers gets it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import update

from app.bulk import dialect_insert
from app.db import Database
from app.models import JobLease

log = logging.getLogger(__name__)


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


@contextmanager
def held(
    db: Database,
    tenant_id: int,
    job: str,
    holder: str,
    ttl: dt.timedelta,
    clock: Callable[[], dt.datetime],
) -> Iterator[bool]:
    """Hold the lease while the block runs: yields whether it was taken, renews it every
    third of ``ttl`` from a thread of its own, releases it at the end. A holder that dies
    (SIGKILL, a lost machine) stops renewing, so its lease lapses within ``ttl`` and another
    worker carries on: a short ``ttl`` bounds how long a crash holds a tenant up."""
    if not acquire(db, tenant_id, job, holder, ttl, clock()):
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl.total_seconds() / 3):
            try:
                if not acquire(db, tenant_id, job, holder, ttl, clock()):
                    log.warning("tenant %s: lease %s lost to another holder", tenant_id, job)
                    return
            except Exception:  # the database is away: the next renewal tries again
                log.exception("tenant %s: lease %s not renewed", tenant_id, job)

    renewer = threading.Thread(target=renew, name=f"lease-{job}-{tenant_id}", daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join(timeout=5)
        release(db, tenant_id, job, holder, clock())
