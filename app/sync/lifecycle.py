"""What every CRM installation shares: activating a tenant from an OAuth install, its
connector, the sync and pull around the engine (with the pause a CRM's quota can impose and
its reason kept for the admin), uninstall and the purge after the grace period.

The CRM-specific parts (install routes, token endpoints, building the connector) live in each
CRM's provider (``connectors.registry``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update

from app.db import Database
from app.models import AccountScore, CrmOwner, CrmRecord, Tenant, UserScore, WriteKey
from app.sync.cs_tasks import create_cs_tasks
from app.sync.handoff import write_handoffs
from app.sync.pull import pull
from app.sync.push import SyncReport, push_changed_traits
from app.sync.schema import ensure_schema, remove_schema
from app.tenants import NotFound, end_admin_sessions, get_tenant, issue_write_key
from connectors import registry
from connectors.base import AuthorizationLost, CrmError, CrmPaused, Write, batches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grant:
    """Tokens from an OAuth code exchange."""

    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class Installed:
    tenant_id: int
    external_id: str
    write_key: str | None  # None: the tenant was already active (an admin signing in again)
    reinstalled: bool
    # An admin signed in to an active tenant: its tokens and integration user were kept, and
    # this consent's own grant (a token other than the tenant's) is for the caller to revoke.
    grant_unused: bool = False


def activate(
    svc, crm: str, external_id: str, grant: Grant, settings: dict[str, Any] | None = None
) -> Installed:
    """Create or re-activate the tenant of one CRM account (portal, org), keep its tokens
    encrypted, issue a write key and create the CRM properties. An active tenant's consent is
    an admin signing in: the sync keeps running with the tokens and the integration user it
    has (the caller checked that this person is an admin of the portal or org)."""
    now = svc.clock()
    provider = registry.get(crm)
    with svc.db.system_transaction() as session:
        tenant = session.scalars(
            select(Tenant)
            .where(Tenant.crm == crm, Tenant.external_id == external_id)
            .with_for_update()
        ).one_or_none()
        if tenant is not None and tenant.status == "active":
            unused = not _is_token(svc, tenant.refresh_token_encrypted, grant.refresh_token)
            log.info("tenant %s: an admin signed in from %s", tenant.id, provider.display_name)
            return Installed(tenant.id, external_id, None, True, grant_unused=unused)
        reinstalled = tenant is not None
        if tenant is None:
            tenant = Tenant(
                name=provider.installation_name(external_id),
                crm=crm,
                external_id=external_id,
                settings={},
            )
            session.add(tenant)
        tenant.status = "active"
        tenant.uninstalled_at = None
        tenant.access_token_encrypted = svc.token_cipher.encrypt(grant.access_token)
        tenant.refresh_token_encrypted = svc.token_cipher.encrypt(grant.refresh_token)
        tenant.access_token_expires_at = now + dt.timedelta(seconds=grant.expires_in)
        doc = {**(tenant.settings or {}), **(settings or {})}
        for stale in ("schema_version", "sync_paused", "sync_error", "needs_reauth_since"):
            doc.pop(stale, None)  # a reinstall re-checks the properties and starts afresh
        doc["installed_at"] = now.isoformat()  # journal events older than this are history
        # A new install (or one after an uninstall or a lost authorisation): sessions from
        # before it end.
        doc["session_generation"] = int(doc.get("session_generation", 0)) + 1
        tenant.settings = doc
        session.flush()
        tenant_id = tenant.id
    if reinstalled:
        # What the CRM holds may have changed while we were away: push everything once more
        # (records deleted meanwhile are matched or created again), and forget what came from
        # it (owners, stages, last contact): the pull below reads it afresh, so lead types and
        # segments never run on another portal's or a wiped portal's data.
        with svc.db.tenant_transaction(tenant_id) as session:
            session.execute(update(CrmRecord).values(pushed={}, crm_fields={}, pulled_at=None))
            session.execute(delete(CrmOwner))
            for model in (AccountScore, UserScore):
                session.execute(update(model).values(crm_pending=True))
    key = (
        _kept_write_key(svc, tenant_id)
        or issue_write_key(
            svc.db, tenant_id, label=f"{provider.display_name} install", cipher=svc.token_cipher
        ).secret
    )
    log.info("tenant %s: installed in %s %s", tenant_id, provider.display_name, external_id)
    try:
        ensure_schema(
            svc.db, tenant_id, connector_for(svc, tenant_id), svc.settings.property_prefix
        )
    except CrmError as exc:
        # The worker retries on its next sync; the install itself succeeded.
        log.warning("tenant %s: schema not created at install: %s", tenant_id, exc)
    if reinstalled:
        try:
            pull_tenant(svc, tenant_id)
        except CrmError as exc:
            log.warning(
                "tenant %s: pull after reinstall failed, the worker retries: %s", tenant_id, exc
            )
    return Installed(tenant_id, external_id, key, reinstalled)


def _kept_write_key(svc, tenant_id: int) -> str | None:
    """A reinstall keeps the tenant's active ingestion key (one key unless the admin asks for
    another in the admin pages); None when it has none it can show again."""
    with svc.db.tenant_session(tenant_id) as session:
        kept = session.scalars(
            select(WriteKey.secret_encrypted)
            .where(
                WriteKey.scope == "write",
                WriteKey.revoked_at.is_(None),
                WriteKey.secret_encrypted.is_not(None),
            )
            .order_by(WriteKey.id.desc())
        ).first()
    return svc.token_cipher.decrypt(kept) if kept else None


def holds_refresh_token(svc, crm: str, external_id: str, refresh_token: str) -> bool:
    """Whether the tenant of this CRM account syncs with this very refresh token."""
    with svc.db.system_transaction() as session:
        held = session.scalars(
            select(Tenant.refresh_token_encrypted).where(
                Tenant.crm == crm, Tenant.external_id == external_id
            )
        ).one_or_none()
    return _is_token(svc, held, refresh_token)


def _is_token(svc, encrypted: str | None, token: str) -> bool:
    """Whether the stored (encrypted) token is this one."""
    return bool(encrypted) and svc.token_cipher.decrypt(encrypted) == token


def clear_app_properties(
    svc, tenant_id: int, records: Sequence[tuple[str, Sequence[str]]]
) -> tuple[list[str], dict[str, str]]:
    """After a privacy deletion: empty the app's own properties on the person's CRM records
    (the records themselves are the customer's). Returns the ids cleared and, for the others,
    why not."""
    if not records:
        return [], {}
    if provider_of(svc, tenant_id) is None:
        return [], {crm_id: "the tenant is not connected to a CRM" for crm_id, _ in records}
    cleared: list[str] = []
    failed: dict[str, str] = {}
    writes = [Write(c, dict.fromkeys(names, ""), crm_id=c) for c, names in records if names]
    try:
        connector = connector_for(svc, tenant_id)
        for batch in batches(writes, connector.write_batch(len(writes))):
            for outcome in connector.update(connector.user_type, batch):
                if outcome.error and not outcome.missing:
                    failed[outcome.key] = outcome.error
                else:
                    cleared.append(outcome.key)
    except CrmError as exc:
        done = set(cleared) | set(failed)
        failed.update({w.key: str(exc) for w in writes if w.key not in done})
    return cleared, failed


def provider_of(svc, tenant_id: int) -> registry.Provider | None:
    """The CRM provider of a tenant, None for a tenant not connected to a CRM."""
    try:
        return registry.get(get_tenant(svc.db, tenant_id).crm)
    except registry.UnknownProvider:
        return None


def connector_for(svc, tenant_id: int):
    provider = provider_of(svc, tenant_id)
    if provider is None:
        raise NotFound(f"tenant {tenant_id} is not connected to a CRM")
    return provider.connector_for(svc, tenant_id)


def note(db: Database, tenant_id: int, **changes: Any) -> None:
    """Merge into the tenant's settings document (None removes a key)."""
    with db.system_transaction() as session:
        tenant = session.get(Tenant, tenant_id, with_for_update=True)
        doc = dict(tenant.settings or {})
        for name, value in changes.items():
            if value is None:
                doc.pop(name, None)
            else:
                doc[name] = value
        tenant.settings = doc


def paused(db: Database, tenant_id: int, now: dt.datetime) -> dict | None:
    """The pause a CRM's quota imposed, while it lasts."""
    pause = (get_tenant(db, tenant_id).settings or {}).get("sync_paused")
    if pause and dt.datetime.fromisoformat(pause["until"]) > now:
        return pause
    return None


def _pause(svc, tenant_id: int, exc: CrmPaused) -> dict:
    now = svc.clock()
    pause = {
        "reason": str(exc),
        "since": now.isoformat(),
        "until": (now + dt.timedelta(seconds=exc.resume_after)).isoformat(),
    }
    note(svc.db, tenant_id, sync_paused=pause)
    log.warning("tenant %s: CRM sync paused until %s: %s", tenant_id, pause["until"], exc)
    return pause


def _usage(connector) -> dict | None:
    limit = getattr(connector, "limit", None)
    if limit is None or limit.total is None:
        return None
    return {"used": limit.used, "total": limit.total, "ceiling": limit.ceiling}


def sync_tenant(svc, tenant_id: int, dry_run: bool = False) -> SyncReport:
    """Ensure the schema, push what changed, create CS tasks for drops (not in a dry run). A
    tenant paused by its CRM's quota is left alone (the report says why); a new pause is
    recorded with its reason and raised."""
    now = svc.clock()
    pause = paused(svc.db, tenant_id, now)
    if pause and not dry_run:
        report = SyncReport(dry_run=False)
        report.paused = pause
        return report
    connector = connector_for(svc, tenant_id)
    prefix = svc.settings.property_prefix
    try:
        created = [] if dry_run else ensure_schema(svc.db, tenant_id, connector, prefix)
        report = push_changed_traits(
            svc.db, tenant_id, connector, prefix, svc.clock(), dry_run=dry_run
        )
        report.schema_created = created
        if not dry_run:
            report.tasks_created = create_cs_tasks(svc.db, tenant_id, connector, svc.clock())
            report.handoffs_written = write_handoffs(svc.db, tenant_id, connector, svc.clock())
    except CrmPaused as exc:
        _pause(svc, tenant_id, exc)
        raise
    except CrmError as exc:
        if exc.category == "INVALID_FIELD":
            # The fields are hidden from the app (permission set removed or unassigned):
            # the next sync checks the schema again, which grants them.
            note(svc.db, tenant_id, schema_version=None)
        if not isinstance(exc, AuthorizationLost):
            note(svc.db, tenant_id, sync_error={"at": svc.clock().isoformat(), "error": str(exc)})
        raise
    finally:
        report_calls = dict(connector.caller.stats)
        usage = _usage(connector)
        if usage:
            note(svc.db, tenant_id, crm_api_usage={**usage, "at": svc.clock().isoformat()})
    report.calls = report_calls
    if not dry_run:
        note(
            svc.db,
            tenant_id,
            sync_paused=None,
            sync_error=None,
            last_sync={"at": svc.clock().isoformat(), **report.summary()},
        )
    return report


def pull_tenant(svc, tenant_id: int) -> dict[str, int]:
    now = svc.clock()
    if paused(svc.db, tenant_id, now):
        return {"paused": 1}
    connector = connector_for(svc, tenant_id)
    try:
        return pull(svc.db, tenant_id, connector, now)
    except CrmPaused as exc:
        _pause(svc, tenant_id, exc)
        raise


def uninstall(svc, tenant_id: int, at_crm: bool = True, remove_from_crm: bool = False) -> list[str]:
    """Stop every sync and forget the tokens now (with ``at_crm``, the app is also uninstalled
    and its tokens revoked at the CRM where it offers that; without, the CRM told us of the
    uninstall); the data goes after the grace period (``purge_uninstalled``). Write keys are
    revoked so events stop being accepted.

    ``remove_from_crm`` (an admin's explicit choice, never the default) first deletes the app's
    properties and their values from the CRM; if the CRM refuses, nothing is uninstalled and
    the error is raised, so the admin can retry or uninstall keeping them. Returns the names
    removed."""
    now = svc.clock()
    tenant = get_tenant(svc.db, tenant_id)
    provider = provider_of(svc, tenant_id)
    removed: list[str] = []
    if remove_from_crm:
        if not at_crm or tenant.status != "active" or provider is None:
            raise ValueError(
                "the CRM properties can only be removed while the app is installed in a CRM"
            )
        connector = connector_for(svc, tenant_id)
        removed = remove_schema(svc.db, tenant_id, connector, svc.settings.property_prefix)
    if at_crm and provider and provider.revoke and tenant.refresh_token_encrypted:
        provider.revoke(svc, tenant)
    end_admin_sessions(svc.db, tenant_id)
    with svc.db.system_transaction() as session:
        tenant = session.get(Tenant, tenant_id, with_for_update=True)
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
    return removed


def read_lifecycle(svc, tenant_id: int, now: dt.datetime) -> str:
    """Apply what the CRM says of the installation since last time (HubSpot's journal): an
    uninstall there uninstalls the tenant here; an install of a portal uninstalled here keeps
    its data (the deletion is called off) until an admin's sign-in brings the tokens."""
    provider = provider_of(svc, tenant_id)
    if provider is None or provider.lifecycle_events is None:
        return "no journal"
    tenant = get_tenant(svc.db, tenant_id)
    doc = tenant.settings or {}
    events, offset = provider.lifecycle_events(svc, tenant, doc.get("lifecycle_offset"))
    if offset and offset != doc.get("lifecycle_offset"):
        note(svc.db, tenant_id, lifecycle_offset=offset)
    installed_at = doc.get("installed_at")
    for event in events:
        if installed_at and event.occurred_at and event.occurred_at.isoformat() <= installed_at:
            continue  # before the latest install here (an uninstall since reinstalled)
        if event.event == "APP_UNINSTALL" and get_tenant(svc.db, tenant_id).status != "uninstalled":
            log.info("tenant %s: uninstalled in the CRM", tenant_id)
            uninstall(svc, tenant_id, at_crm=False)
        elif event.event == "APP_INSTALL":
            with svc.db.system_transaction() as session:
                row = session.get(Tenant, tenant_id, with_for_update=True)
                if row.status == "uninstalled":
                    log.info("tenant %s: installed again in the CRM; data kept", tenant_id)
                    row.status, row.uninstalled_at = "needs_reauth", None
                    row.settings = {**(row.settings or {}), "needs_reauth_since": now.isoformat()}
    return f"{len(events)} lifecycle events"


def uninstall_lost_authorisations(svc, now: dt.datetime, grace: dt.timedelta) -> list[int]:
    """Tenants whose refresh token has been refused for longer than ``grace`` are treated as
    uninstalled (their data then goes after the uninstall grace period)."""
    with svc.db.system_session() as session:
        waiting = [
            (t.id, (t.settings or {}).get("needs_reauth_since"))
            for t in session.scalars(select(Tenant).where(Tenant.status == "needs_reauth"))
        ]
    gone = []
    for tenant_id, since in waiting:
        if since and dt.datetime.fromisoformat(since) <= now - grace:
            log.info("tenant %s: no reauthorisation since %s, uninstalled", tenant_id, since)
            uninstall(svc, tenant_id, at_crm=False)
            gone.append(tenant_id)
    return gone


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
