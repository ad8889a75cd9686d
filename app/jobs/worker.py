"""The ``worker`` process: APScheduler runs the jobs of ``app.jobs.schedule`` on intervals.

Each job is scheduled with ``max_instances=1`` (no overlap inside one process) and takes a
per-tenant lease (no overlap across processes), so adding worker processes is safe.
"""

from __future__ import annotations

import logging
import signal

from apscheduler.schedulers.blocking import BlockingScheduler

from app.jobs.schedule import SCHEDULE
from app.jobs.tenant_jobs import worker_identity

log = logging.getLogger(__name__)


def build_scheduler(services) -> BlockingScheduler:
    """APScheduler with every job of ``SCHEDULE`` (``max_instances=1``: no overlap of a job
    inside one process; the jobs' leases prevent it across processes)."""
    scheduler = BlockingScheduler(timezone="UTC")
    holder = worker_identity()
    for job in SCHEDULE:
        scheduler.add_job(
            job.run,
            "interval",
            seconds=job.interval(services.settings).total_seconds(),
            # One holder per job: the jobs of one process that share a lease (scoring, the
            # requested passes, the push all take "score") exclude each other as two
            # processes would.
            args=[services, f"{holder}/{job.name}"],
            id=job.name,
            max_instances=1,
            coalesce=True,
            **({"next_run_time": services.clock()} if job.at_start else {}),
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
