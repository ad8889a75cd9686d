"""Salesforce as a provider: what it is, its blueprint, a tenant's connector (the org's daily
API allowance with a reserve, tokens refreshed under the tenant's lock) and token revocation."""

from __future__ import annotations

import logging
import random

import requests
from werkzeug.exceptions import NotFound

from app.models import Tenant
from app.sync import properties
from app.sync.access import TenantTokens
from connectors.base import AuthorizationLost, Caller
from connectors.registry import Capabilities, Provider, register
from connectors.salesforce import KEY, auth
from connectors.salesforce.client import PinnedSession, SalesforceConnector, TimedSession
from connectors.salesforce.errors import DailyLimit, classify
from connectors.salesforce.install import bp as install_bp
from connectors.salesforce.install import verify_tls

log = logging.getLogger(__name__)


def _session(settings) -> requests.Session:
    if settings.salesforce_ca_bundle:
        return PinnedSession(settings.salesforce_ca_bundle)
    return TimedSession()


def connector_for(svc, tenant_id: int, rng: random.Random | None = None) -> SalesforceConnector:
    settings = svc.settings
    with svc.db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None or tenant.crm != KEY:
            raise NotFound(f"tenant {tenant_id} is not a Salesforce installation")
        if tenant.status != "active":
            raise AuthorizationLost(f"tenant {tenant_id} is {tenant.status}")
        doc = dict(tenant.settings or {})
    login = doc.get("login_url") or settings.salesforce_login_url

    def refresh(refresh_token: str):
        return auth.refresh_tokens(
            login,
            settings.salesforce_client_id,
            settings.salesforce_client_secret,
            refresh_token,
            verify=verify_tls(settings),
        )

    limit = DailyLimit(
        reserve_fraction=settings.salesforce_api_reserve_percent / 100,
        pause_seconds=settings.salesforce_pause_minutes * 60,
    )
    caller = Caller(
        budget=limit,
        tokens=TenantTokens(svc.db, tenant_id, svc.token_cipher, refresh, svc.clock),
        classify=classify,
        rng=rng or random.Random(),
    )
    prefix = settings.property_prefix
    return SalesforceConnector(
        doc["instance_url"],
        caller,
        {
            "account": properties.key_property(prefix, "account"),
            "user": properties.key_property(prefix, "user"),
        },
        properties.kinds(prefix),
        limit,
        integration_user_id=doc.get("integration_user_id"),
        bulk_threshold=settings.salesforce_bulk_threshold,
        api_version=settings.salesforce_api_version,
        session=_session(settings),
    )


def revoke_tokens(svc, tenant: Tenant) -> bool:
    """Revoke the refresh token at Salesforce (its access tokens go with it). Best effort: an
    unreachable Salesforce does not stop the uninstall, the tokens are deleted here anyway."""
    login = (tenant.settings or {}).get("login_url") or svc.settings.salesforce_login_url
    token = svc.token_cipher.decrypt(tenant.refresh_token_encrypted)
    revoked = auth.revoke(login, token, verify=verify_tls(svc.settings))
    log.info("tenant %s: Salesforce tokens %s", tenant.id, "revoked" if revoked else "not revoked")
    return revoked


def account_url(tenant: Tenant, crm_id: str) -> str | None:
    instance = (tenant.settings or {}).get("instance_url", "")
    return f"{instance}/lightning/r/Account/{crm_id}/view" if instance else None


PROVIDER = register(
    Provider(
        key=KEY,
        display_name="Salesforce",
        account_noun="org",
        blueprints=(install_bp,),
        connector_for=connector_for,
        fields_hint=(
            "In Salesforce, the app's fields are on Accounts, Contacts and Leads (API names "
            "ending in <code>__c</code>), readable through the <b>PQL engine</b> permission "
            "set; add them to page layouts and build list views, reports and flows on them."
        ),
        account_url=account_url,
        sign_in=(
            ("Sign in with Salesforce", "/salesforce/install"),
            ("a sandbox org", "/salesforce/install?environment=sandbox"),
        ),
        enabled=lambda settings: settings.salesforce_enabled,
        capabilities=Capabilities(daily_api_limit=True, bulk_writes=True, token_revocation=True),
        revoke=revoke_tokens,
    )
)
