"""Per-key ingestion limit: messages per 10-second window per write key, shared by every web
process (counted in the database); over it, 429 with Retry-After and nothing stored."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from app.models import Event, IngestWindow
from app.tenants import create_tenant, issue_write_key
from app.tracking.rate_limit import forget_ingest_windows
from tests.helpers.apps import config_for, empty_all_tables
from tests.helpers.tracking import post, track

START = dt.datetime(2026, 11, 25, 12, 0, 3, tzinfo=dt.UTC)


@pytest.fixture
def limited(migrated_url):
    from app import create_app

    app = create_app(config_for(migrated_url, INGEST_MESSAGES_PER_10S="5"))
    now = [START]
    app.extensions["pql"].clock = lambda: now[0]
    yield app, now
    empty_all_tables(app)
    app.extensions["pql"].db.dispose()


def events(db, tenant_id):
    with db.tenant_session(tenant_id) as session:
        return session.scalar(select(func.count()).select_from(Event))


def test_a_key_over_its_limit_gets_429_with_retry_after_and_nothing_is_stored(limited):
    app, now = limited
    db = app.extensions["pql"].db
    tenant = create_tenant(db, "Limited")
    key = issue_write_key(db, tenant.id).secret
    other = issue_write_key(db, tenant.id).secret
    client = app.test_client()
    assert post(client, "batch", {"batch": [track() for _ in range(3)]}, key).status_code == 200
    refused = post(client, "batch", {"batch": [track() for _ in range(3)]}, key)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "7"  # the window ends 7 s later
    body = refused.get_json()
    assert body["code"] == "rate_limited" and "5 messages per 10 seconds" in body["message"]
    assert events(db, tenant.id) == 3  # nothing of the refused request
    # What still fits, fits; another key has its own budget.
    assert post(client, "track", track(), key).status_code == 200
    assert post(client, "batch", {"batch": [track() for _ in range(5)]}, other).status_code == 200
    # The next window starts afresh.
    now[0] = START + dt.timedelta(seconds=7)
    assert post(client, "batch", {"batch": [track() for _ in range(5)]}, key).status_code == 200
    assert events(db, tenant.id) == 14
    with db.system_session() as session:
        assert session.scalar(select(func.count()).select_from(IngestWindow)) == 3
    # The ended windows go: two of the keys' and the tenant's.
    assert forget_ingest_windows(db, now[0]) == 3


def test_a_zero_limit_means_no_limit(migrated_url):
    from app import create_app

    app = create_app(config_for(migrated_url, INGEST_MESSAGES_PER_10S="0"))
    try:
        db = app.extensions["pql"].db
        tenant = create_tenant(db, "Unlimited")
        key = issue_write_key(db, tenant.id).secret
        client = app.test_client()
        for _ in range(3):
            batch = {"batch": [track() for _ in range(100)]}
            assert post(client, "batch", batch, key).status_code == 200
    finally:
        empty_all_tables(app)
        app.extensions["pql"].db.dispose()


def test_a_refused_request_counts_against_the_limit(limited):
    app, _now = limited
    db = app.extensions["pql"].db
    key = issue_write_key(db, create_tenant(db, "Refused").id).secret
    client = app.test_client()
    junk = {"batch": [{"type": "track"} for _ in range(5)]}  # no event, no user: all invalid
    assert post(client, "batch", junk, key).status_code == 400
    # Those five cost their work and count: the key's window is full.
    refused = post(client, "track", track(), key)
    assert refused.status_code == 429 and refused.get_json()["scope"] == "key"


@pytest.fixture
def tenant_capped(migrated_url):
    from app import create_app

    app = create_app(
        config_for(migrated_url, INGEST_MESSAGES_PER_10S="5", INGEST_TENANT_MESSAGES_PER_10S="6")
    )
    app.extensions["pql"].clock = lambda: START
    yield app
    empty_all_tables(app)
    app.extensions["pql"].db.dispose()


def test_a_tenants_keys_together_stay_under_the_tenant_cap(tenant_capped):
    app = tenant_capped
    db = app.extensions["pql"].db
    tenant = create_tenant(db, "Many keys")
    first, second = (issue_write_key(db, tenant.id).secret for _ in range(2))
    neighbour = issue_write_key(db, create_tenant(db, "Neighbour").id).secret
    client = app.test_client()
    assert post(client, "batch", {"batch": [track() for _ in range(4)]}, first).status_code == 200
    refused = post(client, "batch", {"batch": [track() for _ in range(3)]}, second)
    assert refused.status_code == 429
    body = refused.get_json()
    assert body["scope"] == "tenant" and "write keys together may send 6" in body["message"]
    assert refused.headers["Retry-After"] == "7"
    assert events(db, tenant.id) == 4
    # What fits still fits, and another tenant is not held back.
    assert post(client, "batch", {"batch": [track() for _ in range(2)]}, second).status_code == 200
    assert (
        post(client, "batch", {"batch": [track() for _ in range(5)]}, neighbour).status_code == 200
    )
