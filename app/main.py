"""The ``pql`` command: the app's CLI commands (``app.cli``) on an app built from the
environment."""

from __future__ import annotations

from flask.cli import FlaskGroup

from app import create_app

main = FlaskGroup(
    create_app=lambda: create_app(),
    add_default_commands=True,
    help="PQL engine: product events in, Activation and engagement traits out to your CRM.",
)
