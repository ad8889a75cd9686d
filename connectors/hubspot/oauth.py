"""HubSpot's OAuth 2026-03 endpoints: the code exchange, refresh, introspection and revocation.

The token answer carries the portal (``hub_id``) and the installing user (``user_id``), so no
token-info call follows an install. Errors follow RFC 6749 (``error``, ``error_description``,
with HubSpot's ``status``/``message`` beside them): ``invalid_grant`` means the refresh token
is refused for good (uninstalled, or revoked), any other refusal may pass on a retry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from connectors.base import AuthorizationLost, CrmError
from connectors.hubspot.api import HubSpotApi
from connectors.hubspot.client import checked_request, classify, error_body

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int
    hub_id: int | None = None
    user_id: int | None = None


def _refusal(exc: Exception) -> CrmError:
    failure = classify(exc)
    if failure is None:
        raise exc
    body = error_body(getattr(exc, "body", None))
    error = body.get("error")
    detail = body.get("error_description") or body.get("message") or failure.message
    if error == "invalid_grant":
        return AuthorizationLost(f"HubSpot refused the grant: {detail}", failure.status, error)
    return CrmError(f"HubSpot's token endpoint: {detail}", failure.status, error)


def token_request(api: HubSpotApi, path: str, form: dict[str, str]) -> dict:
    try:
        return api.request("POST", api.oauth(path), form=form)
    except CrmError:
        raise
    except Exception as exc:
        raise _refusal(exc) from exc


def _grant(api: HubSpotApi, client_id: str, client_secret: str, **grant: str) -> Tokens:
    answer = token_request(
        api, "token", {"client_id": client_id, "client_secret": client_secret, **grant}
    )
    # A refresh may or may not hand back the refresh token; the one we hold stays valid.
    refresh = answer.get("refresh_token") or grant.get("refresh_token", "")
    hub_id, user_id = answer.get("hub_id"), answer.get("user_id")
    return Tokens(
        answer["access_token"],
        refresh,
        int(answer["expires_in"]),
        int(hub_id) if hub_id is not None else None,
        int(user_id) if user_id is not None else None,
    )


def exchange_code(
    api: HubSpotApi, client_id: str, client_secret: str, code: str, redirect_uri: str
) -> Tokens:
    """The OAuth callback's code → tokens, with the portal they are for."""
    tokens = _grant(
        api,
        client_id,
        client_secret,
        grant_type="authorization_code",
        code=code,
        redirect_uri=redirect_uri,
    )
    if tokens.hub_id is None:
        raise CrmError("HubSpot's token answer names no portal (hub_id)", 502)
    return tokens


def refresh_tokens(
    api: HubSpotApi, client_id: str, client_secret: str, refresh_token: str
) -> Tokens:
    return _grant(
        api, client_id, client_secret, grant_type="refresh_token", refresh_token=refresh_token
    )


def introspect(api: HubSpotApi, client_id: str, client_secret: str, token: str) -> dict:
    """What HubSpot knows of a token: ``active``, ``hub_id``, ``user_id``, ``scopes`` ..."""
    return token_request(
        api,
        "token/introspect",
        {"client_id": client_id, "client_secret": client_secret, "token": token},
    )


def is_super_admin(api: HubSpotApi, access_token: str, user_id: int) -> bool:
    """Whether the user a token was granted by is a Super Admin of its portal (the Users
    API's ``superAdmin``; scope ``settings.users.read``)."""
    try:
        user = checked_request(
            api, "HubSpot's users API", "GET", api.users(str(user_id)), token=access_token
        )
    except CrmError as exc:
        if exc.status == 404:  # not a user of this portal
            return False
        raise
    return user.get("superAdmin") is True


def revoke(api: HubSpotApi, client_id: str, client_secret: str, refresh_token: str) -> bool:
    """Revoke a refresh token (its access tokens go with it). Best effort: an unreachable
    HubSpot does not stop an uninstall, the tokens are deleted here anyway."""
    try:
        token_request(
            api,
            "token/revoke",
            {
                "client_id": client_id,
                "client_secret": client_secret,
                "token": refresh_token,
                "token_type_hint": "refresh_token",
            },
        )
    except CrmError as exc:
        log.warning("HubSpot token revocation failed: %s", exc)
        return False
    return True
