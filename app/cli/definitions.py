"""``pql definitions`` and ``pql score``: a tenant's definitions, and scoring now."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from app.cli.common import require_schema, tenant_or_fail
from app.services import services

# --- definitions and scoring ------------------------------------------------------------


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

    require_schema()
    tenant_or_fail(tenant_id)
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

    from app.scores.definitions_store import load_yaml, save_definitions

    require_schema()
    tenant_or_fail(tenant_id)
    try:
        document = load_yaml(file.read())
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

    require_schema()
    tenant_or_fail(tenant_id)
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

    require_schema()
    tenant_or_fail(tenant_id)
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
    help="Score as on this past day (end of day UTC) to backfill the charts' history, "
    "e.g. after importing past events; then a normal pass runs.",
)
@with_appcontext
def score_command(tenant_id: int, incremental: bool, as_of) -> None:
    import datetime as dt

    from app.scores.scoring_pass import recompute

    require_schema()
    tenant_or_fail(tenant_id)
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
