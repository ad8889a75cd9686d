"""The HubSpot app: OAuth install and callback, and a tenant's HubSpot connector.

Routes are thin; what every CRM shares (activating the tenant, sync, uninstall) is in
``app.sync.lifecycle``.
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlencode

from flask import Blueprint, make_response, redirect, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from app.services import services
from app.sync import lifecycle
from app.web import install_pages
from connectors.base import CrmError
from connectors.hubspot import KEY, oauth
from connectors.hubspot import client as hubspot
from connectors.hubspot.api import HubSpotApi

log = logging.getLogger(__name__)

bp = Blueprint(KEY, __name__, url_prefix="/hubspot")

STATE_MAX_AGE = 600  # seconds an install may take between redirect and callback
STATE_COOKIE = "pql_install"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(services().settings.secret_key, salt="hubspot-install")


def _redirect_uri() -> str:
    return services().settings.public_url + "/hubspot/oauth-callback"


@bp.before_request
def _configured():
    if not services().settings.hubspot_enabled:
        return _error_page(
            "HubSpot installs are not configured on this server "
            "(HUBSPOT_CLIENT_ID and HUBSPOT_CLIENT_SECRET).",
            404,
        )
    return None


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
    return install_pages.error_page(message, status, retry="/hubspot/install")


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
    except NotAnAdmin as exc:
        return _error_page(
            f"Only a Super Admin of HubSpot account {exc.hub_id} can install this app or sign "
            "in to its admin pages: it runs the account's sync and holds its keys. Ask a Super "
            "Admin to open this page, or to make you one.",
            403,
        )
    except CrmError as exc:
        log.warning("HubSpot install failed: %s", exc)
        return _error_page(f"HubSpot refused the install ({exc}).", 502)
    return install_pages.installed_page(svc, KEY, installed, STATE_COOKIE)


class NotAnAdmin(CrmError):
    """The person who approved the consent is not a Super Admin of the portal."""

    def __init__(self, hub_id: int):
        super().__init__(f"the installing user is not a Super Admin of portal {hub_id}", 403)
        self.hub_id = hub_id


def complete_install(svc, code: str, redirect_uri: str) -> lifecycle.Installed:
    """Exchange the code (the answer names the portal and the user), check that the user is
    a Super Admin of the portal, then activate its tenant (``lifecycle.activate``: an active
    tenant keeps its tokens, and this consent's token is revoked when it is another one)."""
    settings = svc.settings
    api = api_for(settings)
    tokens = oauth.exchange_code(
        api,
        settings.hubspot_client_id,
        settings.hubspot_client_secret,
        code,
        redirect_uri,
    )

    def drop_grant() -> None:
        oauth.revoke(
            api, settings.hubspot_client_id, settings.hubspot_client_secret, tokens.refresh_token
        )

    if tokens.user_id is None or not oauth.is_super_admin(api, tokens.access_token, tokens.user_id):
        if not _holds(svc, str(tokens.hub_id), tokens.refresh_token):
            drop_grant()
        raise NotAnAdmin(tokens.hub_id)
    grant = lifecycle.Grant(tokens.access_token, tokens.refresh_token, tokens.expires_in)
    installed = lifecycle.activate(svc, KEY, str(tokens.hub_id), grant)
    if installed.grant_unused:
        drop_grant()
    return installed


def _holds(svc, hub_id: str, refresh_token: str) -> bool:
    """Whether this refresh token is the one the portal's tenant syncs with (HubSpot may hand
    the same one to the same user again): revoking it would disconnect the tenant."""
    return lifecycle.holds_refresh_token(svc, KEY, hub_id, refresh_token)


def api_for(settings) -> HubSpotApi:
    """HubSpot's API at the configured date version (``HUBSPOT_API_VERSION``)."""
    return HubSpotApi(settings.hubspot_base_url, settings.hubspot_api_version)
