"""The admin pages' blueprint and session: signed in by the CRM install, one tenant per session,
CSRF on every POST, errors shown as pages."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from flask import Blueprint, abort, g, redirect, render_template, request, session, url_for
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from app.models import Tenant
from app.scores.definitions_store import current_definitions
from app.security import constant_time_equals
from app.services import services
from app.tenants import end_admin_sessions, get_tenant, session_generation
from app.web.read_model import segment_names
from app.web.timefmt import when
from connectors import registry

bp = Blueprint("admin_ui", __name__, url_prefix="/app")

SESSION_HOURS = 12


# --- session and CSRF -------------------------------------------------------------------------


def sign_in(tenant_id: int, actor: str) -> None:
    """Called at the end of a CRM install: this browser now administers ``tenant_id``."""
    session.clear()
    session.permanent = True
    session["tenant_id"] = tenant_id
    session["actor"] = actor
    session["csrf"] = secrets.token_urlsafe(24)
    session["signed_in_at"] = services().clock().isoformat()
    session["generation"] = session_generation(get_tenant(services().db, tenant_id))


@bp.before_request
def require_session():
    if request.endpoint in ("admin_ui.login",):
        return None
    tenant_id = session.get("tenant_id")
    started = session.get("signed_in_at")
    fresh = started and services().clock() - dt.datetime.fromisoformat(started) < dt.timedelta(
        hours=SESSION_HOURS
    )
    if not tenant_id or not fresh:
        session.clear()
        return redirect(url_for("admin_ui.login", next=request.path))
    with services().db.system_session() as db_session:
        tenant = db_session.get(Tenant, tenant_id)
    ended = tenant is not None and session.get("generation", 0) != session_generation(tenant)
    if tenant is None or tenant.status == "uninstalled" or ended:
        session.clear()
        return redirect(url_for("admin_ui.login"))
    g.tenant_id, g.tenant, g.actor = tenant_id, tenant, session.get("actor", "admin")
    if request.method == "POST":
        sent = request.form.get("csrf", "")
        if not sent or not constant_time_equals(sent, session.get("csrf", "")):
            abort(400, description="The form's CSRF token is missing or wrong: reload the page.")
    return None


@bp.errorhandler(HTTPException)
def error_page(exc: HTTPException):
    """Errors in the admin pages are pages (the JSON API keeps JSON errors)."""
    return render_template("admin/error.html", error=exc), exc.code or 500


@bp.app_context_processor
def template_globals() -> dict[str, Any]:
    return {"csrf_token": session.get("csrf", ""), "tenant": getattr(g, "tenant", None)}


@bp.app_template_filter("when")
def when_filter(moment) -> Markup:
    """``{{ moment|when }}``: "3 minutes ago", the exact time on hover."""
    return when(moment, services().clock())


def tenant_db():
    return services().db


@bp.get("/login")
def login():
    settings = services().settings
    enabled = [p for p in registry.providers() if p.enabled(settings)]
    return render_template("admin/login.html", next=request.args.get("next", ""), providers=enabled)


@bp.post("/logout")
def logout():
    # A copy of this cookie (taken before the logout) must not keep working.
    end_admin_sessions(services().db, g.tenant_id)
    session.clear()
    return redirect(url_for("admin_ui.login"))


def tenant_segment_names() -> list[str]:
    return segment_names(current_definitions(tenant_db(), g.tenant_id).definitions)
