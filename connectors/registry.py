"""The CRMs the service installs into, each described once by its provider.

A provider says what its CRM is (key, display name, what one installation is called), what it
can do (declared, never probed), which blueprints carry its install flow and inbound
webhooks, and how to build a tenant's connector or revoke its tokens. The app factory, the
worker and the sync lifecycle iterate over this registry; nothing outside a provider compares
CRM names.

Providers register themselves when their module is imported; ``providers()`` imports the
modules listed in ``PROVIDER_MODULES`` on first use (as plugin registries do), so modules that
only look a provider up never import the CRM-specific code, and that code may import the app's
lifecycle without an import circle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.base import Connector

PROVIDER_MODULES = ("connectors.hubspot.provider", "connectors.salesforce.provider")


@dataclass(frozen=True)
class Capabilities:
    """What a CRM offers that the engine plans around."""

    # The CRM meters a daily API allowance (syncs pause at the reserve and say so).
    daily_api_limit: bool = False
    # Large pushes go through one bulk job instead of batch calls.
    bulk_writes: bool = False
    # The CRM tells the app about changes (owner, stage, deletions) by signed webhooks.
    change_webhooks: bool = False
    # Refresh tokens can be revoked at the CRM on uninstall.
    token_revocation: bool = False


@dataclass(frozen=True)
class Provider:
    key: str  # stored in tenants.crm
    display_name: str  # "HubSpot"
    account_noun: str  # what one installation is called in the CRM: "portal", "org"
    blueprints: Sequence[Any]  # Flask blueprints: install/callback, webhooks, card
    # (services, tenant_id) -> the tenant's connector, with its rate budget and tokens.
    connector_for: Callable[[Any, int], Connector]
    # Where an admin finds the app's properties, in the CRM's words (HTML).
    fields_hint: str
    # (tenant, crm record id) -> the account's page in the CRM, for links from the admin pages.
    account_url: Callable[[Any, str], str | None]
    # Where an admin starts an install (which also signs them in): (label, path), first the
    # main one.
    sign_in: Sequence[tuple[str, str]] = ()
    # Whether this server is configured for the CRM (its app's client id and secret are set).
    enabled: Callable[[Any], bool] = lambda settings: False
    capabilities: Capabilities = field(default_factory=Capabilities)
    # (services, tenant) -> uninstall from the CRM and revoke the tokens there (best effort).
    revoke: Callable[[Any, Any], bool] | None = None
    # (services, tenant, offset) -> (install/uninstall events since offset, next offset), for
    # CRMs that tell the app of installs and uninstalls in a journal.
    lifecycle_events: Callable[[Any, Any, str | None], tuple[list, str | None]] | None = None

    def installation_name(self, external_id: str) -> str:
        return f"{self.display_name} {self.account_noun} {external_id}"


class UnknownProvider(LookupError):
    """No provider is registered under this key (a tenant not connected to a CRM)."""


_registry: dict[str, Provider] = {}


def register(provider: Provider) -> Provider:
    if provider.key in _registry and _registry[provider.key] is not provider:
        raise ValueError(f"a provider is already registered as {provider.key!r}")
    _registry[provider.key] = provider
    return provider


def _load() -> None:
    for module in PROVIDER_MODULES:
        importlib.import_module(module)


def providers() -> list[Provider]:
    _load()
    return list(_registry.values())


def keys() -> tuple[str, ...]:
    return tuple(p.key for p in providers())


def get(key: str | None) -> Provider:
    _load()
    try:
        return _registry[key or ""]
    except KeyError:
        raise UnknownProvider(f"no CRM provider {key!r}") from None
