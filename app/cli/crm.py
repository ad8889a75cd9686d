"""``pql sync``, ``pql pull`` and the tenant commands that touch its CRM (uninstall, configure)."""

from __future__ import annotations

import click
from flask.cli import with_appcontext
from sqlalchemy import update

from app.cli.common import echo_json, require_schema, tenant_or_fail
from app.cli.tenants import tenant_group
from app.services import services
from app.tenants import (
    NotFound,
)

# --- CRM sync -------------------------------------------------------------------------------


def _crm_call(function, *args, **kwargs):
    """Run a CRM operation; CRM trouble becomes a message and exit status 1."""
    from connectors.base import AuthorizationLost, CrmError, CrmPaused

    try:
        return function(*args, **kwargs)
    except AuthorizationLost as exc:
        raise click.ClickException(
            f"{exc}: reinstall the app (/hubspot/install or /salesforce/install)"
        ) from exc
    except CrmPaused as exc:
        raise click.ClickException(f"syncing is paused: {exc}") from exc
    except CrmError as exc:
        raise click.ClickException(f"the CRM refused or did not answer: {exc}") from exc
    except NotFound as exc:
        raise click.ClickException(exc.description) from exc


def _print_report(report) -> None:
    if report.paused:
        click.echo(f"syncing is paused until {report.paused['until']}: {report.paused['reason']}")
        return
    verb = "would" if report.dry_run else "did"
    for subject, r in report.subjects.items():
        if report.dry_run:
            click.echo(
                f"{subject}s: {r.unchanged} unchanged, {r.would_update} to update, "
                f"{r.would_create} to create, {r.skipped} skipped "
                f"(matched: {r.matched_by_id} by stored id, {r.matched_by_key} by key, "
                f"{r.matched_by_natural_key} by domain/email)"
            )
        else:
            click.echo(
                f"{subject}s: {r.unchanged} unchanged, {r.updated} updated, {r.created} created, "
                f"{r.failed} failed, {r.skipped} skipped"
            )
        for name, count in sorted(r.properties.items()):
            click.echo(f"    {name}: {count} {verb} change")
    if not report.dry_run:
        click.echo(f"schema properties created: {len(report.schema_created)}")
        click.echo(f"CS tasks created: {report.tasks_created}")
    click.echo("API calls: " + (", ".join(f"{k} {v}" for k, v in report.calls.items()) or "none"))


SYNC_SETTINGS = ("create_missing", "default_cs_owner_id", "task_cooldown_days")


@click.command("sync", help="Push a tenant's changed traits to its CRM now (or show the plan).")
@click.option("--tenant", "tenant_id", type=int, required=True)
@click.option("--dry-run", is_flag=True, help="Match and count, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def sync_command(tenant_id: int, dry_run: bool, as_json: bool) -> None:
    from app.sync.lifecycle import sync_tenant

    require_schema()
    tenant_or_fail(tenant_id)
    report = _crm_call(sync_tenant, services(), tenant_id, dry_run=dry_run)
    if as_json:
        echo_json(report.as_dict())
    else:
        _print_report(report)


@click.command("pull", help="Pull owners, lifecycle stages and sales activity from the CRM now.")
@click.option("--tenant", "tenant_id", type=int, required=True)
@with_appcontext
def pull_command(tenant_id: int) -> None:
    from app.sync.lifecycle import paused, pull_tenant

    require_schema()
    tenant_or_fail(tenant_id)
    svc = services()
    pause = paused(svc.db, tenant_id, svc.clock())
    if pause:
        raise click.ClickException(f"syncing is paused until {pause['until']}: {pause['reason']}")
    counts = _crm_call(pull_tenant, svc, tenant_id)
    click.echo(
        f"owners: {counts['owners']}, accounts updated: {counts['account']}, "
        f"users updated: {counts['user']}"
    )


@tenant_group.command("uninstall", help="Stop syncing, forget CRM tokens, revoke write keys.")
@click.argument("tenant_id", type=int)
@click.option(
    "--remove-crm-properties",
    is_flag=True,
    help="First delete the app's properties and their values from the CRM (workflows, lists "
    "and reports built on them stop working).",
)
@with_appcontext
def tenant_uninstall(tenant_id: int, remove_crm_properties: bool) -> None:
    from app.sync.lifecycle import uninstall
    from connectors.base import CrmError

    require_schema()
    tenant_or_fail(tenant_id)
    svc = services()
    try:
        removed = uninstall(svc, tenant_id, remove_from_crm=remove_crm_properties)
    except ValueError as exc:
        raise click.ClickException(f"tenant {tenant_id}: {exc}") from exc
    except CrmError as exc:
        raise click.ClickException(
            f"the CRM properties could not be removed, so nothing was uninstalled: {exc}"
        ) from exc
    if remove_crm_properties:
        click.echo(f"removed {len(removed)} properties (and their values) from the CRM")
    click.echo(
        f"tenant {tenant_id} uninstalled; its data is deleted after "
        f"{svc.settings.uninstall_grace_days} days"
    )


@tenant_group.command("configure", help="Set a tenant's CRM sync settings.")
@click.argument("tenant_id", type=int)
@click.option(
    "--create-missing/--no-create-missing",
    default=None,
    help="Create companies/contacts the CRM does not have (default: create).",
)
@click.option(
    "--default-cs-owner",
    default=None,
    help="CRM owner id for CS tasks of accounts without an owner ('' to clear).",
)
@click.option(
    "--task-cooldown-days",
    type=click.IntRange(0, 365),
    default=None,
    help="Days between two CS tasks for one account (default 7).",
)
@with_appcontext
def tenant_configure(tenant_id, create_missing, default_cs_owner, task_cooldown_days) -> None:
    from app.models import Tenant

    require_schema()
    tenant_or_fail(tenant_id)
    changes = {}
    if create_missing is not None:
        changes["create_missing"] = create_missing
    if default_cs_owner is not None:
        changes["default_cs_owner_id"] = default_cs_owner or None
    if task_cooldown_days is not None:
        changes["task_cooldown_days"] = task_cooldown_days
    if not changes:
        raise click.UsageError("nothing to set: give at least one option")
    with services().db.system_transaction() as session:
        tenant = session.get(Tenant, tenant_id)
        tenant.settings = {**(tenant.settings or {}), **changes}
        current = dict(tenant.settings)
    if "create_missing" in changes:
        # Records skipped before may be created now: the next push looks at every score.
        from app.models import AccountScore, UserScore

        with services().db.tenant_transaction(tenant_id) as session:
            for model in (AccountScore, UserScore):
                session.execute(update(model).values(crm_pending=True))
    # The sync settings an admin sets (the document also holds the app's own bookkeeping).
    echo_json({k: current[k] for k in SYNC_SETTINGS if k in current})
