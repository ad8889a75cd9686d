"""HubSpot's 2026 platform: every call on the date-versioned API and OAuth 2026-03, checked
against the operations HubSpot's own OpenAPI files describe; the version is one setting."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import urllib3
from sqlalchemy import select

from app.models import Tenant
from app.scores.scoring_pass import recompute
from app.sync.lifecycle import (
    pull_tenant,
    purge_uninstalled,
    read_lifecycle,
    sync_tenant,
    uninstall,
    uninstall_lost_authorisations,
)
from connectors.base import AuthorizationLost, CrmError
from sandbox.hubspot import Sandbox, SandboxServer
from sandbox.hubspot import app_env as hubspot_env
from tests.helpers.apps import write_key_of
from tests.helpers.hubspot import (
    HUB,
    NOW,
    PUBLIC_URL,
    acme,
    dropping,
    install,
    owner_change,
    portal,
    webhook,
)

OPERATIONS = json.loads(
    (Path(__file__).parents[2] / "fixtures/hubspot/2026-03-operations.json").read_text()
)["operations"]


def _documented(method: str, path: str, version: str = "2026-03") -> bool:
    for op_method, template in OPERATIONS:
        pattern = re.escape(template.replace("2026-03", version))
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", pattern)
        if op_method == method and re.fullmatch(pattern, path):
            return True
    return False


def _api_calls(sandbox) -> list[tuple[str, str]]:
    """What the app asked of HubSpot's API (the browser's consent page, the sandbox's own
    control paths and the short-lived journal entry URLs the API hands out aside)."""
    return [
        (m, p)
        for m, p in sandbox.sandbox.requests_seen
        if not p.startswith(("/_sandbox", "/_journal")) and p != "/oauth/authorize"
    ]


@pytest.fixture
def app(hubspot_app):
    return hubspot_app


def test_install_sync_pull_webhook_task_and_uninstall_use_only_documented_2026_03_calls(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    svc = app.extensions["pql"]
    acme(client, key, plan="paid")
    recompute(db, tenant_id, NOW)
    assert sync_tenant(svc, tenant_id).summary()["created"] == 3
    pull_tenant(svc, tenant_id)
    [company_id] = portal(sandbox).objects["companies"]
    assert webhook(client, [owner_change(company_id, "101")]).get_json()["applied"] == 1
    dropping(db, tenant_id)
    assert sync_tenant(svc, tenant_id).tasks_created == 1
    uninstall(svc, tenant_id)

    calls = _api_calls(sandbox)
    assert sandbox.sandbox.stats["legacy_calls"] == 0
    assert [c for c in calls if not _documented(*c)] == []
    assert all("/2026-03" in path for _, path in calls)
    # The uninstall went both ways: the app left the portal and its refresh token is revoked.
    assert ("DELETE", "/appinstalls/2026-03/external-install") in calls
    assert ("POST", "/oauth/2026-03/token/revoke") in calls
    assert sandbox.sandbox.refresh_tokens == {}
    assert [e["eventTypeId"] for e in sandbox.sandbox.journal] == ["APP_INSTALL", "APP_UNINSTALL"]


def test_the_token_answer_names_the_portal_so_no_token_info_call_follows(
    app, client, installed, sandbox
):
    calls = _api_calls(sandbox)
    assert calls[0] == ("POST", "/oauth/2026-03/token")
    assert not [p for _, p in calls if "access-tokens" in p or "/v1/" in p]


def test_a_retired_path_is_answered_as_a_sunset_endpoint(sandbox):
    answer = urllib3.PoolManager().request("GET", f"{sandbox.url}/crm/v3/objects/companies")
    assert answer.status == 410
    assert json.loads(answer.data)["category"] == "API_SUNSET"
    old_oauth = urllib3.PoolManager().request("POST", f"{sandbox.url}/oauth/v1/token")
    assert old_oauth.status == 410
    assert sandbox.sandbox.stats["legacy_calls"] == 2


def test_moving_to_the_next_api_version_is_one_setting(make_app):
    with SandboxServer(Sandbox(requests_per_window=10_000, api_version="2026-09")) as later:
        app = make_app(
            clock=lambda: NOW,
            **hubspot_env(later.url),
            HUBSPOT_API_VERSION="2026-09",
            PUBLIC_URL=PUBLIC_URL,
        )
        client = app.test_client()
        assert install(client).status_code == 200
        db = app.extensions["pql"].db
        with db.system_session() as session:
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.external_id == str(HUB)))
        acme(client, write_key_of(app, tenant_id))
        recompute(db, tenant_id, NOW)
        assert sync_tenant(app.extensions["pql"], tenant_id).summary()["created"] == 3
        calls = _api_calls(later)
        assert later.sandbox.stats["legacy_calls"] == 0
        assert all("/2026-09" in path for _, path in calls)
        assert [c for c in calls if not _documented(*c, version="2026-09")] == []


def test_an_app_on_a_retired_version_is_refused_by_hubspot(make_app):
    with SandboxServer(Sandbox(api_version="2026-09")) as later:
        app = make_app(**hubspot_env(later.url), PUBLIC_URL=PUBLIC_URL)
        page = install(app.test_client())
        assert page.status_code == 502
        assert "retired API version" in page.get_data(as_text=True)


def test_a_refused_grant_means_reinstall_but_a_transient_token_error_is_retried(
    app, db, installed, sandbox
):
    tenant_id, _ = installed
    svc = app.extensions["pql"]
    sandbox.sandbox.expire_access_tokens()
    svc.clock = lambda: NOW + dt.timedelta(hours=1)
    sandbox.sandbox.faults.token_failures.append(
        (503, "temporarily_unavailable", "try again", "SERVICE_UNAVAILABLE")
    )
    with pytest.raises(CrmError) as caught:
        pull_tenant(svc, tenant_id)
    assert not isinstance(caught.value, AuthorizationLost)
    with db.system_session() as session:
        assert session.get(Tenant, tenant_id).status == "active"
    pull_tenant(svc, tenant_id)  # the next round refreshes and pulls
    sandbox.sandbox.revoke_refresh_tokens()
    sandbox.sandbox.expire_access_tokens()
    svc.clock = lambda: NOW + dt.timedelta(hours=2)
    with pytest.raises(AuthorizationLost):
        pull_tenant(svc, tenant_id)
    with db.system_session() as session:
        assert session.get(Tenant, tenant_id).status == "needs_reauth"


# --- installs and uninstalls from HubSpot's webhooks journal -----------------------------------


def tenant_row(db, tenant_id):
    with db.system_session() as session:
        return session.get(Tenant, tenant_id)


def test_an_uninstall_in_hubspot_uninstalls_the_tenant_here(app, db, installed, sandbox):
    tenant_id, _ = installed
    svc = app.extensions["pql"]
    sandbox.sandbox.uninstall(HUB)  # the portal's admin removes the app in HubSpot
    read_lifecycle(svc, tenant_id, NOW)
    tenant = tenant_row(db, tenant_id)
    assert tenant.status == "uninstalled" and tenant.refresh_token_encrypted is None
    calls = _api_calls(sandbox)
    assert ("GET", "/webhooks-journal/journal-local/2026-03/earliest") in calls
    # HubSpot told us: nothing is uninstalled or revoked there again.
    assert not [c for c in calls if c[1].startswith(("/appinstalls", "/oauth/2026-03/token/"))]
    assert [c for c in calls if not _documented(*c)] == []
    # The next round reads on from where this one stopped, and changes nothing.
    before = len(_api_calls(sandbox))
    assert read_lifecycle(svc, tenant_id, NOW) == "0 lifecycle events"
    assert any("/next/" in p for _, p in _api_calls(sandbox)[before:])


def test_an_install_in_hubspot_calls_off_the_deletion_of_an_uninstalled_portal(
    app, db, installed, sandbox
):
    tenant_id, _ = installed
    svc = app.extensions["pql"]
    uninstall(svc, tenant_id)
    sandbox.sandbox.journal.append(sandbox.sandbox._lifecycle_entry(HUB, "APP_INSTALL"))
    read_lifecycle(svc, tenant_id, NOW)
    tenant = tenant_row(db, tenant_id)
    assert tenant.status == "needs_reauth" and tenant.uninstalled_at is None
    assert purge_uninstalled(db, NOW + dt.timedelta(days=90), dt.timedelta(days=30)) == []


def test_an_uninstall_from_before_the_latest_install_is_history(app, client, db, sandbox):
    svc = app.extensions["pql"]
    sandbox.sandbox.wall_clock = lambda: NOW - dt.timedelta(days=2)
    sandbox.sandbox.journal.append(sandbox.sandbox._lifecycle_entry(HUB, "APP_UNINSTALL"))
    assert install(client).status_code == 200  # installed at NOW, after that uninstall
    with db.system_session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.external_id == str(HUB)))
    read_lifecycle(svc, tenant_id, NOW)
    assert tenant_row(db, tenant_id).status == "active"


def test_a_refresh_token_refused_longer_than_the_grace_period_is_an_uninstall(
    app, db, installed, sandbox
):
    tenant_id, _ = installed
    svc = app.extensions["pql"]
    sandbox.sandbox.revoke_refresh_tokens()
    sandbox.sandbox.expire_access_tokens()
    svc.clock = lambda: NOW + dt.timedelta(hours=1)
    with pytest.raises(AuthorizationLost):
        pull_tenant(svc, tenant_id)
    grace = dt.timedelta(days=svc.settings.reauth_grace_days)
    assert uninstall_lost_authorisations(svc, NOW + grace - dt.timedelta(hours=1), grace) == []
    assert tenant_row(db, tenant_id).status == "needs_reauth"
    assert uninstall_lost_authorisations(svc, NOW + grace + dt.timedelta(hours=2), grace) == [
        tenant_id
    ]
    assert tenant_row(db, tenant_id).status == "uninstalled"
