"""``pql db``: migrations."""

from __future__ import annotations

import logging
import sys

import click
from flask.cli import with_appcontext

from app import migrate
from app.services import services

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
