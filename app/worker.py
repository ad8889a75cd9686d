"""The ``worker`` process: APScheduler runs the jobs of ``app.jobs`` on intervals.

Each job is scheduled with ``max_instances=1`` (no overlap inside one process) and takes a
per-tenant lease (no overlap across processes), so adding worker processes is safe.
"""

from __future__ import annotations

import logging
import signal

from apscheduler.schedulers.blocking import BlockingScheduler

from app.jobs import score_tenants, worker_identity

log = logging.getLogger(__name__)


def build_scheduler(services) -> BlockingScheduler:
    scheduler = BlockingScheduler(timezone="UTC")
    holder = worker_identity()
    scheduler.add_job(
        score_tenants,
        "interval",
        seconds=services.settings.scoring_interval_seconds,
        args=[services.db, services.clock, holder],
        id="score",
        max_instances=1,
        coalesce=True,
        next_run_time=services.clock(),
    )
    return scheduler


def run_worker(services) -> None:
    scheduler = build_scheduler(services)

    def stop(*_args) -> None:
        log.info("worker stopping")
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("worker started: scoring every %ss", services.settings.scoring_interval_seconds)
    scheduler.start()
    log.info("worker stopped")
