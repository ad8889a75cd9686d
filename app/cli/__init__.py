"""The ``pql`` command line (Flask's click integration), one module per group."""

from __future__ import annotations

from flask import Flask

from app.cli.crm import pull_command, sync_command
from app.cli.database import db_group
from app.cli.definitions import definitions_group, score_command
from app.cli.encryption import secrets_group
from app.cli.salesforce import salesforce_group
from app.cli.tenants import key_group, tenant_group
from app.cli.worker import worker_command


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
        salesforce_group,
    ):
        app.cli.add_command(command)
