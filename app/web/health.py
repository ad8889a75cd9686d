"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app import migrate
from app.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up and serving requests; says nothing about its dependencies."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready for traffic: the database answers and its schema is at the newest migration."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        with svc.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if checks["database"] == "ok":
        current = migrate.current_revisions(svc.db.engine)
        heads = migrate.head_revisions(svc.settings.database_url)
        checks["migrations"] = (
            "ok"
            if current == heads
            else f"behind: at {sorted(current) or 'none'}, head is {sorted(heads)}"
        )
    ready = all(value == "ok" for value in checks.values())
    response = jsonify(status="ready" if ready else "not_ready", checks=checks)
    response.status_code = 200 if ready else 503
    return response
