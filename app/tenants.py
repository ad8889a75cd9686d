"""Tenants and their write keys: the operations the CLI, the install flow and ingestion share."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import NotFound as HTTPNotFound

from app.db import Database
from app.models import Tenant, WriteKey, utcnow
from app.security import generate_write_key, hash_write_key
from connectors import registry

KEY_SCOPES = ("write", "admin")
TENANT_STATUSES = ("active", "needs_reauth", "uninstalled")


class NotFound(HTTPNotFound, LookupError):
    """The tenant or key asked for does not exist (in this tenant): a 404 on the web, a
    message on the command line."""

    def __str__(self) -> str:
        return str(self.description)


@dataclass(frozen=True)
class IssuedKey:
    tenant_id: int
    key_id: int
    secret: str
    display_prefix: str


@dataclass(frozen=True)
class ResolvedKey:
    tenant_id: int
    key_id: int


def create_tenant(
    db: Database, name: str, crm: str = "none", external_id: str | None = None
) -> Tenant:
    if crm not in crm_kinds():
        raise ValueError(f"crm must be one of {', '.join(crm_kinds())}")
    if not name.strip():
        raise ValueError("name must not be empty")
    with db.system_transaction() as session:
        tenant = Tenant(name=name.strip(), crm=crm, external_id=external_id, status="active")
        session.add(tenant)
        session.flush()
        return tenant


def get_tenant(db: Database, tenant_id: int) -> Tenant:
    with db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant with id {tenant_id}")
        return tenant


def crm_kinds() -> tuple[str, ...]:
    """What ``tenants.crm`` may hold: a registered provider's key, or "none"."""
    return (*registry.keys(), "none")


def tenant_settings(db: Database, tenant_id: int) -> dict:
    """A copy of the tenant's settings document."""
    return dict(get_tenant(db, tenant_id).settings or {})


def installation(db: Database, crm: str, external_id: str, active: bool = True) -> int | None:
    """The tenant of one CRM installation (a HubSpot portal, a Salesforce org), if any; with
    ``active`` only while it is installed."""
    query = select(Tenant.id).where(Tenant.crm == crm, Tenant.external_id == external_id)
    if active:
        query = query.where(Tenant.status == "active")
    with db.system_session() as session:
        return session.scalar(query)


def end_admin_sessions(db: Database, tenant_id: int) -> None:
    """Every admin-page session of the tenant ends (logout, uninstall, a new install): the
    sessions carry the generation they were signed in under, and this moves it on."""
    with db.system_transaction() as session:
        tenant = session.get(Tenant, tenant_id, with_for_update=True)
        doc = dict(tenant.settings or {})
        doc["session_generation"] = int(doc.get("session_generation", 0)) + 1
        tenant.settings = doc


def session_generation(tenant: Tenant) -> int:
    return int((tenant.settings or {}).get("session_generation", 0))


def list_tenants(db: Database) -> list[Tenant]:
    with db.system_session() as session:
        return list(session.scalars(select(Tenant).order_by(Tenant.id)))


def _add_key(
    session: Session, tenant_id: int, label: str, scope: str = "write", cipher=None
) -> IssuedKey:
    if scope not in KEY_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(KEY_SCOPES)}")
    new = generate_write_key(admin=scope == "admin")
    key = WriteKey(
        tenant_id=tenant_id,
        key_hash=new.key_hash,
        display_prefix=new.display_prefix,
        label=label,
        scope=scope,
        secret_encrypted=cipher.encrypt(new.secret) if cipher is not None else None,
    )
    session.add(key)
    session.flush()
    return IssuedKey(tenant_id, key.id, new.secret, new.display_prefix)


def issue_write_key(
    db: Database, tenant_id: int, label: str = "", scope: str = "write", cipher=None
) -> IssuedKey:
    """A new key; with ``cipher`` (the token cipher) its secret is also kept encrypted so the
    admin UI can show it again."""
    get_tenant(db, tenant_id)
    with db.tenant_transaction(tenant_id) as session:
        return _add_key(session, tenant_id, label, scope, cipher)


def list_write_keys(db: Database, tenant_id: int) -> list[WriteKey]:
    with db.tenant_session(tenant_id) as session:
        return list(session.scalars(select(WriteKey).order_by(WriteKey.id)))


def revoke_write_key(
    db: Database, tenant_id: int, key_id: int, now: dt.datetime | None = None
) -> WriteKey:
    with db.tenant_transaction(tenant_id) as session:
        key = session.scalar(select(WriteKey).where(WriteKey.id == key_id))
        if key is None:
            raise NotFound(f"tenant {tenant_id} has no write key {key_id}")
        if key.revoked_at is None:
            key.revoked_at = now or utcnow()
        return key


def rotate_write_key(db: Database, tenant_id: int, key_id: int, cipher=None) -> IssuedKey:
    """Issue a replacement for ``key_id`` (same label and scope; with ``cipher`` kept
    encrypted so the admin pages can show it again) and revoke the old one, in one
    transaction. The one rotation path of the CLI, the admin pages and the API."""
    with db.tenant_transaction(tenant_id) as session:
        old = session.scalar(select(WriteKey).where(WriteKey.id == key_id))
        if old is None:
            raise NotFound(f"tenant {tenant_id} has no write key {key_id}")
        if old.revoked_at is not None:
            raise ValueError(f"write key {key_id} is already revoked")
        issued = _add_key(session, tenant_id, old.label, old.scope, cipher)
        old.revoked_at = utcnow()
        return issued


def resolve_write_key(db: Database, secret: str, scope: str = "write") -> ResolvedKey | None:
    """The tenant an active key of ``scope`` belongs to, or None. The only cross-tenant key
    lookup."""
    if not secret:
        return None
    with db.system_session() as session:
        row = session.execute(
            select(WriteKey.id, WriteKey.tenant_id)
            .join(Tenant, Tenant.id == WriteKey.tenant_id)
            .where(
                WriteKey.key_hash == hash_write_key(secret),
                WriteKey.revoked_at.is_(None),
                WriteKey.scope == scope,
                Tenant.status != "uninstalled",
            )
        ).first()
    return ResolvedKey(tenant_id=row.tenant_id, key_id=row.id) if row else None
