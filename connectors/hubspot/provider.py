"""HubSpot as a provider: what it is, its blueprints, and a tenant's connector (rate budget
shared by every process, tokens refreshed under the tenant's lock)."""

from __future__ import annotations

import logging
import random

from werkzeug.exceptions import NotFound

from app.models import Tenant
from app.sync import properties
from app.sync.access import SharedRateBudget, TenantTokens
from connectors.base import AuthorizationLost, Caller, CrmError
from connectors.hubspot import KEY, oauth
from connectors.hubspot import client as hubspot
from connectors.hubspot.install import api_for
from connectors.hubspot.install import bp as install_bp
from connectors.hubspot.journal import JournalReader
from connectors.registry import Capabilities, Provider, register
from webhooks.hubspot import bp as webhooks_bp

# HubSpot counts requests per rolling 10 s by their arrival; the budget counts them when they
# leave. A quarter second more covers the difference in network and scheduling delays.
BUDGET_WINDOW = 10.25
# The search limit is per second; the same margin, scaled.
SEARCH_WINDOW = 1.05

log = logging.getLogger(__name__)


def connector_for(
    svc, tenant_id: int, rng: random.Random | None = None
) -> hubspot.HubSpotConnector:
    settings = svc.settings
    with svc.db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None or tenant.crm != KEY:
            raise NotFound(f"tenant {tenant_id} is not a HubSpot installation")
        if tenant.status != "active":
            raise AuthorizationLost(f"tenant {tenant_id} is {tenant.status}")
        portal = tenant.external_id

    api = api_for(settings)

    def refresh(refresh_token: str):
        return oauth.refresh_tokens(
            api, settings.hubspot_client_id, settings.hubspot_client_secret, refresh_token
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
        api,
        caller,
        {
            "companies": properties.key_property(prefix, "account"),
            "contacts": properties.key_property(prefix, "user"),
        },
        search_budget=SharedRateBudget(
            svc.db,
            f"hubspot-search:{portal}",
            settings.hubspot_searches_per_second,
            window=SEARCH_WINDOW,
        ),
    )


def revoke_tokens(svc, tenant: Tenant) -> bool:
    """Uninstalled from our side: uninstall the app from the portal, then revoke the refresh
    token (both best effort: the tokens are deleted here whatever HubSpot answers)."""
    settings = svc.settings
    try:
        connector_for(svc, tenant.id).uninstall_app()
    except CrmError as exc:
        log.warning("tenant %s: HubSpot did not uninstall the app: %s", tenant.id, exc)
    token = svc.token_cipher.decrypt(tenant.refresh_token_encrypted)
    revoked = oauth.revoke(
        api_for(settings), settings.hubspot_client_id, settings.hubspot_client_secret, token
    )
    log.info("tenant %s: HubSpot refresh token %s", tenant.id, "revoked" if revoked else "kept")
    return revoked


def lifecycle_events(svc, tenant: Tenant, offset: str | None):
    """The portal's installs and uninstalls in the app's webhooks journal since ``offset``."""
    settings = svc.settings
    reader = JournalReader(
        api_for(settings), settings.hubspot_client_id, settings.hubspot_client_secret
    )
    return reader.lifecycle_events(tenant.external_id, offset)


def account_url(tenant: Tenant, crm_id: str) -> str:
    return f"https://app.hubspot.com/contacts/{tenant.external_id}/company/{crm_id}"


PROVIDER = register(
    Provider(
        key=KEY,
        display_name="HubSpot",
        account_noun="portal",
        blueprints=(install_bp, webhooks_bp),
        connector_for=connector_for,
        fields_hint=(
            f"In HubSpot, find the <b>{properties.GROUP_LABEL}</b> property group on companies "
            "and contacts; build lists and workflows on Activation rate, engagement segment, "
            "PQL and lead type."
        ),
        account_url=account_url,
        sign_in=(("Sign in with HubSpot", "/hubspot/install"),),
        enabled=lambda settings: settings.hubspot_enabled,
        capabilities=Capabilities(change_webhooks=True, token_revocation=True),
        revoke=revoke_tokens,
        lifecycle_events=lifecycle_events,
    )
)
