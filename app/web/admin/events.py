"""The event catalogue page: what the product has sent, and where the definitions use it."""

from __future__ import annotations

from flask import g, render_template

from app.scores.definitions_store import current_definitions
from app.services import services
from app.web.admin.session import bp, tenant_db
from app.web.catalogue import event_catalogue


@bp.get("/events")
def events():
    defs = current_definitions(tenant_db(), g.tenant_id).definitions
    today = services().clock().date()
    with tenant_db().tenant_session(g.tenant_id) as db_session:
        catalogue = event_catalogue(db_session, g.tenant_id, defs, today)
    return render_template("admin/events.html", catalogue=catalogue)
