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
from app.models import ScoringRun, Tenant
from app.scoring_jobs import recompute

log = logging.getLogger(__name__)

FULL_PASS_EVERY = dt.timedelta(hours=24)
SCORING_LEASE = dt.timedelta(minutes=30)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _last_full_pass(db: Database, tenant_id: int) -> dt.datetime | None:
    with db.tenant_session(tenant_id) as session:
        return session.scalar(
            select(ScoringRun.started_at)
            .where(ScoringRun.full.is_(True), ScoringRun.finished_at.is_not(None))
            .order_by(ScoringRun.started_at.desc())
            .limit(1)
        )


def score_tenants(db: Database, clock: Callable[[], dt.datetime], holder: str) -> dict[int, str]:
    """One scheduling round: each active tenant gets an incremental pass, or a full one when the
    last full pass is a day old (everyone's time window moves daily). Tenants whose lease
    another worker holds are skipped. Returns what happened per tenant."""
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
            last_full = _last_full_pass(db, tenant_id)
            full = last_full is None or now - last_full >= FULL_PASS_EVERY
            recompute(db, tenant_id, now, full=full)
            outcome[tenant_id] = "full" if full else "incremental"
        except Exception:
            log.exception("tenant %s: scoring pass failed", tenant_id)
            outcome[tenant_id] = "failed"
        finally:
            leases.release(db, tenant_id, "score", holder, clock())
    return outcome
