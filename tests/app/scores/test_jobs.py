"""Scoring jobs: a running job notes its progress for the page that waits for it."""

from app.models import ScoringJob
from app.scores import jobs
from app.scores.jobs import request_job
from tests.helpers.events import NOW


def test_a_running_job_notes_its_progress_once_a_second_on_postgresql(db, tenant_key, monkeypatch):
    tenant_id, _ = tenant_key
    job_id = request_job(db, tenant_id, "run", {"full": True}, NOW)
    with db.tenant_transaction(tenant_id) as session:
        session.get(ScoringJob, job_id).status = "running"
    note = jobs._progress(db, tenant_id, job_id)
    if db.dialect != "postgresql":
        # SQLite has one writer, held by the pass itself: no notes there.
        assert note is None
        return
    clock = iter([10.0, 10.5, 11.2])
    monkeypatch.setattr(jobs.time, "monotonic", lambda: next(clock))
    note("users", 1000, 5000)
    note("users", 2000, 5000)  # within the second: not written
    with db.tenant_session(tenant_id) as session:
        assert session.get(ScoringJob, job_id).result == {
            "progress": {"stage": "users", "done": 1000, "total": 5000}
        }
    note("accounts", 0, 200)
    with db.tenant_session(tenant_id) as session:
        assert session.get(ScoringJob, job_id).result["progress"]["stage"] == "accounts"
