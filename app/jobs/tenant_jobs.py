"""What the worker process runs on its schedule. Jobs are thin: pick tenants, take the lease,
call the domain function."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from app.db import Database
from app.jobs import leases
from app.models import Delivery, Tenant
from app.scores.jobs import run_queued, tenants_with_queued_jobs
from app.scores.scoring_pass import recompute
from app.sync.lifecycle import sync_tenant
from connectors import registry
from connectors.base import AuthorizationLost, CrmUnavailable

log = logging.getLogger(__name__)

# How long a job's lease lasts without renewal: the holder renews it every third of this
# while it works, so it bounds how long a crashed worker holds a tenant up.
SCORING_LEASE = dt.timedelta(seconds=60)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _active_tenants(db: Database, crms: tuple[str, ...] | None = None) -> list[int]:
    with db.system_session() as session:
        query = select(Tenant.id).where(Tenant.status == "active").order_by(Tenant.id)
        if crms:
            query = query.where(Tenant.crm.in_(crms))
        return list(session.scalars(query))


def _each_under_lease(
    db: Database,
    clock: Callable[[], dt.datetime],
    holder: str,
    job: str,
    tenant_ids: list[int],
    work: Callable[[int, dt.datetime], str],
) -> dict[int, str]:
    """Run ``work`` for each tenant whose ``job`` lease this worker gets (others are "busy").
    One tenant's failure is logged and does not stop the round."""
    outcome: dict[int, str] = {}
    for tenant_id in tenant_ids:
        with leases.held(db, tenant_id, job, holder, SCORING_LEASE, clock) as taken:
            if not taken:
                outcome[tenant_id] = "busy"
                continue
            try:
                outcome[tenant_id] = work(tenant_id, clock())
            except AuthorizationLost:
                log.warning("tenant %s: CRM authorisation lost; waiting for a reinstall", tenant_id)
                outcome[tenant_id] = "needs_reauth"
            except CrmUnavailable as exc:
                log.warning("tenant %s: CRM unavailable, next round retries: %s", tenant_id, exc)
                outcome[tenant_id] = "crm_unavailable"
            except Exception:
                log.exception("tenant %s: %s failed", tenant_id, job)
                outcome[tenant_id] = "failed"
    return outcome


def score_tenants(
    db: Database,
    clock: Callable[[], dt.datetime],
    holder: str,
    push: Callable[[int], object] | None = None,
) -> dict[int, str]:
    """One scheduling round: each active tenant gets an incremental pass, which is a full one
    when the UTC day changed since the last full pass (everyone's time window moves daily) or
    the definitions did, and then ``push`` (the CRM sync) under the same lease, so a new event
    reaches the CRM within one interval. Tenants whose lease another worker holds are skipped.
    Returns what happened per tenant."""

    def work(tenant_id: int, now: dt.datetime) -> str:
        summary = recompute(db, tenant_id, now, full=False)
        if push is not None:
            push(tenant_id)
        return "full" if summary.full else "incremental"

    return _each_under_lease(db, clock, holder, "score", _active_tenants(db), work)


PUSH_PARALLEL = 4  # tenants pushed at once by one worker: one slow CRM does not hold the rest


def push_tenants(
    db: Database,
    clock: Callable[[], dt.datetime],
    holder: str,
    push: Callable[[int], object],
    crms: tuple[str, ...],
    parallel: int = PUSH_PARALLEL,
) -> dict[int, str]:
    """Push every CRM-connected tenant's changed scores, its own job so a push that waits on a
    CRM never holds up the scoring of other tenants; up to ``parallel`` tenants at a time, so
    one tenant's slow CRM does not hold up another's push. A push takes the tenant's "score"
    lease: a pass never rewrites scores the push is settling (that tenant's scoring waits for
    the next round)."""

    def work(tenant_id: int, now: dt.datetime) -> str:
        push(tenant_id)
        return "pushed"

    tenants = _active_tenants(db, crms=crms)
    outcome: dict[int, str] = {}
    if not tenants:
        return outcome
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="push") as pool:
        for done in pool.map(
            lambda t: _each_under_lease(db, clock, holder, "score", [t], work), tenants
        ):
            outcome.update(done)
    return outcome


def sync_requested(svc, tenant_id: int, holder: str, dry_run: bool = False):
    """An admin's "sync now" (the admin page or the API): the push, under the tenant's "score"
    lease like the worker's own push, so it never overlaps a pass or another push of the
    tenant. Returns the sync report, or None when the lease is held elsewhere (the worker is
    scoring or syncing the tenant and will write the changes itself). Each request holds the
    lease under a name of its own: two requests of one admin must not both get it."""
    holder = f"{holder}/{uuid.uuid4().hex[:12]}"
    with leases.held(svc.db, tenant_id, "score", holder, SCORING_LEASE, svc.clock) as taken:
        if not taken:
            return None
        return sync_tenant(svc, tenant_id, dry_run=dry_run)


def requested_scoring(db: Database, clock: Callable[[], dt.datetime], holder: str) -> dict:
    """Scoring passes and previews admins asked for, under the same "score" lease as the
    scheduled passes (one at a time per tenant, whichever worker gets it)."""

    def work(tenant_id: int, now: dt.datetime) -> str:
        return f"{run_queued(db, tenant_id, clock)} jobs"

    return _each_under_lease(db, clock, holder, "score", tenants_with_queued_jobs(db), work)


def pull_tenants(
    db: Database,
    clock: Callable[[], dt.datetime],
    holder: str,
    pull: Callable[[int], object],
) -> dict[int, str]:
    """Pull owners, stages and sales activity for every active CRM-connected tenant (lease
    "pull")."""

    def work(tenant_id: int, now: dt.datetime) -> str:
        pull(tenant_id)
        return "pulled"

    return _each_under_lease(
        db, clock, holder, "pull", _active_tenants(db, crms=registry.keys()), work
    )


def lifecycle_tenants(
    db: Database,
    clock: Callable[[], dt.datetime],
    holder: str,
    read: Callable[[int, dt.datetime], str],
) -> dict[int, str]:
    """Read each CRM-connected tenant's installs and uninstalls (lease "lifecycle"): active
    tenants, those waiting for a reauthorisation, and uninstalled ones still within their grace
    period (an install there calls off the deletion)."""
    with db.system_session() as session:
        ids = list(
            session.scalars(
                select(Tenant.id).where(Tenant.crm.in_(registry.keys())).order_by(Tenant.id)
            )
        )
    return _each_under_lease(db, clock, holder, "lifecycle", ids, read)


def deliver_tenants(
    db: Database,
    clock: Callable[[], dt.datetime],
    holder: str,
    deliver: Callable[[int, dt.datetime], object],
) -> dict[int, str]:
    """Send the due trigger deliveries of every tenant that has some (lease "deliver": one
    worker per tenant, so two workers never send the same delivery). The tenant whose oldest
    due delivery has waited longest goes first, so one with a slow target (each tenant's turn
    is bounded by its time budget) does not keep sending while the others wait."""

    def work(tenant_id: int, now: dt.datetime) -> str:
        deliver(tenant_id, now)
        return "delivered"

    with db.system_session() as session:
        waiting = func.min(Delivery.next_attempt_at)
        ids = list(
            session.scalars(
                select(Delivery.tenant_id)
                .join(Tenant, Tenant.id == Delivery.tenant_id)
                .where(
                    Tenant.status == "active",
                    Delivery.status == "pending",
                    Delivery.next_attempt_at <= clock(),
                )
                .group_by(Delivery.tenant_id)
                .order_by(waiting, Delivery.tenant_id)
            )
        )
    return _each_under_lease(db, clock, holder, "deliver", ids, work)
