"""The admin JSON API (``/api/v1``): definitions, scores, PQLs, segments.

Authenticated with a tenant's admin key (``Authorization: Bearer ak_...``); every query runs in
that tenant's session. Routes parse, call one function, and render.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from flask import Blueprint, g, jsonify, request, url_for
from marshmallow import ValidationError
from sqlalchemy import Select, asc, desc, func, select

from app.bodies import json_document, read_capped
from app.errors import RequestError
from app.models import Account, AccountMembership, AccountScore, User, UserScore
from app.scores.definitions_store import (
    current_definitions,
    definitions_history,
    definitions_version,
    rollback_definitions,
    save_definitions,
)
from app.services import services
from app.tenants import resolve_write_key
from app.web.read_model import Scored, accounts_query, owner_names, scored, segment_view
from scoring.engine import forecast_basis

bp = Blueprint("api", __name__, url_prefix="/api/v1")
MAX_BODY = 1024 * 1024
SORTABLE = {
    "engagement_score": AccountScore.engagement_score,
    "activation_rate": AccountScore.activation_rate,
    "last_active_at": AccountScore.last_active_at,
    "forecast_value": AccountScore.forecast_value,
    "name": Account.name,
}


def admin_required(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RequestError(
                401, "missing_token", "send an admin key as 'Authorization: Bearer ak_…'"
            )
        resolved = resolve_write_key(services().db, token.strip(), scope="admin")
        if resolved is None:
            raise RequestError(401, "invalid_token", "admin key is unknown or revoked")
        g.tenant_id = resolved.tenant_id
        g.actor = f"api key {resolved.key_id}"
        return view(*args, **kwargs)

    return wrapper


def _json_body() -> dict[str, Any]:
    return json_document(read_capped(MAX_BODY))


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise RequestError(400, "invalid_parameter", f"{name} must be a whole number") from exc
    if not low <= value <= high:
        raise RequestError(400, "invalid_parameter", f"{name} must be between {low} and {high}")
    return value


# --- definitions ---------------------------------------------------------------------------


def _stored_json(stored) -> dict[str, Any]:
    return {
        "version": stored.version,
        "created_at": stored.created_at.isoformat(),
        "created_by": stored.created_by,
        "note": stored.note,
        "document": stored.document,
    }


@bp.get("/definitions")
@admin_required
def get_definitions():
    return jsonify(_stored_json(current_definitions(services().db, g.tenant_id)))


@bp.put("/definitions")
@admin_required
def put_definitions():
    body = _json_body()
    document = body.get("document")
    note = body.get("note", "")
    if not isinstance(note, str):
        raise RequestError(400, "invalid_parameter", "note must be a string")
    try:
        stored = save_definitions(services().db, g.tenant_id, document, g.actor, note)
    except ValidationError as exc:
        raise RequestError(
            422, "invalid_definitions", "definitions are not valid", errors=exc.messages
        ) from exc
    return jsonify(_stored_json(stored))


@bp.get("/definitions/versions")
@admin_required
def list_definition_versions():
    """Newest first, ``limit`` (1-500, default 100) at a time; ``before`` pages back."""
    limit = _int_arg("limit", 100, 1, 500)
    before = _int_arg("before", 2147483647, 1, 2147483647)
    versions = definitions_history(services().db, g.tenant_id, limit, before)
    return jsonify(versions=versions)


@bp.get("/definitions/versions/<int(max=2147483647):version>")
@admin_required
def get_definition_version(version: int):
    stored = definitions_version(services().db, g.tenant_id, version)
    if stored is None:
        raise RequestError(404, "not_found", f"no definitions version {version}")
    return jsonify(_stored_json(stored))


@bp.post("/definitions/rollback")
@admin_required
def rollback():
    version = _json_body().get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version < 2**31:
        raise RequestError(400, "invalid_parameter", "version must be a whole number from 1")
    try:
        stored = rollback_definitions(services().db, g.tenant_id, version, g.actor)
    except LookupError as exc:
        raise RequestError(404, "not_found", str(exc)) from exc
    return jsonify(_stored_json(stored))


# --- scores --------------------------------------------------------------------------------


def _deal_rule():
    """The tenant's deal-size rule, read once per request."""
    if "deal_rule" not in g:
        g.deal_rule = current_definitions(services().db, g.tenant_id).definitions.deal_size
    return g.deal_rule


def account_json(row: Scored) -> dict[str, Any]:
    score = row.score
    return {
        "account": row.external_id,
        "name": row.name,
        "activation_rate": score.activation_rate,
        "activated": score.activated,
        "activated_at": score.activated_at.isoformat() if score.activated_at else None,
        "next_step": score.next_step,
        "engagement_score": score.engagement_score,
        "engagement_segment": score.engagement_segment,
        "trend_change": score.trend_change,
        "trend_segment": score.trend_segment,
        "adoption_rate": score.adoption_rate,
        "active_days": score.active_days,
        "last_active_at": score.last_active_at.isoformat() if score.last_active_at else None,
        "active_users": score.active_users,
        "total_users": score.total_users,
        "activated_users": score.activated_users,
        "pql": score.pql,
        "pql_at": score.pql_at.isoformat() if score.pql_at else None,
        "pql_kind": score.pql_kind,
        "pql_reason": score.pql_reason,
        "deal_size": score.deal_size,
        "lead_type": score.lead_type,
        "chance_to_convert": score.chance_to_convert,
        "forecast_value": score.forecast_value,
        # What the forecast assumed: the deal size, or that it was unknown and which band
        # stood in for it.
        "forecast_basis": (
            forecast_basis(score.deal_size, _deal_rule()) if score.lead_type else None
        ),
        "segments": row.segments,
        "crm": {
            "id": row.crm_id,
            "owner_id": row.owner_id,
            "owner": row.owner_name,
            "lifecycle_stage": row.lifecycle_stage,
        },
        "definitions_version": score.definitions_version,
        "computed_at": score.computed_at.isoformat(),
    }


def _accounts_query() -> Select:
    query = accounts_query()
    pql = request.args.get("pql")
    if pql is not None:
        if pql not in ("true", "false"):
            raise RequestError(400, "invalid_parameter", "pql must be true or false")
        query = query.where(AccountScore.pql.is_(pql == "true"))
    return query


def _sorted(query: Select) -> Select:
    """``sort=field`` is descending (highest first), ``sort=-field`` ascending."""
    sort = request.args.get("sort", "engagement_score")
    if sort.lstrip("-") not in SORTABLE:
        raise RequestError(
            400, "invalid_parameter", f"sort must be one of {', '.join(sorted(SORTABLE))}"
        )
    column = SORTABLE[sort.lstrip("-")]
    order = asc(column) if sort.startswith("-") else desc(column)
    return query.order_by(order, Account.id)


@bp.get("/accounts")
@admin_required
def list_accounts():
    """Scored accounts, highest engagement first by default (``sort``, ``pql``, ``segment``,
    ``limit``, ``offset``)."""
    segment = request.args.get("segment")
    limit = _int_arg("limit", 50, 1, 500)
    offset = _int_arg("offset", 0, 0, 10_000_000)
    with services().db.tenant_session(g.tenant_id) as session:
        query = _sorted(_accounts_query())
        owners = owner_names(session)
        if segment:
            # Segment membership lives in JSON and in two columns: filter here, then page.
            rows = [r for r in scored(session.execute(query), owners) if r.in_segment(segment)]
            total = len(rows)
            rows = rows[offset : offset + limit]
        else:
            total = session.scalar(
                select(func.count()).select_from(query.order_by(None).subquery())
            )
            rows = scored(session.execute(query.limit(limit).offset(offset)), owners)
    return jsonify(total=total, accounts=[account_json(r) for r in rows])


@bp.get("/pqls")
@admin_required
def list_pqls():
    """Product-qualified accounts ranked by engagement: the reps' worklist."""
    with services().db.tenant_session(g.tenant_id) as session:
        query = (
            _accounts_query()
            .where(AccountScore.pql.is_(True))
            .order_by(desc(AccountScore.engagement_score), desc(AccountScore.activation_rate))
            .limit(_int_arg("limit", 100, 1, 1000))
        )
        rows = scored(session.execute(query), owner_names(session))
    return jsonify(pqls=[account_json(r) for r in rows])


@bp.get("/events")
@admin_required
def event_catalogue_json():
    """Every event name and trait the tenant has sent (counts, last seen, users, accounts),
    where the definitions use each, and the names the definitions use that never arrived."""
    from app.web.catalogue import event_catalogue

    svc = services()
    defs = current_definitions(svc.db, g.tenant_id).definitions
    with svc.db.tenant_session(g.tenant_id) as session:
        catalogue = event_catalogue(session, g.tenant_id, defs, svc.clock().date())
    return jsonify(catalogue.as_dict())


@bp.get("/fit/backtest")
@admin_required
def fit_backtest_json():
    """How the fit bands separate the accounts the CRM marks converted from the lost ones."""
    from app.web.backtest import fit_backtest

    svc = services()
    defs = current_definitions(svc.db, g.tenant_id).definitions
    with svc.db.tenant_session(g.tenant_id) as session:
        return jsonify(fit_backtest(session, defs.fit))


@bp.get("/accounts/<path:external_id>")
@admin_required
def get_account(external_id: str):
    with services().db.tenant_session(g.tenant_id) as session:
        found = scored(
            session.execute(_accounts_query().where(Account.external_id == external_id)),
            owner_names(session),
        )
        if not found:
            raise RequestError(404, "not_found", f"no scored account {external_id!r}")
        users = session.execute(
            select(User.external_id, User.email, UserScore)
            .join(UserScore, UserScore.user_id == User.id)
            .join(AccountMembership, AccountMembership.user_id == User.id)
            .where(AccountMembership.account_id == found[0].subject_id)
            .order_by(desc(UserScore.engagement_score))
        ).all()
    body = account_json(found[0])
    body["users"] = [
        {
            "user": uid,
            "email": email,
            "activation_rate": s.activation_rate,
            "next_step": s.next_step,
            "engagement_score": s.engagement_score,
            "last_active_at": s.last_active_at.isoformat() if s.last_active_at else None,
        }
        for uid, email, s in users
    ]
    return jsonify(body)


@bp.get("/segments/<name>")
@admin_required
def segment(name: str):
    """Members of a segment (``subject=account``, the default, or ``user``) and, with ``field``
    (e.g. ``trait.plan`` or ``crm.lifecycle_stage``), how that field is spread among them."""
    field = request.args.get("field")
    subject = request.args.get("subject", "account")
    if subject not in ("account", "user"):
        raise RequestError(400, "invalid_parameter", "subject must be account or user")
    limit = _int_arg("limit", 500, 1, 500)
    offset = _int_arg("offset", 0, 0, 10_000_000)
    with services().db.tenant_session(g.tenant_id) as session:
        view = segment_view(session, name, subject, field, limit, offset)
    body: dict[str, Any] = {"segment": name, "subject": subject, "count": view.count}
    if field:
        body["field"] = field
        body["distribution"] = view.distribution
    body["members"] = [m.external_id for m in view.page]
    return jsonify(body)


@bp.post("/scoring/run")
@admin_required
def run_scoring():
    """Queue a scoring pass (``{"full": true}`` by default) for the worker: 202 with the job and
    its status URL (``Location``)."""
    from app.scores.jobs import job_status, request_job

    body = _json_body() if request.content_length else {}
    full = body.get("full", True)
    if not isinstance(full, bool):
        raise RequestError(400, "invalid_parameter", "full must be true or false")
    svc = services()
    job_id = request_job(svc.db, g.tenant_id, "run", {"full": full}, svc.clock(), "admin API")
    response = jsonify(job_status(svc.db, g.tenant_id, job_id))
    response.status_code = 202
    response.headers["Location"] = url_for("api.scoring_job", job_id=job_id)
    return response


@bp.get("/scoring/jobs/<int(max=2147483647):job_id>")
@admin_required
def scoring_job(job_id: int):
    """A requested pass or preview: queued, running, done (with its result) or failed."""
    from app.scores.jobs import job_status

    found = job_status(services().db, g.tenant_id, job_id)
    if found is None:
        raise RequestError(404, "not_found", f"no scoring job {job_id}")
    return jsonify(found)


# --- CRM ---------------------------------------------------------------------------------------


@bp.get("/crm")
@admin_required
def crm_status():
    """The tenant's CRM connection and sync state: what an admin checks first."""
    from app.models import CrmRecord, Tenant

    svc = services()
    with svc.db.system_session() as session:
        tenant = session.get(Tenant, g.tenant_id)
    with svc.db.tenant_session(g.tenant_id) as session:
        counts = {
            subject: {
                "linked": session.scalar(
                    select(func.count()).where(
                        CrmRecord.object_type == subject, CrmRecord.crm_id.is_not(None)
                    )
                ),
                "failing": session.scalar(
                    select(func.count()).where(
                        CrmRecord.object_type == subject, CrmRecord.last_error.is_not(None)
                    )
                ),
            }
            for subject in ("account", "user")
        }
        failures = [
            {
                "subject": r.object_type,
                "id": r.subject_id,
                "error": r.last_error,
                "failed_at": r.failed_at.isoformat() if r.failed_at else None,
            }
            for r in session.scalars(
                select(CrmRecord).where(CrmRecord.last_error.is_not(None)).limit(20)
            )
        ]
    doc = tenant.settings or {}
    pause = doc.get("sync_paused")
    if pause and dt.datetime.fromisoformat(pause["until"]) <= svc.clock():
        pause = None
    return jsonify(
        crm=tenant.crm,
        external_id=tenant.external_id,
        status=tenant.status,
        needs_reauthorisation=tenant.status == "needs_reauth",
        sync_paused=pause,
        last_sync=doc.get("last_sync"),
        last_sync_error=doc.get("sync_error"),
        api_usage=doc.get("crm_api_usage"),
        records=counts,
        recent_failures=failures,
    )


@bp.post("/crm/sync")
@admin_required
def crm_sync_now():
    from app.jobs.tenant_jobs import sync_requested
    from connectors.base import AuthorizationLost, CrmError, CrmPaused

    body = _json_body() if request.content_length else {}
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise RequestError(400, "invalid_parameter", "dry_run must be true or false")
    try:
        report = sync_requested(services(), g.tenant_id, f"api/{g.tenant_id}", dry_run=dry_run)
    except AuthorizationLost as exc:
        raise RequestError(409, "needs_reauthorisation", str(exc)) from exc
    except CrmPaused as exc:
        raise RequestError(503, "sync_paused", str(exc)) from exc
    except CrmError as exc:
        raise RequestError(502, "crm_error", str(exc)) from exc
    if report is None:
        raise RequestError(
            409,
            "sync_in_progress",
            "the worker is scoring or syncing this tenant right now and writes the changes "
            "itself; ask again in a minute",
            headers={"Retry-After": "60"},
        )
    return jsonify(report.as_dict())


@bp.post("/privacy/deletions")
@admin_required
def privacy_deletion():
    """Forget a person everywhere the app keeps them: ``{"user_id": …}`` or ``{"email": …}``
    (idempotent: asking again finds nobody and says so)."""
    from app.sync.lifecycle import clear_app_properties
    from app.tracking.privacy import forget_user

    body = _json_body()
    user_id, email = body.get("user_id"), body.get("email")
    for name, value in (("user_id", user_id), ("email", email)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise RequestError(400, "invalid_parameter", f"{name} must be a non-empty string")
    if not user_id and not email:
        raise RequestError(400, "invalid_parameter", "name the person: user_id or email")
    svc = services()
    done = forget_user(svc.db, g.tenant_id, svc.clock(), external_id=user_id, email=email)
    cleared, not_cleared = clear_app_properties(svc, g.tenant_id, done.crm_records)
    not_deleted = []
    if done.crm_records:
        not_deleted.append(
            "the person's CRM record (the customer's own data) stays in the CRM; delete it "
            "there if the person must be removed from it too"
        )
    return jsonify(
        users_deleted=done.users,
        events_deleted=done.events,
        accounts_rescored=done.accounts_rescored,
        rejected_messages_deleted=done.rejected_messages,
        account_traits_deleted=done.account_traits_removed,
        crm_records_cleared=cleared,
        crm_records_not_cleared=[{"crm_id": k, "reason": v} for k, v in not_cleared.items()],
        not_deleted=not_deleted,
    )


@bp.post("/crm/uninstall")
@admin_required
def crm_uninstall():
    """Stop syncing, delete the CRM tokens and revoke every key (this one too); the data is
    deleted after the grace period. ``{"remove_crm_properties": true}`` first deletes the
    app's properties and their values from the CRM (not the default)."""
    from app.sync.lifecycle import uninstall
    from connectors.base import AuthorizationLost, CrmError, CrmPaused

    body = _json_body() if request.content_length else {}
    remove = body.get("remove_crm_properties", False)
    if not isinstance(remove, bool):
        raise RequestError(400, "invalid_parameter", "remove_crm_properties must be true or false")
    svc = services()
    try:
        removed = uninstall(svc, g.tenant_id, remove_from_crm=remove)
    except ValueError as exc:
        raise RequestError(409, "not_installed", str(exc)) from exc
    except (AuthorizationLost, CrmPaused, CrmError) as exc:
        raise RequestError(
            502,
            "crm_error",
            f"the CRM properties could not be removed, so nothing was uninstalled: {exc}",
        ) from exc
    return jsonify(
        status="uninstalled",
        data_deleted_after_days=svc.settings.uninstall_grace_days,
        crm_properties_removed=removed,
    )
