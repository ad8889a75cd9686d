"""The Flask application factory."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from flask import Flask

from app import errors
from app.cli import register_commands
from app.config import Settings
from app.db import Database
from app.security import TokenCipher
from app.services import Services
from app.web import admin, api, headers, health
from connectors import registry
from webhooks import tracking_api


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_pql", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler._pql = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    # Alembic narrates every connection at INFO; migration commands turn it back up.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # APScheduler logs every run of every job; our jobs log what they did instead.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # Client libraries that log whole requests at DEBUG, credentials included (zeep: the
    # Metadata API's SOAP envelopes with the Salesforce session id): never below WARNING.
    for name in ("zeep", "hubspot", "simple_salesforce"):
        logging.getLogger(name).setLevel(logging.WARNING)


def create_app(config: Mapping[str, str] | None = None) -> Flask:
    """Build the app from the environment, with ``config`` overriding environment variables."""
    app = Flask(__name__)
    env = dict(os.environ)
    if config:
        env.update(config)
    instance_path = Path(app.instance_path)
    settings = Settings.from_env(env, instance_path=instance_path)
    if settings.database_url.startswith("sqlite:///") and "DATABASE_URL" not in env:
        instance_path.mkdir(parents=True, exist_ok=True)

    configure_logging(settings.log_level)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        JSON_SORT_KEYS=False,
        # The admin UI's session: HTTP-only, same-site, HTTPS-only in production.
        SESSION_COOKIE_NAME="pql_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.is_production,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=12),
    )
    app.extensions["pql"] = Services(
        settings=settings,
        db=Database(settings.database_url),
        token_cipher=TokenCipher(settings.token_encryption_keys),
    )

    errors.register(app)
    headers.register(app, settings.is_production)
    for blueprint in (health.bp, tracking_api.bp, api.bp, admin.bp):
        app.register_blueprint(blueprint)
    for provider in registry.providers():
        for blueprint in provider.blueprints:
            app.register_blueprint(blueprint)
    register_commands(app)
    return app
