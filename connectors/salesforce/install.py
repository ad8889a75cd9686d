"""The Salesforce app: OAuth web-server install with PKCE (production or sandbox orgs), token
revocation, and a tenant's Salesforce connector.

The install starts at ``/salesforce/install`` (``?environment=sandbox`` for a sandbox org). The
PKCE verifier and a nonce travel in a signed, HTTP-only cookie; the state parameter carries
only the signed nonce and the login host, so neither the verifier nor a forged state can
complete someone else's install.
"""

from __future__ import annotations

import logging
import re
import secrets

from flask import Blueprint, make_response, redirect, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from app.services import services
from app.sync import lifecycle
from app.web import install_pages
from connectors.base import CrmError
from connectors.salesforce import KEY, auth
from connectors.salesforce.package import CALLBACK_PATH

log = logging.getLogger(__name__)

bp = Blueprint(KEY, __name__, url_prefix="/salesforce")

STATE_MAX_AGE = 600
STATE_COOKIE = "pql_sf_install"
ENVIRONMENTS = ("production", "sandbox")
# An org's My Domain login host (orgs may block login.salesforce.com for their users).
MY_DOMAIN = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,62})(?:--[a-z0-9]+)?(?:\.(?:sandbox|develop))?\.my\.salesforce\.com"
)


def my_domain_login(raw: str) -> str | None:
    """``https://<host>`` for a My Domain host (``acme.my.salesforce.com``, with or without
    ``https://``), None for anything else: the host is where the code is exchanged, so it
    must be Salesforce's."""
    host = raw.strip().lower().removeprefix("https://").rstrip("/")
    return f"https://{host}" if MY_DOMAIN.fullmatch(host) else None


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(services().settings.secret_key, salt=f"salesforce-{purpose}")


def _redirect_uri() -> str:
    return services().settings.public_url + CALLBACK_PATH


def login_url(settings, environment: str) -> str:
    return (
        settings.salesforce_sandbox_login_url
        if environment == "sandbox"
        else settings.salesforce_login_url
    )


def _error_page(message: str, status: int):
    return install_pages.error_page(message, status, retry="/salesforce/install")


@bp.before_request
def _configured():
    if not services().settings.salesforce_enabled:
        return _error_page(
            "Salesforce installs are not configured on this server "
            "(SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET).",
            404,
        )
    return None


@bp.get("/install")
def install():
    settings = services().settings
    environment = request.args.get("environment", "production")
    if environment not in ENVIRONMENTS:
        return _error_page("environment must be production or sandbox.", 400)
    login = login_url(settings, environment)
    if request.args.get("my_domain"):
        login = my_domain_login(request.args["my_domain"])
        if login is None:
            return _error_page(
                "my_domain must be your org's My Domain host, like acme.my.salesforce.com.", 400
            )
    verifier, challenge = auth.pkce_pair()
    nonce = secrets.token_urlsafe(16)
    state = _serializer("state").dumps({"nonce": nonce, "environment": environment, "login": login})
    target = auth.authorize_url(
        login,
        settings.salesforce_client_id,
        _redirect_uri(),
        state,
        challenge,
    )
    response = make_response(redirect(target))
    response.set_cookie(
        STATE_COOKIE,
        _serializer("cookie").dumps({"nonce": nonce, "verifier": verifier}),
        max_age=STATE_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=settings.is_production,
    )
    return response


@bp.get("/oauth-callback")
def oauth_callback():
    if request.args.get("error"):
        detail = request.args.get("error_description") or request.args["error"]
        return _error_page(f"Salesforce said: {detail}", 400)
    code, state = request.args.get("code"), request.args.get("state")
    if not code or not state:
        return _error_page("The callback is missing its code or state.", 400)
    try:
        payload = _serializer("state").loads(state, max_age=STATE_MAX_AGE)
        cookie = _serializer("cookie").loads(
            request.cookies.get(STATE_COOKIE, ""), max_age=STATE_MAX_AGE
        )
    except SignatureExpired:
        return _error_page("The install took too long; please start again.", 400)
    except BadSignature:
        return _error_page(
            "The install's state does not match this browser (possible forgery, or the "
            "install was started in another browser).",
            400,
        )
    if payload.get("nonce") != cookie.get("nonce"):
        return _error_page("This install was started in another browser.", 400)
    svc = services()
    try:
        installed = complete_install(
            svc,
            code,
            _redirect_uri(),
            cookie["verifier"],
            payload["environment"],
            login=payload.get("login"),
        )
    except MissingPermissions as exc:
        return _error_page(
            "The app creates its fields through the Metadata API and assigns them to its user "
            "with a permission set, so the person installing it needs "
            + " and ".join(exc.missing)
            + ". Ask a Salesforce admin to install it, or to grant you these permissions.",
            403,
        )
    except CrmError as exc:
        log.warning("Salesforce install failed: %s", exc)
        return _error_page(f"Salesforce refused the install ({exc}).", 502)
    return install_pages.installed_page(svc, KEY, installed, STATE_COOKIE)


class MissingPermissions(CrmError):
    """The installing user cannot create the app's fields or assign its permission set."""

    def __init__(self, missing: list[str]):
        super().__init__("missing permissions: " + "; ".join(missing), 403)
        self.missing = missing


def complete_install(
    svc,
    code: str,
    redirect_uri: str,
    verifier: str,
    environment: str = "production",
    login: str | None = None,
) -> lifecycle.Installed:
    """Exchange the code (with the PKCE verifier) at the login host the install started on
    (the org's My Domain when given; it is kept for the tenant's refreshes); the token answer
    names the org, the integration user and the instance URL."""
    settings = svc.settings
    login = login or login_url(settings, environment)
    tokens = auth.exchange_code(
        login,
        settings.salesforce_client_id,
        settings.salesforce_client_secret,
        code,
        redirect_uri,
        verifier,
        verify=verify_tls(settings),
    )
    missing = auth.missing_admin_permissions(
        tokens, settings.salesforce_api_version, verify=verify_tls(settings)
    )
    if missing:
        # Nothing is kept of this user's grant: their token is revoked at once.
        auth.revoke(login, tokens.refresh_token or tokens.access_token, verify=verify_tls(settings))
        raise MissingPermissions(missing)
    grant = lifecycle.Grant(tokens.access_token, tokens.refresh_token, tokens.expires_in)
    installed = lifecycle.activate(
        svc,
        KEY,
        tokens.org_id,
        grant,
        {
            "instance_url": tokens.instance_url,
            "integration_user_id": tokens.user_id,
            "login_url": login,
            "environment": environment,
        },
    )
    if installed.grant_unused:
        # An admin signed in to an active org: the sync keeps its own user and tokens, this
        # consent's token is not kept anywhere.
        auth.revoke(login, tokens.refresh_token or tokens.access_token, verify=verify_tls(settings))
    return installed


def verify_tls(settings) -> str | bool:
    """What requests checks Salesforce's certificate against: the system's CAs, or the
    local sandbox's own certificate."""
    return settings.salesforce_ca_bundle or True
