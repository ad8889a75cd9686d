"""The ``worker`` process: APScheduler runs the jobs of ``app.jobs.tenant_jobs`` on intervals.

Each job is scheduled with ``max_instances=1`` (no overlap inside one process) and takes a
per-tenant lease (no overlap across processes), so adding worker processes is safe.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal

from apscheduler.schedulers.blocking import BlockingScheduler

from app.jobs import deliveries
from app.jobs.tenant_jobs import deliver_tenants, pull_tenants, score_tenants, worker_identity
from app.sync import lifecycle
from app.tracking.rate_limit import forget_ingest_windows

log = logging.getLogger(__name__)

# How often due trigger deliveries are sent (and failed ones retried when their time comes).
DELIVERY_INTERVAL_SECONDS = 15


def push_for(services):
    """The CRM push that follows a tenant's scoring pass (tenants connected to a CRM)."""

    def push(tenant_id: int) -> None:
        if lifecycle.provider_of(services, tenant_id) is not None:
            lifecycle.sync_tenant(services, tenant_id)

    return push


def deliver_for(services):
    """Send a tenant's due trigger deliveries; CRM actions get its connector when needed."""

    def deliver(tenant_id: int, now: dt.datetime) -> None:
        factory = None
        if lifecycle.provider_of(services, tenant_id) is not None:

            def factory():
                return lifecycle.connector_for(services, tenant_id)

        deliveries.deliver_pending(services.db, tenant_id, now, connector_factory=factory)

    return deliver


def build_scheduler(services) -> BlockingScheduler:
    scheduler = BlockingScheduler(timezone="UTC")
    holder = worker_identity()
    settings = services.settings
    common = {"max_instances": 1, "coalesce": True, "next_run_time": services.clock()}
    scheduler.add_job(
        score_tenants,
        "interval",
        seconds=settings.scoring_interval_seconds,
        args=[services.db, services.clock, holder, push_for(services)],
        id="score",
        **common,
    )
    scheduler.add_job(
        pull_tenants,
        "interval",
        seconds=settings.pull_interval_seconds,
        args=[
            services.db,
            services.clock,
            holder,
            lambda tenant_id: lifecycle.pull_tenant(services, tenant_id),
        ],
        id="pull",
        **common,
    )
    scheduler.add_job(
        deliver_tenants,
        "interval",
        seconds=DELIVERY_INTERVAL_SECONDS,
        args=[services.db, services.clock, holder, deliver_for(services)],
        id="deliver",
        **common,
    )
    grace = dt.timedelta(days=settings.uninstall_grace_days)

    def purge() -> None:
        lifecycle.purge_uninstalled(services.db, services.clock(), grace)
        forget_ingest_windows(services.db, services.clock())

    scheduler.add_job(
        purge,
        "interval",
        hours=1,
        id="purge",
        max_instances=1,
        coalesce=True,
    )
    return scheduler


def run_worker(services) -> None:
    scheduler = build_scheduler(services)

    def stop(*_args) -> None:
        log.info("worker stopping")
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "worker started: scoring and CRM push every %ss, pull every %ss",
        services.settings.scoring_interval_seconds,
        services.settings.pull_interval_seconds,
    )
    scheduler.start()
    log.info("worker stopped")
