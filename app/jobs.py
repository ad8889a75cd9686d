"""What the worker process runs on its schedule. Jobs are thin: pick tenants, take the lease,
call the domain function."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Callable

from sqlalchemy import select

from app import leases
from app.db import Database
from app.models import Tenant
from app.scoring_jobs import recompute

log = logging.getLogger(__name__)

SCORING_LEASE = dt.timedelta(minutes=30)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def score_tenants(db: Database, clock: Callable[[], dt.datetime], holder: str) -> dict[int, str]:
    """One scheduling round: each active tenant gets an incremental pass, which is a full one
    when the UTC day changed since the last full pass (everyone's time window moves daily) or
    the definitions did. Tenants whose lease another worker holds are skipped. Returns what
    happened per tenant."""
    with db.system_session() as session:
        tenant_ids = list(
            session.scalars(select(Tenant.id).where(Tenant.status == "active").order_by(Tenant.id))
        )
    outcome: dict[int, str] = {}
    for tenant_id in tenant_ids:
        now = clock()
        if not leases.acquire(db, tenant_id, "score", holder, SCORING_LEASE, now):
            outcome[tenant_id] = "busy"
            continue
        try:
            summary = recompute(db, tenant_id, now, full=False)
            outcome[tenant_id] = "full" if summary.full else "incremental"
        except Exception:
            log.exception("tenant %s: scoring pass failed", tenant_id)
            outcome[tenant_id] = "failed"
        finally:
            leases.release(db, tenant_id, "score", holder, clock())
    return outcome
