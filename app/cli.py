"""The ``pql`` command line (Flask's click integration)."""

from __future__ import annotations

import json
import logging
import secrets as pysecrets
import sys

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError, ProgrammingError

from app import migrate
from app.security import new_encryption_key
from app.services import services
from app.tenants import (
    KEY_SCOPES,
    NotFound,
    create_tenant,
    crm_kinds,
    get_tenant,
    issue_write_key,
    list_tenants,
    list_write_keys,
    revoke_write_key,
    rotate_write_key,
)


def _require_schema() -> None:
    svc = services()
    try:
        current = migrate.is_current(svc.db.engine, svc.settings.database_url)
    except (OperationalError, ProgrammingError) as exc:
        raise click.ClickException(f"database is not reachable: {exc.orig}") from exc
    if not current:
        raise click.ClickException("database schema is not current: run `pql db upgrade` first")


def _echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


# --- database -------------------------------------------------------------------------------


@click.group("db", help="Database migrations.")
def db_group() -> None:
    pass


@db_group.command("upgrade", help="Migrate the database to REVISION (default: the newest).")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    logging.getLogger("alembic").setLevel(logging.INFO)
    migrate.upgrade(services().settings.database_url, revision)
    click.echo(f"database at {revision}")


@db_group.command("downgrade", help="Migrate the database back to REVISION ('base' = empty).")
@click.argument("revision")
@with_appcontext
def db_downgrade(revision: str) -> None:
    logging.getLogger("alembic").setLevel(logging.INFO)
    migrate.downgrade(services().settings.database_url, revision)
    click.echo(f"database at {revision}")


@db_group.command("current", help="Show the database's revision and the newest one.")
@with_appcontext
def db_current() -> None:
    svc = services()
    current = sorted(migrate.current_revisions(svc.db.engine)) or ["none"]
    heads = sorted(migrate.head_revisions(svc.settings.database_url))
    click.echo(f"current: {', '.join(current)}")
    click.echo(f"head:    {', '.join(heads)}")
    if set(current) != set(heads):
        sys.exit(1)


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
    _require_schema()
    db = services().db
    try:
        tenant = create_tenant(db, name, crm=crm, external_id=external_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    key = issue_write_key(db, tenant.id, label="initial")
    if as_json:
        _echo_json({"tenant_id": tenant.id, "write_key": key.secret, "key_id": key.key_id})
        return
    click.echo(f"tenant {tenant.id} created ({tenant.name}, crm: {tenant.crm})")
    click.echo(f"write key (shown once, store it now): {key.secret}")


@tenant_group.command("list", help="List tenants with their status.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def tenant_list(as_json: bool) -> None:
    _require_schema()
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
        _echo_json(rows)
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
    _require_schema()
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
    _require_schema()
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
    _require_schema()
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
    _require_schema()
    try:
        revoke_write_key(services().db, tenant_id, key_id)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"key {key_id} revoked")


# --- definitions and scoring ------------------------------------------------------------


def _tenant_or_fail(tenant_id: int) -> None:
    try:
        get_tenant(services().db, tenant_id)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc


def _validation_report(messages, path: str = "") -> list[str]:
    """marshmallow's nested errors as 'path.to.field: reason' lines."""
    lines = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            lines += _validation_report(value, f"{path}.{key}" if path else str(key))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        lines += [f"{path or '(document)'}: {m}" for m in messages]
    elif isinstance(messages, list):
        for item in messages:
            lines += _validation_report(item, path)
    else:
        lines.append(f"{path}: {messages}")
    return lines


@click.group("definitions", help="A tenant's Activation, engagement, segment and PQL definitions.")
def definitions_group() -> None:
    pass


@definitions_group.command("export", help="Write the current (or a given) version as YAML.")
@click.option("--tenant", "tenant_id", type=int, required=True)
@click.option("--version", type=int, default=None)
@click.option("-o", "--output", type=click.File("w"), default="-", help="File (default: stdout).")
@with_appcontext
def definitions_export(tenant_id: int, version: int | None, output) -> None:
    import yaml

    from app.scores.definitions_store import current_definitions, definitions_version

    _require_schema()
    _tenant_or_fail(tenant_id)
    db = services().db
    stored = (
        definitions_version(db, tenant_id, version)
        if version
        else current_definitions(db, tenant_id)
    )
    if stored is None:
        raise click.ClickException(f"tenant {tenant_id} has no definitions version {version}")
    output.write(f"# definitions version {stored.version} of tenant {tenant_id}\n")
    yaml.safe_dump(stored.document, output, sort_keys=False, allow_unicode=True)


@definitions_group.command(
    "import", help="Validate a YAML (or JSON) file and save it as a new version."
)
@click.option("--tenant", "tenant_id", type=int, required=True)
@click.option("--note", default="", help="Why this change (kept in the history).")
@click.argument("file", type=click.File("r"))
@with_appcontext
def definitions_import(tenant_id: int, note: str, file) -> None:
    import yaml
    from marshmallow import ValidationError

    from app.scores.definitions_store import save_definitions

    _require_schema()
    _tenant_or_fail(tenant_id)
    try:
        document = yaml.safe_load(file)
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{file.name} is not valid YAML: {exc}") from exc
    try:
        stored = save_definitions(services().db, tenant_id, document, "cli", note)
    except ValidationError as exc:
        lines = "\n  ".join(_validation_report(exc.messages))
        raise click.ClickException(f"{file.name} is not valid; nothing saved:\n  {lines}") from exc
    click.echo(f"saved as version {stored.version}; run `pql score --tenant {tenant_id}` to apply")


@definitions_group.command("history", help="List saved versions, newest first.")
@click.option("--tenant", "tenant_id", type=int, required=True)
@with_appcontext
def definitions_history_command(tenant_id: int) -> None:
    from app.scores.definitions_store import current_definitions, definitions_history

    _require_schema()
    _tenant_or_fail(tenant_id)
    current_definitions(services().db, tenant_id)
    for row in definitions_history(services().db, tenant_id):
        click.echo(
            f"{row['version']:>4}  {row['created_at'][:19]}  {row['created_by']:<16} {row['note']}"
        )


@definitions_group.command("rollback", help="Save an old version again as the newest.")
@click.option("--tenant", "tenant_id", type=int, required=True)
@click.argument("version", type=int)
@with_appcontext
def definitions_rollback(tenant_id: int, version: int) -> None:
    from app.scores.definitions_store import rollback_definitions

    _require_schema()
    _tenant_or_fail(tenant_id)
    try:
        stored = rollback_definitions(services().db, tenant_id, version, "cli")
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"version {version} restored as version {stored.version}")


class _ProgressBars:
    """One click progress bar (with its time estimate) per phase of a scoring pass."""

    def __init__(self) -> None:
        self.phase: str | None = None
        self.bar = None
        self.done = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase:
            self.close()
            self.phase, self.done = phase, 0
            self.bar = click.progressbar(
                length=max(total, 1), label=f"scoring {phase}", show_eta=True, file=sys.stderr
            )
            self.bar.__enter__()
        if self.bar is not None and done > self.done:
            self.bar.update(done - self.done)
            self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.bar.length - self.done)
            self.bar.__exit__(None, None, None)
            self.bar = None


@click.command("score", help="Recompute a tenant's scores now (full by default).")
@click.option("--tenant", "tenant_id", type=int, required=True)
@click.option("--incremental", is_flag=True, help="Only what changed since the last pass.")
@click.option(
    "--as-of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Score as on this past day (end of day UTC) to backfill history for trends, "
    "e.g. after importing past events; then a normal pass runs.",
)
@with_appcontext
def score_command(tenant_id: int, incremental: bool, as_of) -> None:
    import datetime as dt

    from app.scores.scoring_pass import recompute

    _require_schema()
    _tenant_or_fail(tenant_id)
    svc = services()
    bars = _ProgressBars()
    try:
        if as_of is not None:
            moment = dt.datetime.combine(as_of.date(), dt.time(23, 59, 59), dt.UTC)
            if moment.date() >= svc.clock().date():
                raise click.BadParameter("must be a past day", param_hint="--as-of")
            recompute(svc.db, tenant_id, moment, full=True, progress=bars)
            click.echo(f"history for {as_of.date()} stored")
        summary = recompute(svc.db, tenant_id, svc.clock(), full=not incremental, progress=bars)
    finally:
        bars.close()
    kind = "full" if summary.full else "incremental"
    click.echo(
        f"{kind} pass: {summary.accounts} accounts, {summary.users} users scored in "
        f"{summary.seconds}s with definitions version {summary.definitions_version}"
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


@click.command("sync", help="Push a tenant's changed traits to its CRM now (or show the plan).")
@click.option("--tenant", "tenant_id", type=int, required=True)
@click.option("--dry-run", is_flag=True, help="Match and count, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def sync_command(tenant_id: int, dry_run: bool, as_json: bool) -> None:
    from app.sync.lifecycle import sync_tenant

    _require_schema()
    _tenant_or_fail(tenant_id)
    report = _crm_call(sync_tenant, services(), tenant_id, dry_run=dry_run)
    if as_json:
        _echo_json(report.as_dict())
    else:
        _print_report(report)


@click.command("pull", help="Pull owners, lifecycle stages and sales activity from the CRM now.")
@click.option("--tenant", "tenant_id", type=int, required=True)
@with_appcontext
def pull_command(tenant_id: int) -> None:
    from app.sync.lifecycle import paused, pull_tenant

    _require_schema()
    _tenant_or_fail(tenant_id)
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
@with_appcontext
def tenant_uninstall(tenant_id: int) -> None:
    from app.sync.lifecycle import uninstall

    _require_schema()
    _tenant_or_fail(tenant_id)
    svc = services()
    uninstall(svc, tenant_id)
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

    _require_schema()
    _tenant_or_fail(tenant_id)
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
    _echo_json({k: v for k, v in current.items() if k != "schema_version"})


# --- secrets --------------------------------------------------------------------------------


@click.group("secrets", help="Generate secrets and rotate token encryption.")
def secrets_group() -> None:
    pass


@secrets_group.command("generate", help="Print fresh SECRET_KEY and TOKEN_ENCRYPTION_KEYS values.")
def secrets_generate() -> None:
    click.echo(f"SECRET_KEY={pysecrets.token_urlsafe(48)}")
    click.echo(f"TOKEN_ENCRYPTION_KEYS={new_encryption_key()}")


@secrets_group.command(
    "rotate-tokens",
    help="Re-encrypt every stored secret (CRM tokens, write keys kept for the admin pages) with "
    "the first key of TOKEN_ENCRYPTION_KEYS.",
)
@with_appcontext
def secrets_rotate_tokens() -> None:
    _require_schema()
    from app.models import Tenant, WriteKey

    svc = services()
    count = 0
    encrypted = (
        (Tenant, ("access_token_encrypted", "refresh_token_encrypted")),
        (WriteKey, ("secret_encrypted",)),
    )
    with svc.db.system_transaction() as session:
        for model, attrs in encrypted:
            for row in session.scalars(select(model)):
                for attr in attrs:
                    value = getattr(row, attr)
                    if value:
                        setattr(row, attr, svc.token_cipher.rotate(value))
                        count += 1
    click.echo(f"re-encrypted {count} secrets")


# --- processes ------------------------------------------------------------------------------


@click.command("worker", help="Run the background worker (scheduled scoring and sync jobs).")
@with_appcontext
def worker_command() -> None:
    from app.jobs.worker import run_worker

    run_worker(services())


def register_commands(app: Flask) -> None:
    for command in (
        db_group,
        tenant_group,
        sync_command,
        pull_command,
        key_group,
        secrets_group,
        definitions_group,
        score_command,
        worker_command,
    ):
        app.cli.add_command(command)
