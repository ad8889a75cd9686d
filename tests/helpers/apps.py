"""Test apps: their environment, tables emptied between tests, and what a test reads through
the service (a tenant's write key as the admin pages reveal it)."""

from __future__ import annotations

from sqlalchemy import select, text

from app.models import Base, WriteKey
from sandbox.hubspot import app_env as hubspot_env
from sandbox.salesforce import app_env as salesforce_env


def config_for(database_url: str, **extra: str) -> dict[str, str]:
    """A test app's environment: both CRM apps configured, pointing at sandboxes on a port
    nothing listens on until a test passes a running sandbox's ``app_env``."""
    return {
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        **hubspot_env("http://127.0.0.1:9"),
        **salesforce_env("https://127.0.0.1:9"),
        **extra,
    }


def empty_all_tables(app) -> None:
    db = app.extensions["pql"].db
    tables = list(reversed(Base.metadata.sorted_tables))
    with db.engine.begin() as connection:
        if db.dialect == "postgresql":
            names = ", ".join(t.name for t in tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(table.delete())


def write_key_of(app, tenant_id: int) -> str:
    """The tenant's newest active write key, as the admin pages' Reveal shows it (the service
    keeps issued keys encrypted for that)."""
    svc = app.extensions["pql"]
    with svc.db.tenant_session(tenant_id) as session:
        key = session.scalars(
            select(WriteKey)
            .where(WriteKey.revoked_at.is_(None), WriteKey.scope == "write")
            .order_by(WriteKey.id.desc())
        ).first()
    assert key is not None and key.secret_encrypted, f"tenant {tenant_id} has no revealable key"
    return svc.token_cipher.decrypt(key.secret_encrypted)
