"""``pql tenant`` and ``pql key``: installations and their ingestion keys."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from app.cli.common import echo_json, require_schema
from app.services import services
from app.tenants import (
    KEY_SCOPES,
    NotFound,
    create_tenant,
    crm_kinds,
    issue_write_key,
    list_tenants,
    list_write_keys,
    revoke_write_key,
    rotate_write_key,
)

# --- tenants ------------------------------------------------------------------------------


@click.group("tenant", help="Installations (HubSpot portals, Salesforce orgs, dev tenants).")
def tenant_group() -> None:
    pass


@tenant_group.command("create", help="Create a tenant and print its first write key.")
@click.option("--name", required=True, help="Display name, e.g. the customer's company.")
@click.option("--crm", type=click.Choice(crm_kinds()), default="none", show_default=True)
@click.option("--external-id", default=None, help="HubSpot portal id or Salesforce org id.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def tenant_create(name: str, crm: str, external_id: str | None, as_json: bool) -> None:
    require_schema()
    db = services().db
    try:
        tenant = create_tenant(db, name, crm=crm, external_id=external_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    key = issue_write_key(db, tenant.id, label="initial")
    if as_json:
        echo_json({"tenant_id": tenant.id, "write_key": key.secret, "key_id": key.key_id})
        return
    click.echo(f"tenant {tenant.id} created ({tenant.name}, crm: {tenant.crm})")
    click.echo(f"write key (shown once, store it now): {key.secret}")


@tenant_group.command("list", help="List tenants with their status.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def tenant_list(as_json: bool) -> None:
    require_schema()
    tenants = list_tenants(services().db)
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "crm": t.crm,
            "external_id": t.external_id,
            "status": t.status,
            "created_at": t.created_at.isoformat(),
        }
        for t in tenants
    ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no tenants")
        return
    for r in rows:
        click.echo(
            f"{r['id']:>5}  {r['status']:<13} {r['crm']:<11} {r['external_id'] or '-':<14} "
            f"{r['name']}"
        )


# --- write keys -----------------------------------------------------------------------------


@click.group("key", help="Ingestion write keys.")
def key_group() -> None:
    pass


@key_group.command("create", help="Issue another key for a tenant.")
@click.option("--tenant", "tenant_id", type=int, required=True)
@click.option("--label", default="", help="What this key is for, e.g. 'web app'.")
@click.option(
    "--scope",
    type=click.Choice(KEY_SCOPES),
    default="write",
    show_default=True,
    help="write: event ingestion; admin: the JSON API.",
)
@with_appcontext
def key_create(tenant_id: int, label: str, scope: str) -> None:
    require_schema()
    try:
        svc = services()
        key = issue_write_key(svc.db, tenant_id, label=label, scope=scope, cipher=svc.token_cipher)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{scope} key {key.key_id}: {key.secret}")


@key_group.command("list", help="List a tenant's keys (never the secrets).")
@click.option("--tenant", "tenant_id", type=int, required=True)
@with_appcontext
def key_list(tenant_id: int) -> None:
    require_schema()
    keys = list_write_keys(services().db, tenant_id)
    if not keys:
        click.echo(f"tenant {tenant_id} has no write keys")
        return
    for k in keys:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        click.echo(f"{k.id:>5}  {k.scope:<5}  {k.display_prefix}…  {state:<24} {k.label}")


@key_group.command("rotate", help="Replace KEY_ID with a new key and revoke it.")
@click.option("--tenant", "tenant_id", type=int, required=True)
@click.argument("key_id", type=int)
@with_appcontext
def key_rotate(tenant_id: int, key_id: int) -> None:
    require_schema()
    try:
        svc = services()
        key = rotate_write_key(svc.db, tenant_id, key_id, cipher=svc.token_cipher)
    except (NotFound, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"key {key_id} revoked; new key {key.key_id}: {key.secret}")


@key_group.command("revoke", help="Revoke KEY_ID: requests using it get 401 from now on.")
@click.option("--tenant", "tenant_id", type=int, required=True)
@click.argument("key_id", type=int)
@with_appcontext
def key_revoke(tenant_id: int, key_id: int) -> None:
    require_schema()
    try:
        revoke_write_key(services().db, tenant_id, key_id)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"key {key_id} revoked")
