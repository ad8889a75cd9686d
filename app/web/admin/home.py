"""The admin home: install status, syncs, keys revealed and rotated."""

from __future__ import annotations

import datetime as dt

from flask import abort, g, jsonify, render_template, request, session
from sqlalchemy import func, select

from app.jobs.tenant_jobs import sync_requested
from app.models import (
    Account,
    CrmRecord,
    Event,
    User,
    WriteKey,
)
from app.services import services
from app.sync import lifecycle
from app.tenants import get_tenant, rotate_write_key
from app.web.admin.session import bp, tenant_db
from app.web.first_run import first_run, guide_done
from connectors.base import CrmError

# --- home -------------------------------------------------------------------------------------


@bp.get("/")
def home():
    return _home_page()


def _home_page(revealed: dict | None = None, sync_result: dict | None = None):
    """The home page; ``revealed`` is a key shown in this answer only (never kept in the
    session cookie, which is signed, not encrypted; the page is not stored either)."""
    svc = services()
    now = svc.clock()
    start_of_day = dt.datetime.combine(now.date(), dt.time(), dt.UTC)
    with tenant_db().tenant_session(g.tenant_id) as db_session:
        keys = db_session.scalars(select(WriteKey).order_by(WriteKey.created_at.desc())).all()
        events_today = db_session.scalar(
            select(func.count()).select_from(Event).where(Event.received_at >= start_of_day)
        )
        linked = dict(
            db_session.execute(
                select(CrmRecord.object_type, func.count())
                .where(CrmRecord.crm_id.is_not(None))
                .group_by(CrmRecord.object_type)
            ).all()
        )
        failing = dict(
            db_session.execute(
                select(CrmRecord.object_type, func.count())
                .where(CrmRecord.last_error.is_not(None))
                .group_by(CrmRecord.object_type)
            ).all()
        )
        errors = [
            (kind, names.get((kind, subject_id)) or f"{kind} {subject_id}", error)
            for kind, subject_id, error in db_session.execute(
                select(CrmRecord.object_type, CrmRecord.subject_id, CrmRecord.last_error)
                .where(CrmRecord.last_error.is_not(None))
                .limit(10)
            ).all()
            for names in [_names(db_session, kind, subject_id)]
        ]
        doc = g.tenant.settings or {}
        guide = _guide(db_session, doc)
    return render_template(
        "admin/home.html",
        guide=guide,
        guide_done=guide_done(guide),
        public_url=svc.settings.public_url,
        keys=keys,
        events_today=events_today,
        linked=linked,
        failing=failing,
        errors=errors,
        last_sync=doc.get("last_sync"),
        sync_error=doc.get("sync_error"),
        sync_paused=doc.get("sync_paused"),
        api_usage=doc.get("crm_api_usage"),
        revealed=revealed,
        sync_result=sync_result,
        crm_name={"hubspot": "HubSpot", "salesforce": "Salesforce"}.get(g.tenant.crm, g.tenant.crm),
        retry_seconds=svc.settings.scoring_interval_seconds,
        grace_days=svc.settings.uninstall_grace_days,
    )


def _names(db_session, kind: str, subject_id: int) -> dict:
    """The readable name of a failing record: the account's name or the user's email."""
    if kind == "account":
        row = db_session.execute(
            select(Account.name, Account.external_id).where(Account.id == subject_id)
        ).first()
    else:
        row = db_session.execute(
            select(User.email, User.external_id).where(User.id == subject_id)
        ).first()
    return {(kind, subject_id): (row[0] or row[1]) if row else None}


BUSY = (
    "The worker is scoring or syncing this portal right now and writes the changes itself in "
    "a moment."
)


@bp.post("/sync")
def sync_now():
    """Sync now, under the tenant's scoring lease so it never overlaps the worker's own push;
    the answer says what was written or why nothing was."""
    svc = services()
    try:
        report = sync_requested(svc, g.tenant_id, f"web/{g.actor}")
        result = (
            {"error": BUSY}
            if report is None
            else {"summary": report.summary(), "paused": report.paused}
        )
    except CrmError as exc:
        result = {"error": str(exc)}
    g.tenant = get_tenant(svc.db, g.tenant_id)
    return _home_page(sync_result=result)


def _guide(db_session, doc: dict):
    svc = services()
    return first_run(
        db_session,
        g.tenant,
        doc,
        svc.settings.property_prefix,
        svc.settings.scoring_interval_seconds,
    )


@bp.get("/first-run")
def first_run_status():
    """The guide's steps as JSON: the home page asks every few seconds while a step waits."""
    with tenant_db().tenant_session(g.tenant_id) as db_session:
        guide = _guide(db_session, g.tenant.settings or {})
    return jsonify(
        done=guide_done(guide),
        steps=[{"key": s.key, "done": s.done, "detail": s.detail, "link": s.link} for s in guide],
    )


def _key(key_id: int) -> WriteKey:
    with tenant_db().tenant_session(g.tenant_id) as db_session:
        key = db_session.get(WriteKey, key_id)
        if key is None or key.tenant_id != g.tenant_id:
            abort(404)
        return key


@bp.post("/keys/<int(max=2147483647):key_id>/reveal")
def reveal_key(key_id: int):
    key = _key(key_id)
    if not key.secret_encrypted or key.revoked_at:
        return _home_page({"id": key.id, "error": "This key cannot be shown again: rotate it."})
    secret = services().token_cipher.decrypt(key.secret_encrypted)
    return _home_page({"id": key.id, "secret": secret})


@bp.post("/keys/<int(max=2147483647):key_id>/rotate")
def rotate_key(key_id: int):
    svc = services()
    try:
        fresh = rotate_write_key(svc.db, g.tenant_id, key_id, cipher=svc.token_cipher)
    except ValueError:
        abort(409, description="That key is already revoked.")
    return _home_page({"id": fresh.key_id, "secret": fresh.secret, "rotated": key_id})


@bp.post("/uninstall")
def uninstall_app():
    """Uninstall from the admin pages, as from the CLI or the API: the CRM is told, tokens and
    keys are revoked, the data goes after the grace period; this session ends."""
    if request.form.get("confirm") != "yes":
        abort(400, description="Tick the box to confirm the uninstall.")
    remove = request.form.get("remove_crm_properties") == "yes"
    svc = services()
    try:
        removed = lifecycle.uninstall(svc, g.tenant_id, remove_from_crm=remove)
    except ValueError as exc:
        abort(409, description=f"{str(exc).capitalize()}.")
    except CrmError as exc:
        abort(
            502,
            description="The CRM properties could not be removed, so the app is still "
            f"installed: {exc}. Try again, or uninstall without removing them.",
        )
    session.clear()
    return render_template(
        "admin/uninstalled.html",
        grace_days=svc.settings.uninstall_grace_days,
        removed=removed if remove else None,
    )
