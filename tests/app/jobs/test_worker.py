"""The worker's scheduling: leases keep one holder per tenant and job across processes."""

import datetime as dt
import threading
import time

from sqlalchemy import select

from app.jobs import leases
from app.jobs.tenant_jobs import push_tenants, score_tenants
from app.jobs.worker import build_scheduler
from app.models import ScoringRun, Tenant
from app.tenants import create_tenant
from tests.helpers.events import NOW, acme_trial

MINUTE = dt.timedelta(minutes=1)


def test_a_lease_has_one_holder_until_it_expires_or_is_released(db):
    tenant = create_tenant(db, "A")
    assert leases.acquire(db, tenant.id, "score", "w1", MINUTE, NOW)
    assert not leases.acquire(db, tenant.id, "score", "w2", MINUTE, NOW + dt.timedelta(seconds=30))
    assert leases.acquire(db, tenant.id, "score", "w1", MINUTE, NOW + dt.timedelta(seconds=30))
    assert leases.acquire(db, tenant.id, "score", "w2", MINUTE, NOW + dt.timedelta(minutes=2))
    leases.release(db, tenant.id, "score", "w2", NOW + dt.timedelta(minutes=2))
    assert leases.acquire(db, tenant.id, "score", "w3", MINUTE, NOW + dt.timedelta(minutes=2))


def test_racing_workers_get_the_lease_exactly_once(db):
    tenant = create_tenant(db, "A")
    winners = []
    barrier = threading.Barrier(6)

    def race(name):
        barrier.wait()
        if leases.acquire(db, tenant.id, "score", name, MINUTE, NOW):
            winners.append(name)

    threads = [threading.Thread(target=race, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_scheduled_scoring_runs_full_first_then_incremental_then_full_daily(client, db, tenant_key):
    tenant_id, key = tenant_key
    acme_trial(client, key)
    clock = {"now": NOW}
    assert score_tenants(db, lambda: clock["now"], "w1") == {tenant_id: "full"}
    clock["now"] = NOW + dt.timedelta(minutes=1)
    assert score_tenants(db, lambda: clock["now"], "w1") == {tenant_id: "incremental"}
    clock["now"] = NOW + dt.timedelta(days=1)
    assert score_tenants(db, lambda: clock["now"], "w1") == {tenant_id: "full"}


def test_a_tenant_scored_by_another_worker_is_skipped(db, tenant_key):
    tenant_id, _ = tenant_key
    assert leases.acquire(db, tenant_id, "score", "other", dt.timedelta(minutes=30), NOW)
    assert score_tenants(db, lambda: NOW, "me") == {tenant_id: "busy"}
    with db.tenant_session(tenant_id) as s:
        assert s.scalars(select(ScoringRun)).all() == []


def test_uninstalled_tenants_are_not_scored(db, tenant_key):
    tenant_id, _ = tenant_key
    with db.system_transaction() as s:
        s.get(Tenant, tenant_id).status = "uninstalled"
    assert score_tenants(db, lambda: NOW, "w1") == {}


def test_the_worker_schedules_scoring_pull_deliveries_and_purge_once_at_a_time(app):
    scheduler = build_scheduler(app.extensions["pql"])
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"score", "requested", "push", "pull", "deliver", "lifecycle", "purge"}
    assert jobs["deliver"].trigger.interval == dt.timedelta(seconds=15)
    assert all((j.max_instances, j.coalesce) == (1, True) for j in jobs.values())
    assert jobs["score"].trigger.interval == dt.timedelta(seconds=30)
    assert jobs["pull"].trigger.interval == dt.timedelta(seconds=300)


def test_a_scoring_round_pushes_each_tenant_after_its_pass(db, tenant_key):
    from app.jobs.tenant_jobs import score_tenants

    tenant_id, _ = tenant_key
    pushed = []
    now = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
    outcome = score_tenants(db, lambda: now, "w1", push=pushed.append)
    assert outcome == {tenant_id: "full"} and pushed == [tenant_id]


def test_a_tenant_whose_crm_access_is_lost_does_not_stop_the_round(db):
    from app.jobs.tenant_jobs import score_tenants
    from app.tenants import create_tenant
    from connectors.base import AuthorizationLost

    first, second = create_tenant(db, "A").id, create_tenant(db, "B").id

    def push(tenant_id):
        if tenant_id == first:
            raise AuthorizationLost("revoked")

    now = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
    outcome = score_tenants(db, lambda: now, "w1", push=push)
    assert outcome == {first: "needs_reauth", second: "full"}


def test_the_worker_process_scores_and_stops_cleanly_on_sigterm(migrated_url, db, tenant_key):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    pql = Path(sys.executable).parent / "pql"
    env = {**os.environ, "DATABASE_URL": migrated_url, "APP_ENV": "test", "LOG_LEVEL": "INFO"}
    process = subprocess.Popen(
        [str(pql), "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 20
        ran = False
        while time.monotonic() < deadline and not ran:
            with db.system_session() as s:
                ran = (
                    s.scalar(select(ScoringRun.id).where(ScoringRun.finished_at.is_not(None)))
                    is not None
                )
            time.sleep(0.2)
        assert ran, "the worker did not score within 20 s"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "worker stopped" in output


def test_a_working_holder_keeps_its_lease_and_a_dead_one_loses_it_within_the_ttl(db):
    """A SIGKILLed worker cannot release its lease: it must lapse soon (not after the
    longest job), while a live holder renews it for as long as it works."""
    import threading
    import time

    from app.jobs import leases
    from app.tenants import create_tenant

    tenant = create_tenant(db, "Leased")
    ttl = dt.timedelta(seconds=0.6)

    def clock():
        return dt.datetime.now(dt.UTC)

    seen = []

    def other_worker():
        time.sleep(1.0)  # past the ttl: only renewal keeps the first holder's lease
        seen.append(leases.acquire(db, tenant.id, "score", "w2", ttl, clock()))

    contender = threading.Thread(target=other_worker)
    with leases.held(db, tenant.id, "score", "w1", ttl, clock) as taken:
        assert taken
        contender.start()
        time.sleep(1.5)
    contender.join()
    assert seen == [False]
    # A holder that dies without releasing (no renewals either):
    assert leases.acquire(db, tenant.id, "score", "dead", ttl, clock())
    assert not leases.acquire(db, tenant.id, "score", "w2", ttl, clock())
    time.sleep(0.7)
    assert leases.acquire(db, tenant.id, "score", "w2", ttl, clock())


def test_a_push_waiting_on_a_crm_holds_up_neither_scoring_nor_other_tenants(db):
    slow = create_tenant(db, "Slow", crm="hubspot", external_id="1").id
    quick = create_tenant(db, "Quick", crm="hubspot", external_id="2").id
    release, pushed = threading.Event(), []

    def push(tenant_id):
        if tenant_id == slow:
            release.wait(10)  # a CRM that takes its time
        pushed.append(tenant_id)

    pushing = threading.Thread(
        target=push_tenants, args=(db, lambda: NOW, "w1", push, ("hubspot",)), daemon=True
    )
    pushing.start()
    try:
        deadline = time.monotonic() + 5
        while quick not in pushed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pushed == [quick]  # the other tenant was pushed meanwhile
        # Scoring runs for every other tenant while the slow push waits; the tenant being
        # pushed is scored next round (a pass never rewrites scores a push is settling).
        assert score_tenants(db, lambda: NOW, "w2") == {slow: "busy", quick: "full"}
    finally:
        release.set()
        pushing.join(10)
    assert sorted(pushed) == sorted([slow, quick])


def test_jobs_of_one_worker_that_share_a_lease_hold_it_as_different_holders(app):
    scheduler = build_scheduler(app.extensions["pql"])
    holders = {job.id: job.args[1] for job in scheduler.get_jobs()}
    assert len(set(holders.values())) == len(holders)
    assert holders["score"] != holders["push"] != holders["requested"]
