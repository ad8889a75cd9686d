"""Scoring passes and definitions previews an admin asked for, run by the worker.

A request queues a ``ScoringJob`` (one queued job per tenant and kind: asking again while one
waits updates what it will do) and answers at once; the worker runs queued jobs under the
tenant's "score" lease, so an asked-for pass never runs beside the scheduled one or another
worker's, and no web request holds the database for a whole pass.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import select

from app.db import Database
from app.models import ScoringJob
from app.scores.definitions_store import parse_document
from app.scores.scoring_pass import preview_definitions, recompute

log = logging.getLogger(__name__)

KINDS = ("run", "preview")


def request_job(
    db: Database,
    tenant_id: int,
    kind: str,
    params: dict[str, Any],
    now: dt.datetime,
    actor: str | None = None,
) -> int:
    """Queue a job (or update the one of this kind still waiting); its id."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    with db.tenant_transaction(tenant_id) as session:
        waiting = session.scalars(
            select(ScoringJob)
            .where(ScoringJob.kind == kind, ScoringJob.status == "queued")
            .with_for_update()
        ).first()
        if waiting is not None:
            waiting.params, waiting.requested_at, waiting.requested_by = params, now, actor
            return waiting.id
        job = ScoringJob(
            tenant_id=tenant_id,
            kind=kind,
            params=params,
            status="queued",
            requested_at=now,
            requested_by=actor,
        )
        session.add(job)
        session.flush()
        return job.id


def job_status(db: Database, tenant_id: int, job_id: int) -> dict[str, Any] | None:
    with db.tenant_session(tenant_id) as session:
        job = session.get(ScoringJob, job_id)
        if job is None or job.tenant_id != tenant_id:
            return None
        return as_json(job)


def as_json(job: ScoringJob) -> dict[str, Any]:
    def when(moment: dt.datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "requested_at": when(job.requested_at),
        "started_at": when(job.started_at),
        "finished_at": when(job.finished_at),
        "result": job.result,
        "error": job.error,
    }


def tenants_with_queued_jobs(db: Database) -> list[int]:
    with db.system_session() as session:
        return list(
            session.scalars(
                select(ScoringJob.tenant_id)
                .where(ScoringJob.status == "queued")
                .group_by(ScoringJob.tenant_id)
                .order_by(ScoringJob.tenant_id)
            )
        )


def run_queued(db: Database, tenant_id: int, clock) -> int:
    """Run the tenant's queued jobs, oldest first (the caller holds its "score" lease). A job
    still marked running was left by a worker that died holding the lease: it runs again."""
    with db.tenant_transaction(tenant_id) as session:
        for orphan in session.scalars(select(ScoringJob).where(ScoringJob.status == "running")):
            orphan.status = "queued"
    done = 0
    while True:
        with db.tenant_transaction(tenant_id) as session:
            job = session.scalars(
                select(ScoringJob)
                .where(ScoringJob.status == "queued")
                .order_by(ScoringJob.requested_at, ScoringJob.id)
            ).first()
            if job is None:
                return done
            job.status, job.started_at = "running", clock()
            job_id, kind, params = job.id, job.kind, dict(job.params or {})
        result, error = None, None
        try:
            result = _run(db, tenant_id, kind, params, clock(), _progress(db, tenant_id, job_id))
        except ValidationError as exc:
            error = f"the definitions are not valid: {exc.messages}"
        except Exception as exc:
            log.exception("tenant %s: scoring job %s (%s) failed", tenant_id, job_id, kind)
            error = f"{exc.__class__.__name__}: {exc}"
        with db.tenant_transaction(tenant_id) as session:
            job = session.get(ScoringJob, job_id)
            job.status = "failed" if error else "done"
            job.result, job.error, job.finished_at = result, error, clock()
        done += 1


PROGRESS_EVERY = 1.0  # seconds between two progress notes of one job


def _progress(db: Database, tenant_id: int, job_id: int):
    """Where a running job is (stage, done, total), noted on the job for the page that waits
    for it, at most once a second. Only on PostgreSQL: SQLite allows one writer, and the pass
    holds it until it commits (a preview's never does)."""
    if db.dialect != "postgresql":
        return None
    last = [0.0]

    def note(stage: str, done: int, total: int) -> None:
        moment = time.monotonic()
        if moment - last[0] < PROGRESS_EVERY:
            return
        last[0] = moment
        with db.tenant_transaction(tenant_id) as session:
            job = session.get(ScoringJob, job_id)
            if job is not None and job.status == "running":
                job.result = {"progress": {"stage": stage, "done": done, "total": total}}

    return note


def _run(
    db: Database, tenant_id: int, kind: str, params: dict, now: dt.datetime, progress=None
) -> dict:
    if kind == "preview":
        return preview_definitions(db, tenant_id, parse_document(params["document"]), now, progress)
    summary = recompute(db, tenant_id, now, full=bool(params.get("full", True)), progress=progress)
    return {
        "full": summary.full,
        "accounts": summary.accounts,
        "users": summary.users,
        "definitions_version": summary.definitions_version,
        "seconds": summary.seconds,
    }
