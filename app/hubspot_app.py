"""The HubSpot app: OAuth install and callback, and a tenant's HubSpot connector.

Routes are thin; what every CRM shares (activating the tenant, sync, uninstall) is in
``app.crm_apps``.
"""

from __future__ import annotations

import logging
import random
import secrets
from urllib.parse import urlencode

from flask import Blueprint, make_response, redirect, render_template_string, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from werkzeug.exceptions import NotFound

from app import crm_apps, crm_properties, services
from app.crm_access import SharedRateBudget, TenantTokens
from app.models import Tenant
from connectors import hubspot
from connectors.base import AuthorizationLost, Caller, CrmError

log = logging.getLogger(__name__)

bp = Blueprint("hubspot", __name__, url_prefix="/hubspot")

STATE_MAX_AGE = 600  # seconds an install may take between redirect and callback
STATE_COOKIE = "pql_install"
# HubSpot counts requests per rolling 10 s by their arrival; the budget counts them when they
# leave. A quarter second more covers the difference in network and scheduling delays.
BUDGET_WINDOW = 10.25


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
    page = render_template_string(crm_apps.ERROR_PAGE, message=message, retry="/hubspot/install")
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
    return crm_apps.installed_page(svc, "hubspot", installed, STATE_COOKIE)


def complete_install(svc, code: str, redirect_uri: str) -> crm_apps.Installed:
    """Exchange the code, find the portal, then activate its tenant (``crm_apps.activate``)."""
    settings = svc.settings
    tokens = hubspot.exchange_code(
        settings.hubspot_base_url,
        settings.hubspot_client_id,
        settings.hubspot_client_secret,
        code,
        redirect_uri,
    )
    portal = hubspot.portal_of(settings.hubspot_base_url, tokens.access_token)
    grant = crm_apps.Grant(tokens.access_token, tokens.refresh_token, tokens.expires_in)
    return crm_apps.activate(svc, "hubspot", str(portal), grant)


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
