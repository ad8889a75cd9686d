"""The app's property group and properties in the CRM, following the tenant's definitions."""

from __future__ import annotations

import logging

from app.db import Database
from app.models import Tenant
from app.scores.definitions_store import current_definitions
from app.sync import properties
from app.tenants import tenant_settings
from connectors.base import Connector

log = logging.getLogger(__name__)


def _objects(connector: Connector, prefix: str, definitions):
    """(object type, the app's property group, its property specs) for accounts and users."""
    group = (properties.group_name(prefix), properties.GROUP_LABEL)
    for subject, object_type in (
        ("account", connector.account_type),
        ("user", connector.user_type),
    ):
        yield object_type, group, properties.specs(prefix, subject, definitions)


def _note_schema_version(db: Database, tenant_id: int, version: int | None) -> None:
    with db.system_transaction() as session:
        tenant = session.get(Tenant, tenant_id, with_for_update=True)
        tenant.settings = {**(tenant.settings or {}), "schema_version": version}


def ensure_schema(
    db: Database, tenant_id: int, connector: Connector, prefix: str, force: bool = False
) -> list[str]:
    """Create the property group and properties when the definitions changed since the last
    time (or never ran): enumeration options follow the definitions."""
    stored = current_definitions(db, tenant_id)
    settings = tenant_settings(db, tenant_id)
    if not force and settings.get("schema_version") == stored.version:
        return []
    created = []
    for object_type, group, specs in _objects(connector, prefix, stored.definitions):
        created += connector.ensure_schema(object_type, group, specs)
    _note_schema_version(db, tenant_id, stored.version)
    log.info("tenant %s: CRM schema ensured (%s created)", tenant_id, len(created))
    return created


def remove_schema(db: Database, tenant_id: int, connector: Connector, prefix: str) -> list[str]:
    """Delete the app's properties, their values and its property group from the CRM (the
    uninstall's option: workflows, lists and reports built on them stop working)."""
    stored = current_definitions(db, tenant_id)
    removed = []
    for object_type, group, specs in _objects(connector, prefix, stored.definitions):
        removed += connector.remove_schema(object_type, group, specs)
    _note_schema_version(db, tenant_id, None)
    log.info("tenant %s: CRM schema removed (%s properties)", tenant_id, len(removed))
    return removed
