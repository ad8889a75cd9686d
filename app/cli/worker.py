"""``pql worker``: the background process."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from app.services import services

# --- processes ------------------------------------------------------------------------------


@click.command("worker", help="Run the background worker (scheduled scoring and sync jobs).")
@with_appcontext
def worker_command() -> None:
    from app.jobs.worker import run_worker

    run_worker(services())
