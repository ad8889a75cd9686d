"""Write keys, admin keys, OAuth codes and CRM tokens never reach the logs: every flow that
handles them runs at DEBUG with the log captured, and the capture is searched for each secret
(including the access tokens the sandboxes hand out)."""

from __future__ import annotations

import base64
import logging

import pytest
from sqlalchemy import select

from app.models import Tenant
from app.scores.scoring_pass import recompute
from app.sync import lifecycle
from app.tenants import issue_write_key
from tests.helpers import salesforce
from tests.helpers.apps import config_for, empty_all_tables, write_key_of
from tests.helpers.hubspot import NOW, PUBLIC_URL, acme, install
from tests.helpers.tracking import post


@pytest.fixture
def app(hubspot_app):
    return hubspot_app


def _secrets_of_tenant(app, tenant_id: int) -> list[str]:
    svc = app.extensions["pql"]
    with svc.db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
        out = [svc.token_cipher.decrypt(tenant.refresh_token_encrypted)]
        if tenant.access_token_encrypted:
            out.append(svc.token_cipher.decrypt(tenant.access_token_encrypted))
    return out


def _assert_absent(caplog, secrets: list[str]) -> None:
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert caplog.records, "nothing was logged: the check would prove nothing"
    for secret in secrets:
        assert secret and secret not in text, f"a secret ({secret[:6]}…) is in the logs"


def test_hubspot_flows_log_no_secret(app, client, db, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    page = install(client, 4242)
    assert page.status_code == 200
    with db.system_session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.external_id == "4242"))
    key = write_key_of(app, tenant_id)
    admin = issue_write_key(db, tenant_id, scope="admin").secret
    acme(client, key)
    post(client, "batch", {"batch": [{"type": "track"}]}, key)  # a rejected message
    client.post(
        "/v1/track",
        data=b"{",
        headers={"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()},
    )
    client.get("/api/v1/crm", headers={"Authorization": f"Bearer {admin}"})
    client.get("/api/v1/crm", headers={"Authorization": f"Bearer {admin}x"})  # refused
    recompute(db, tenant_id, NOW)
    svc = app.extensions["pql"]
    secrets = _secrets_of_tenant(app, tenant_id)
    sandbox.sandbox.expire_access_tokens()  # the sync refreshes first
    lifecycle.sync_tenant(svc, tenant_id)
    lifecycle.pull_tenant(svc, tenant_id)
    secrets += _secrets_of_tenant(app, tenant_id)  # after any refresh
    lifecycle.uninstall(svc, tenant_id)
    _assert_absent(caplog, [key, admin, *secrets, svc.settings.hubspot_client_secret])


def test_salesforce_install_sync_refresh_and_uninstall_log_no_secret(
    migrated_url, org_server, caplog
):
    caplog.set_level(logging.DEBUG)
    from app import create_app

    app = create_app(
        config_for(
            migrated_url,
            PUBLIC_URL=PUBLIC_URL,
            SALESFORCE_LOGIN_URL=salesforce.LOGIN,
            SALESFORCE_SANDBOX_LOGIN_URL=salesforce.LOGIN,
            LOG_LEVEL="DEBUG",
        )
    )
    app.extensions["pql"].clock = lambda: NOW
    try:
        client = app.test_client()
        page, _org = salesforce.install(client, org_server)
        assert page.status_code == 200
        db = app.extensions["pql"].db
        with db.system_session() as session:
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.external_id == _org.org_id))
        key = write_key_of(app, tenant_id)
        secrets = _secrets_of_tenant(app, tenant_id)
        acme(client, key)
        recompute(db, tenant_id, NOW)
        org_server.expire_sessions()
        svc = app.extensions["pql"]
        lifecycle.sync_tenant(svc, tenant_id)
        secrets += _secrets_of_tenant(app, tenant_id)
        lifecycle.uninstall(svc, tenant_id)
        _assert_absent(caplog, [key, *secrets, svc.settings.salesforce_client_secret])
    finally:
        empty_all_tables(app)
        app.extensions["pql"].db.dispose()
