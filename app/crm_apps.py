"""What every CRM installation shares: activating a tenant from an OAuth install, its
connector, the sync and pull around the engine (with the pause a CRM's quota can impose and
its reason kept for the admin), uninstall and the purge after the grace period.

The CRM-specific parts (install routes, token endpoints, building the connector) live in
``app.hubspot_app`` and ``app.salesforce_app``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from flask import make_response, redirect, render_template_string
from sqlalchemy import delete, select, update
from werkzeug.exceptions import NotFound

from app import crm_properties, crm_sync
from app.db import Database
from app.handoff import write_handoffs
from app.models import AccountScore, CrmRecord, Tenant, UserScore, WriteKey
from app.tenants import issue_write_key
from connectors.base import AuthorizationLost, CrmError, CrmPaused

log = logging.getLogger(__name__)

CRM_NAMES = {"hubspot": "HubSpot", "salesforce": "Salesforce"}

INSTALLED_PAGE = """<!doctype html>
<title>PQL engine installed</title>
<h1>Installed in {{ where }}</h1>
<p>Send your product's events to <code>{{ public_url }}/v1/batch</code> (Segment-compatible
HTTP API) with this write key as the Basic-auth user name. It is shown once: copy it now.</p>
<pre>{{ key }}</pre>
<h2>Next steps</h2>
<ol>
<li>Point your Segment/RudderStack destination or SDK at the URL above with the key.</li>
<li>{{ fields_hint | safe }}</li>
<li>Adjust Activation steps, scoring profiles and PQL thresholds in the
<a href="/app/definitions">admin pages</a> (or with <code>pql definitions export/import</code>
or the JSON API).</li>
</ol>
<p><a href="/app/">Open the admin pages</a></p>
"""

ERROR_PAGE = """<!doctype html><title>Install failed</title>
<h1>The install did not complete</h1><p>{{ message }}</p>
<p><a href="{{ retry }}">Start again</a></p>"""


@dataclass(frozen=True)
class Grant:
    """Tokens from an OAuth code exchange."""

    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class Installed:
    tenant_id: int
    external_id: str
    write_key: str | None  # None: the tenant was already active (an admin signing in again)
    reinstalled: bool


def activate(
    svc, crm: str, external_id: str, grant: Grant, settings: dict[str, Any] | None = None
) -> Installed:
    """Create or re-activate the tenant of one CRM account (portal, org), keep its tokens
    encrypted, issue a write key and create the CRM properties."""
    now = svc.clock()
    with svc.db.system_transaction() as session:
        tenant = session.scalars(
            select(Tenant)
            .where(Tenant.crm == crm, Tenant.external_id == external_id)
            .with_for_update()
        ).one_or_none()
        reinstalled = tenant is not None
        already_active = reinstalled and tenant.status == "active"
        if tenant is None:
            tenant = Tenant(
                name=f"{CRM_NAMES[crm]} {'portal' if crm == 'hubspot' else 'org'} {external_id}",
                crm=crm,
                external_id=external_id,
                settings={},
            )
            session.add(tenant)
        tenant.status = "active"
        tenant.uninstalled_at = None
        tenant.access_token_encrypted = svc.token_cipher.encrypt(grant.access_token)
        tenant.refresh_token_encrypted = svc.token_cipher.encrypt(grant.refresh_token)
        tenant.access_token_expires_at = now + dt.timedelta(seconds=grant.expires_in)
        doc = {**(tenant.settings or {}), **(settings or {})}
        for stale in ("schema_version", "sync_paused", "sync_error"):
            doc.pop(stale, None)  # a reinstall re-checks the properties and starts afresh
        tenant.settings = doc
        session.flush()
        tenant_id = tenant.id
    if reinstalled and not already_active:
        # What the CRM holds may have changed while we were away: push everything once more
        # (records deleted meanwhile are matched or created again).
        with svc.db.tenant_transaction(tenant_id) as session:
            session.execute(update(CrmRecord).values(pushed={}))
            for model in (AccountScore, UserScore):
                session.execute(update(model).values(crm_pending=True))
    key = None
    if not already_active:
        key = issue_write_key(
            svc.db, tenant_id, label=f"{CRM_NAMES[crm]} install", cipher=svc.token_cipher
        ).secret
    log.info(
        "tenant %s: %s %s %s",
        tenant_id,
        "signed in again from" if already_active else "installed in",
        CRM_NAMES[crm],
        external_id,
    )
    try:
        crm_sync.ensure_schema(
            svc.db, tenant_id, connector_for(svc, tenant_id), svc.settings.property_prefix
        )
    except CrmError as exc:
        # The worker retries on its next sync; the install itself succeeded.
        log.warning("tenant %s: schema not created at install: %s", tenant_id, exc)
    return Installed(tenant_id, external_id, key, reinstalled)


def installed_page(svc, crm: str, installed: Installed, cookie: str):
    """Where an install ends: the browser is signed in to the admin pages for this tenant;
    a first install (or one after an uninstall) shows the write key and next steps, an admin
    signing in again goes straight to the admin pages. The install's cookie is cleared."""
    from app.admin_ui import sign_in

    sign_in(installed.tenant_id, f"{CRM_NAMES[crm]} admin")
    if installed.write_key is None:
        response = redirect("/app/")
        response.delete_cookie(cookie)
        return response
    where = "portal" if crm == "hubspot" else "org"
    page = render_template_string(
        INSTALLED_PAGE,
        where=f"{CRM_NAMES[crm]} {where} {installed.external_id}",
        key=installed.write_key,
        public_url=svc.settings.public_url,
        fields_hint=fields_hint(crm),
    )
    response = make_response(page)
    response.delete_cookie(cookie)
    return response


def _tenant(db: Database, tenant_id: int) -> Tenant:
    with db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant with id {tenant_id}")
        return tenant


def connector_for(svc, tenant_id: int):
    tenant = _tenant(svc.db, tenant_id)
    if tenant.crm == "hubspot":
        from app.hubspot_app import connector_for as build
    elif tenant.crm == "salesforce":
        from app.salesforce_app import connector_for as build
    else:
        raise NotFound(f"tenant {tenant_id} is not connected to a CRM")
    return build(svc, tenant_id)


def note(db: Database, tenant_id: int, **changes: Any) -> None:
    """Merge into the tenant's settings document (None removes a key)."""
    with db.system_transaction() as session:
        tenant = session.get(Tenant, tenant_id, with_for_update=True)
        doc = dict(tenant.settings or {})
        for name, value in changes.items():
            if value is None:
                doc.pop(name, None)
            else:
                doc[name] = value
        tenant.settings = doc


def paused(db: Database, tenant_id: int, now: dt.datetime) -> dict | None:
    """The pause a CRM's quota imposed, while it lasts."""
    pause = (_tenant(db, tenant_id).settings or {}).get("sync_paused")
    if pause and dt.datetime.fromisoformat(pause["until"]) > now:
        return pause
    return None


def _pause(svc, tenant_id: int, exc: CrmPaused) -> dict:
    now = svc.clock()
    pause = {
        "reason": str(exc),
        "since": now.isoformat(),
        "until": (now + dt.timedelta(seconds=exc.resume_after)).isoformat(),
    }
    note(svc.db, tenant_id, sync_paused=pause)
    log.warning("tenant %s: CRM sync paused until %s: %s", tenant_id, pause["until"], exc)
    return pause


def _usage(connector) -> dict | None:
    limit = getattr(connector, "limit", None)
    if limit is None or limit.total is None:
        return None
    return {"used": limit.used, "total": limit.total, "ceiling": limit.ceiling}


def sync_tenant(svc, tenant_id: int, dry_run: bool = False) -> crm_sync.SyncReport:
    """Ensure the schema, push what changed, create CS tasks for drops (not in a dry run). A
    tenant paused by its CRM's quota is left alone (the report says why); a new pause is
    recorded with its reason and raised."""
    now = svc.clock()
    pause = paused(svc.db, tenant_id, now)
    if pause and not dry_run:
        report = crm_sync.SyncReport(dry_run=False)
        report.paused = pause
        return report
    connector = connector_for(svc, tenant_id)
    prefix = svc.settings.property_prefix
    try:
        created = [] if dry_run else crm_sync.ensure_schema(svc.db, tenant_id, connector, prefix)
        report = crm_sync.push_changed_traits(
            svc.db, tenant_id, connector, prefix, svc.clock(), dry_run=dry_run
        )
        report.schema_created = created
        if not dry_run:
            report.tasks_created = crm_sync.create_cs_tasks(
                svc.db, tenant_id, connector, svc.clock()
            )
            report.handoffs_written = write_handoffs(svc.db, tenant_id, connector, svc.clock())
    except CrmPaused as exc:
        _pause(svc, tenant_id, exc)
        raise
    except CrmError as exc:
        if exc.category == "INVALID_FIELD":
            # The fields are hidden from the app (permission set removed or unassigned):
            # the next sync checks the schema again, which grants them.
            note(svc.db, tenant_id, schema_version=None)
        if not isinstance(exc, AuthorizationLost):
            note(svc.db, tenant_id, sync_error={"at": svc.clock().isoformat(), "error": str(exc)})
        raise
    finally:
        report_calls = dict(connector.caller.stats)
        usage = _usage(connector)
        if usage:
            note(svc.db, tenant_id, crm_api_usage={**usage, "at": svc.clock().isoformat()})
    report.calls = report_calls
    if not dry_run:
        note(
            svc.db,
            tenant_id,
            sync_paused=None,
            sync_error=None,
            last_sync={"at": svc.clock().isoformat(), **report.summary()},
        )
    return report


def pull_tenant(svc, tenant_id: int) -> dict[str, int]:
    now = svc.clock()
    if paused(svc.db, tenant_id, now):
        return {"paused": 1}
    connector = connector_for(svc, tenant_id)
    try:
        return crm_sync.pull(svc.db, tenant_id, connector, now)
    except CrmPaused as exc:
        _pause(svc, tenant_id, exc)
        raise


def uninstall(svc, tenant_id: int) -> None:
    """Stop every sync and forget the tokens now (revoked at the CRM where it offers that);
    the data goes after the grace period (``purge_uninstalled``). Write keys are revoked so
    events stop being accepted."""
    now = svc.clock()
    tenant = _tenant(svc.db, tenant_id)
    if tenant.crm == "salesforce" and tenant.refresh_token_encrypted:
        from app.salesforce_app import revoke_tokens

        revoke_tokens(svc, tenant)
    with svc.db.system_transaction() as session:
        tenant = session.get(Tenant, tenant_id, with_for_update=True)
        tenant.status = "uninstalled"
        tenant.uninstalled_at = tenant.uninstalled_at or now
        tenant.access_token_encrypted = None
        tenant.refresh_token_encrypted = None
        tenant.access_token_expires_at = None
        session.execute(
            WriteKey.__table__.update()
            .where(WriteKey.tenant_id == tenant_id, WriteKey.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    log.info("tenant %s: uninstalled", tenant_id)


def purge_uninstalled(db: Database, now: dt.datetime, grace: dt.timedelta) -> list[int]:
    """Delete tenants uninstalled longer than ``grace`` ago, with all their data."""
    with db.system_transaction() as session:
        ids = list(
            session.scalars(
                select(Tenant.id).where(
                    Tenant.status == "uninstalled", Tenant.uninstalled_at <= now - grace
                )
            )
        )
        if ids:
            session.execute(delete(Tenant).where(Tenant.id.in_(ids)))
    for tenant_id in ids:
        log.info("tenant %s: data deleted after the uninstall grace period", tenant_id)
    return ids


def fields_hint(crm: str) -> str:
    group = crm_properties.GROUP_LABEL
    if crm == "salesforce":
        return (
            "In Salesforce, the app's fields are on Accounts, Contacts and Leads (API names "
            "ending in <code>__c</code>), readable through the <b>PQL engine</b> permission "
            "set; add them to page layouts and build list views, reports and flows on them."
        )
    return (
        f"In HubSpot, find the <b>{group}</b> property group on companies and contacts; build "
        "lists and workflows on Activation rate, engagement segment, PQL and lead type."
    )
