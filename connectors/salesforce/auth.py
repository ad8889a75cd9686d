"""Salesforce's OAuth 2.0 web-server flow with PKCE: the authorize URL, the code exchange,
refresh-token grants and revocation."""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode, urlparse

import requests

from connectors.base import AuthorizationLost, CrmError
from connectors.salesforce.api import SCOPES, TIMEOUT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SalesforceTokens:
    access_token: str
    refresh_token: str
    instance_url: str
    org_id: str
    user_id: str
    # Salesforce does not say when an access token expires (the org's session timeout
    # decides): refreshed after this long, or at once when a call answers 401.
    expires_in: int = 3600


def pkce_pair() -> tuple[str, str]:
    """A code verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(
    login_url: str, client_id: str, redirect_uri: str, state: str, challenge: str
) -> str:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(SCOPES),
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "prompt": "login consent",
    }
    return f"{login_url.rstrip('/')}/services/oauth2/authorize?{urlencode(query)}"


# Token endpoint answers that Salesforce documents as "try again", not as a refused grant.
TRANSIENT_TOKEN_ERRORS = (
    "token request is already being processed",
    "retry your request",
)


def _transient(error: str, detail: str) -> bool:
    text = detail.lower()
    return error == "unknown_error" or any(t in text for t in TRANSIENT_TOKEN_ERRORS)


def _token_grant(
    login_url: str, form: dict[str, str], keep_refresh: str = "", verify: str | bool = True
) -> SalesforceTokens:
    url = f"{login_url.rstrip('/')}/services/oauth2/token"
    try:
        response = requests.post(url, data=form, timeout=TIMEOUT, verify=verify)
    except requests.RequestException as exc:
        raise CrmError(f"Salesforce token endpoint unreachable: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        error = body.get("error") or ""
        detail = body.get("error_description") or error or response.text[:200]
        message = f"Salesforce refused the token request: {detail}"
        if _transient(error, detail) or response.status_code >= 500:
            # Salesforce asks to try again: not a refusal of the grant.
            raise CrmError(message, 503, error or None)
        if error == "invalid_grant":
            raise AuthorizationLost(message, response.status_code, error)
        raise CrmError(message, response.status_code, error or None)
    missing = [k for k in ("access_token", "instance_url", "id") if not body.get(k)]
    if missing:
        raise CrmError(f"Salesforce's token answer lacks {', '.join(missing)}", 502)
    # The identity URL ends in /id/<org id>/<user id>.
    parts = urlparse(body["id"]).path.rstrip("/").split("/")
    if len(parts) < 3 or parts[-3] != "id":
        raise CrmError(f"Salesforce's identity URL is not understood: {body['id']}", 502)
    return SalesforceTokens(
        access_token=body["access_token"],
        refresh_token=body.get("refresh_token") or keep_refresh,
        instance_url=body["instance_url"].rstrip("/"),
        org_id=parts[-2],
        user_id=parts[-1],
    )


def exchange_code(
    login_url: str,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
    verifier: str,
    verify: str | bool = True,
) -> SalesforceTokens:
    tokens = _token_grant(
        login_url,
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        verify=verify,
    )
    if not tokens.refresh_token:
        raise CrmError(
            "Salesforce gave no refresh token: the connected app needs the refresh_token scope",
            502,
        )
    return tokens


def refresh_tokens(
    login_url: str,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    verify: str | bool = True,
) -> SalesforceTokens:
    """A new access token, and a new refresh token where the app rotates them (partner apps
    must); without one in the answer the one held stays valid."""
    return _token_grant(
        login_url,
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
            "client_secret": client_secret,
        },
        keep_refresh=refresh_token,
        verify=verify,
    )


def revoke(login_url: str, token: str, verify: str | bool = True) -> bool:
    """Revoke a refresh token (and its access tokens). True when Salesforce confirmed."""
    try:
        response = requests.post(
            f"{login_url.rstrip('/')}/services/oauth2/revoke",
            data={"token": token},
            timeout=TIMEOUT,
            verify=verify,
        )
    except requests.RequestException as exc:
        log.warning("Salesforce token revocation failed: %s", exc)
        return False
    if response.status_code != 200:
        log.warning("Salesforce token revocation answered %s", response.status_code)
    return response.status_code == 200


# What the installing user needs: the app creates fields through the Metadata API and assigns
# its permission set to the integration user.
ADMIN_PERMISSIONS = {
    "Modify Metadata Through Metadata API Functions (or Modify All Data)": (
        "PermissionsModifyAllData",
        "PermissionsModifyMetadata",
    ),
    "Assign Permission Sets (or Modify All Data)": (
        "PermissionsModifyAllData",
        "PermissionsAssignPermissionSets",
    ),
}


def missing_admin_permissions(
    tokens: SalesforceTokens, api_version: str, verify: str | bool = True
) -> list[str]:
    """The permissions the installing user lacks, read from the permission sets assigned to
    them (their profile's included)."""
    base = f"{tokens.instance_url}/services/data/v{api_version}/query"
    headers = {"Authorization": f"Bearer {tokens.access_token}"}

    def query(soql: str) -> list[dict]:
        try:
            answer = requests.get(
                base, params={"q": soql}, headers=headers, timeout=TIMEOUT, verify=verify
            )
        except requests.RequestException as exc:
            raise CrmError(f"Salesforce unreachable: {exc}") from exc
        if answer.status_code != 200:
            raise CrmError(f"Salesforce refused reading permissions: {answer.text[:200]}", 502)
        return answer.json().get("records") or []

    user = tokens.user_id.replace("'", "")
    assigned = [
        r["PermissionSetId"]
        for r in query(
            f"SELECT PermissionSetId FROM PermissionSetAssignment WHERE AssigneeId = '{user}'"
        )
    ]
    columns = sorted({c for names in ADMIN_PERMISSIONS.values() for c in names})
    held: set[str] = set()
    if assigned:
        ids = ", ".join(f"'{i}'" for i in assigned)
        for row in query(f"SELECT Id, {', '.join(columns)} FROM PermissionSet WHERE Id IN ({ids})"):
            held |= {c for c in columns if row.get(c)}
    return [need for need, any_of in ADMIN_PERMISSIONS.items() if not held & set(any_of)]
