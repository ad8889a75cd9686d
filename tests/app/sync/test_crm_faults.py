"""CRM faults against the HubSpot sandbox, one portal suffering while another is not: 429
storms, 5xx, timeouts and a slow API, a token revoked in the middle of a sync. The suffering
tenant's sync degrades and recovers (or stops with a reason), the other tenant is untouched,
and in the end the CRM holds the same values as without faults: nothing lost, nothing twice."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from app.jobs.tenant_jobs import score_tenants
from app.models import Tenant
from app.scores.scoring_pass import recompute
from app.sync import lifecycle
from connectors.hubspot import api as hubspot_api
from connectors.hubspot import client as hubspot
from tests.helpers.apps import write_key_of
from tests.helpers.hubspot import NOW, acme, install


@pytest.fixture
def app(hubspot_app):
    return hubspot_app


SUFFERING, HEALTHY = 701, 702


def installed_pair(app, db):
    """Two portals with the same product data."""
    ids = {}
    for hub in (SUFFERING, HEALTHY):
        browser = app.test_client()
        page = install(browser, hub)
        assert page.status_code == 200
        with db.system_session() as session:
            ids[hub] = session.scalar(select(Tenant.id).where(Tenant.external_id == str(hub)))
        acme(browser, write_key_of(app, ids[hub]))
        recompute(db, ids[hub], NOW)
    return ids


def crm_state(sandbox, hub) -> dict:
    """What the portal holds of the app's writing: each record's properties by its key."""
    portal = sandbox.sandbox.portals[hub]
    out = {}
    for kind, key in (("companies", "pql_account_key"), ("contacts", "pql_user_key")):
        for record in portal.objects[kind].values():
            props = record["properties"]
            out[(kind, props.get(key))] = {
                k: v for k, v in props.items() if k.startswith("pql_") and v not in (None, "")
            }
    return out


def test_429_storms_and_5xx_on_one_portal_degrade_and_recover_alone(app, db, sandbox):
    ids = installed_pair(app, db)
    svc = app.extensions["pql"]
    sandbox.sandbox.faults.portal_statuses[SUFFERING] = [429, 429, 429, 502, 503, 500]
    suffering = lifecycle.sync_tenant(svc, ids[SUFFERING])
    healthy = lifecycle.sync_tenant(svc, ids[HEALTHY])
    assert suffering.calls["429"] == 3 and suffering.calls["server_errors"] == 3
    assert "429" not in healthy.calls and "server_errors" not in healthy.calls
    for report in (suffering, healthy):
        assert report.subjects["account"].created == 1 and report.subjects["user"].created == 2
        assert report.subjects["account"].failed == report.subjects["user"].failed == 0
    # The same values as the portal that had no trouble, and nothing twice.
    assert crm_state(sandbox, SUFFERING) == crm_state(sandbox, HEALTHY)
    assert len(sandbox.sandbox.portals[SUFFERING].objects["contacts"]) == 2


def test_timeouts_and_a_slow_api_are_waited_out(app, db, sandbox, monkeypatch):
    ids = installed_pair(app, db)
    svc = app.extensions["pql"]
    monkeypatch.setattr(hubspot_api, "TIMEOUT", (2.0, 0.4))
    # Two answers slower than the client waits (timeouts), then a slow but patient API.
    sandbox.sandbox.faults.portal_delays[SUFFERING] = [1.0, 1.0, 0.2, 0.2, 0.2, 0.2]
    report = lifecycle.sync_tenant(svc, ids[SUFFERING])
    assert report.calls["timeouts"] == 2
    lifecycle.sync_tenant(svc, ids[HEALTHY])
    assert crm_state(sandbox, SUFFERING) == crm_state(sandbox, HEALTHY)


def test_a_token_revoked_mid_sync_stops_that_tenant_only_and_loses_nothing(
    app, db, sandbox, monkeypatch
):
    ids = installed_pair(app, db)
    svc = app.extensions["pql"]
    real_create = hubspot.HubSpotConnector.create

    def create_then_revoke(self, object_type, writes):
        outcomes = real_create(self, object_type, writes)
        if object_type == "companies":
            # The admin of the suffering portal disconnects the app right after its
            # companies were written: its contacts are next.
            sandbox.sandbox.revoke_refresh_tokens(SUFFERING)
        return outcomes

    monkeypatch.setattr(hubspot.HubSpotConnector, "create", create_then_revoke)

    def push(tenant_id):
        if tenant_id == ids[SUFFERING]:
            lifecycle.sync_tenant(svc, tenant_id)

    outcome = score_tenants(db, lambda: NOW + dt.timedelta(minutes=1), "w1", push=push)
    assert outcome[ids[SUFFERING]] == "needs_reauth"
    monkeypatch.setattr(hubspot.HubSpotConnector, "create", real_create)
    with db.system_session() as session:
        assert session.get(Tenant, ids[SUFFERING]).status == "needs_reauth"
    portal = sandbox.sandbox.portals[SUFFERING]
    assert len(portal.objects["companies"]) == 1 and portal.objects["contacts"] == {}
    # The other tenant syncs as usual meanwhile.
    assert lifecycle.sync_tenant(svc, ids[HEALTHY]).subjects["user"].created == 2
    # The admin reinstalls: what waited is written, and the company is not created twice.
    assert install(app.test_client(), SUFFERING).status_code == 200
    report = lifecycle.sync_tenant(svc, ids[SUFFERING])
    assert report.subjects["user"].created == 2 and report.subjects["account"].created == 0
    assert crm_state(sandbox, SUFFERING) == crm_state(sandbox, HEALTHY)
