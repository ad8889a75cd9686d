"""What every command needs: a current schema, JSON output, a tenant that exists."""

from __future__ import annotations

import json

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from app import migrate
from app.services import services
from app.tenants import (
    NotFound,
    get_tenant,
)


def require_schema() -> None:
    svc = services()
    try:
        current = migrate.is_current(svc.db.engine, svc.settings.database_url)
    except (OperationalError, ProgrammingError) as exc:
        raise click.ClickException(f"database is not reachable: {exc.orig}") from exc
    if not current:
        raise click.ClickException("database schema is not current: run `pql db upgrade` first")


def echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def tenant_or_fail(tenant_id: int):
    """The tenant, or a CLI error naming the unknown id."""
    try:
        return get_tenant(services().db, tenant_id)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc
