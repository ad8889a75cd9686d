"""The HubSpot app: OAuth install and callback, uninstall, and a tenant's connector and sync.

Routes are thin; the install's work (tokens, tenant, write key, schema) is in functions below.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

from flask import Blueprint, make_response, redirect, render_template_string, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import delete, select, update
from werkzeug.exceptions import NotFound

from app import crm_properties, crm_sync, services
from app.crm_access import SharedRateBudget, TenantTokens
from app.db import Database
from app.models import AccountScore, CrmRecord, Tenant, UserScore, WriteKey
from app.tenants import issue_write_key
from connectors import hubspot
from connectors.base import AuthorizationLost, Caller, CrmError

log = logging.getLogger(__name__)

bp = Blueprint("hubspot", __name__, url_prefix="/hubspot")

STATE_MAX_AGE = 600  # seconds an install may take between redirect and callback
STATE_COOKIE = "pql_install"
# HubSpot counts requests per rolling 10 s by their arrival; the budget counts them when they
# leave. A quarter second more covers the difference in network and scheduling delays.
BUDGET_WINDOW = 10.25

INSTALLED_PAGE = """<!doctype html>
<title>PQL engine installed</title>
<h1>Installed in HubSpot portal {{ portal }}</h1>
<p>Send your product's events to <code>{{ public_url }}/v1/batch</code> (Segment-compatible
HTTP API) with this write key as the Basic-auth user name. It is shown once: copy it now.</p>
<pre>{{ key }}</pre>
<h2>Next steps</h2>
<ol>
<li>Point your Segment/RudderStack destination or SDK at the URL above with the key.</li>
<li>In HubSpot, find the <b>{{ group }}</b> property group on companies and contacts; build
lists and workflows on Activation rate, engagement segment, PQL and lead type.</li>
<li>Adjust Activation steps, scoring profiles and PQL thresholds with
<code>pql definitions export/import</code> or the JSON API.</li>
</ol>
"""

ERROR_PAGE = """<!doctype html><title>Install failed</title>
<h1>The install did not complete</h1><p>{{ message }}</p>
<p><a href="{{ retry }}">Start again</a></p>"""


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(services().settings.secret_key, salt="hubspot-install")


def _redirect_uri() -> str:
    return services().settings.public_url + "/hubspot/oauth-callback"


@bp.get("/install")
def install():
    """Send the admin to HubSpot's consent screen with a signed state bound to this browser."""
    settings = services().settings
    nonce = secrets.token_urlsafe(16)
    query = {
        "client_id": settings.hubspot_client_id,
        "redirect_uri": _redirect_uri(),
        "scope": " ".join(hubspot.SCOPES),
        "state": _serializer().dumps({"nonce": nonce}),
    }
    if request.args.get("hub_id", "").isdigit():
        query["hub_id"] = request.args["hub_id"]  # the sandbox's portal choice
    response = make_response(redirect(f"{settings.hubspot_authorize_url}?{urlencode(query)}"))
    response.set_cookie(
        STATE_COOKIE,
        nonce,
        max_age=STATE_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=settings.is_production,
    )
    return response


def _error_page(message: str, status: int):
    page = render_template_string(ERROR_PAGE, message=message, retry="/hubspot/install")
    return page, status


@bp.get("/oauth-callback")
def oauth_callback():
    if request.args.get("error"):
        return _error_page(
            f"HubSpot said: {request.args.get('error_description') or request.args['error']}",
            400,
        )
    code, state = request.args.get("code"), request.args.get("state")
    if not code or not state:
        return _error_page("The callback is missing its code or state.", 400)
    try:
        payload = _serializer().loads(state, max_age=STATE_MAX_AGE)
    except SignatureExpired:
        return _error_page("The install took too long; please start again.", 400)
    except BadSignature:
        return _error_page("The install's state does not match (possible forgery).", 400)
    if payload.get("nonce") != request.cookies.get(STATE_COOKIE):
        return _error_page("This install was started in another browser.", 400)
    svc = services()
    try:
        installed = complete_install(svc, code, _redirect_uri())
    except CrmError as exc:
        log.warning("HubSpot install failed: %s", exc)
        return _error_page(f"HubSpot refused the install ({exc}).", 502)
    page = render_template_string(
        INSTALLED_PAGE,
        portal=installed.portal,
        key=installed.write_key,
        public_url=svc.settings.public_url,
        group=crm_properties.GROUP_LABEL,
    )
    response = make_response(page)
    response.delete_cookie(STATE_COOKIE)
    return response


@dataclass(frozen=True)
class Installed:
    tenant_id: int
    portal: int
    write_key: str
    reinstalled: bool


def complete_install(svc, code: str, redirect_uri: str) -> Installed:
    """Exchange the code, find the portal, create or re-activate its tenant, keep the tokens
    (encrypted), issue a write key and create the CRM properties."""
    settings = svc.settings
    tokens = hubspot.exchange_code(
        settings.hubspot_base_url,
        settings.hubspot_client_id,
        settings.hubspot_client_secret,
        code,
        redirect_uri,
    )
    portal = hubspot.portal_of(settings.hubspot_base_url, tokens.access_token)
    now = svc.clock()
    with svc.db.system_transaction() as session:
        tenant = session.scalars(
            select(Tenant)
            .where(Tenant.crm == "hubspot", Tenant.external_id == str(portal))
            .with_for_update()
        ).one_or_none()
        reinstalled = tenant is not None
        if tenant is None:
            tenant = Tenant(
                name=f"HubSpot portal {portal}",
                crm="hubspot",
                external_id=str(portal),
                settings={},
            )
            session.add(tenant)
        tenant.status = "active"
        tenant.uninstalled_at = None
        tenant.access_token_encrypted = svc.token_cipher.encrypt(tokens.access_token)
        tenant.refresh_token_encrypted = svc.token_cipher.encrypt(tokens.refresh_token)
        tenant.access_token_expires_at = now + dt.timedelta(seconds=tokens.expires_in)
        settings_doc = dict(tenant.settings or {})
        settings_doc.pop("schema_version", None)  # a reinstall re-checks the properties
        tenant.settings = settings_doc
        session.flush()
        tenant_id = tenant.id
    if reinstalled:
        # What HubSpot holds may have changed while we were away: push everything once more
        # (records deleted meanwhile answer 207 and are matched or created again).
        with svc.db.tenant_transaction(tenant_id) as session:
            session.execute(update(CrmRecord).values(pushed={}))
            for model in (AccountScore, UserScore):
                session.execute(update(model).values(crm_pending=True))
    key = issue_write_key(svc.db, tenant_id, label="HubSpot install").secret
    log.info("tenant %s: installed in HubSpot portal %s", tenant_id, portal)
    try:
        crm_sync.ensure_schema(
            svc.db, tenant_id, connector_for(svc, tenant_id), settings.property_prefix
        )
    except CrmError as exc:
        # The worker retries on its next sync; the install itself succeeded.
        log.warning("tenant %s: schema not created at install: %s", tenant_id, exc)
    return Installed(tenant_id, portal, key, reinstalled)


def connector_for(
    svc, tenant_id: int, rng: random.Random | None = None
) -> hubspot.HubSpotConnector:
    settings = svc.settings
    with svc.db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None or tenant.crm != "hubspot":
            raise NotFound(f"tenant {tenant_id} is not a HubSpot installation")
        if tenant.status != "active":
            raise AuthorizationLost(f"tenant {tenant_id} is {tenant.status}")
        portal = tenant.external_id

    def refresh(refresh_token: str):
        return hubspot.refresh_tokens(
            settings.hubspot_base_url,
            settings.hubspot_client_id,
            settings.hubspot_client_secret,
            refresh_token,
        )

    caller = Caller(
        budget=SharedRateBudget(
            svc.db, f"hubspot:{portal}", settings.hubspot_requests_per_10s, window=BUDGET_WINDOW
        ),
        tokens=TenantTokens(svc.db, tenant_id, svc.token_cipher, refresh, svc.clock),
        classify=hubspot.classify,
        rng=rng or random.Random(),
    )
    prefix = settings.property_prefix
    return hubspot.HubSpotConnector(
        settings.hubspot_base_url,
        caller,
        {
            "companies": crm_properties.key_property(prefix, "account"),
            "contacts": crm_properties.key_property(prefix, "user"),
        },
    )


def sync_tenant(svc, tenant_id: int, dry_run: bool = False) -> crm_sync.SyncReport:
    """Ensure the schema, push what changed, create CS tasks for drops (not in a dry run)."""
    connector = connector_for(svc, tenant_id)
    prefix = svc.settings.property_prefix
    created = [] if dry_run else crm_sync.ensure_schema(svc.db, tenant_id, connector, prefix)
    report = crm_sync.push_changed_traits(
        svc.db, tenant_id, connector, prefix, svc.clock(), dry_run=dry_run
    )
    report.schema_created = created
    if not dry_run:
        report.tasks_created = crm_sync.create_cs_tasks(svc.db, tenant_id, connector, svc.clock())
    report.calls = dict(connector.caller.stats)
    return report


def pull_tenant(svc, tenant_id: int) -> dict[str, int]:
    return crm_sync.pull(svc.db, tenant_id, connector_for(svc, tenant_id), svc.clock())


def uninstall(db: Database, tenant_id: int, now: dt.datetime) -> None:
    """Stop every sync and forget the tokens now; the data goes after the grace period
    (``purge_uninstalled``). Write keys are revoked so events stop being accepted."""
    with db.system_transaction() as session:
        tenant = session.get(Tenant, tenant_id, with_for_update=True)
        if tenant is None:
            raise NotFound(f"no tenant with id {tenant_id}")
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
