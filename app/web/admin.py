"""The admin web UI under ``/app``: server-rendered pages for the admin who installed the app
(install status and keys, definitions with preview and history, the PQL spectrum, account
detail, segments).

Signing in is the CRM install itself: the OAuth callback puts the tenant and the installing
admin in the session (``sign_in``); ``/app/login`` sends an admin through it again. A session
belongs to one tenant: every query runs in that tenant's session, so another tenant's ids
answer 404. Every form carries the session's CSRF token, checked on every POST.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections import Counter
from typing import Any

import yaml
from flask import Blueprint, abort, g, redirect, render_template, request, session, url_for
from marshmallow import ValidationError
from sqlalchemy import func, select
from werkzeug.exceptions import HTTPException

from app.models import (
    Account,
    AccountEventDay,
    AccountMembership,
    AccountScore,
    CrmRecord,
    Event,
    ScoreHistory,
    Tenant,
    User,
    UserScore,
    WriteKey,
)
from app.scores.definitions_store import (
    current_definitions,
    definitions_history,
    parse_document,
    rollback_definitions,
    save_definitions,
)
from app.security import constant_time_equals
from app.services import services
from app.tenants import rotate_write_key
from app.web.charts import line_chart, scatter_plot
from app.web.read_model import (
    accounts_query,
    owner_names,
    scored,
    segment_members,
    segment_names,
)
from connectors import registry
from scoring.engine import account_checklist, is_paying, trait_distribution

bp = Blueprint("admin_ui", __name__, url_prefix="/app", template_folder="templates")

SESSION_HOURS = 12
SECTIONS = (
    ("account_checklist_trial", "Activation checklist: trial accounts"),
    ("account_checklist_paid", "Activation checklist: paying accounts"),
    ("user_checklist", "Activation checklist: users"),
    ("profiles", "Scoring profiles"),
    ("key_features", "Key features (adoption)"),
    ("frequency_days", "Frequency window (days)"),
    ("segments", "Segments"),
    ("score_bands", "Engagement bands"),
    ("trend", "Trend"),
    ("pql", "PQL thresholds and signals"),
    ("deal_size", "Deal size"),
    ("lead_types", "Lead types"),
)
SORTS = {
    "name": Account.name,
    "activation_rate": AccountScore.activation_rate,
    "engagement_score": AccountScore.engagement_score,
    "engagement_segment": AccountScore.engagement_segment,
    "pql": AccountScore.pql,
    "last_active_at": AccountScore.last_active_at,
    "forecast_value": AccountScore.forecast_value,
}


# --- session and CSRF -------------------------------------------------------------------------


def sign_in(tenant_id: int, actor: str) -> None:
    """Called at the end of a CRM install: this browser now administers ``tenant_id``."""
    session.clear()
    session.permanent = True
    session["tenant_id"] = tenant_id
    session["actor"] = actor
    session["csrf"] = secrets.token_urlsafe(24)
    session["signed_in_at"] = services().clock().isoformat()


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
    if tenant is None or tenant.status == "uninstalled":
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


def _db():
    return services().db


@bp.get("/login")
def login():
    settings = services().settings
    enabled = [p for p in registry.providers() if p.enabled(settings)]
    return render_template("admin/login.html", next=request.args.get("next", ""), providers=enabled)


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("admin_ui.login"))


# --- home -------------------------------------------------------------------------------------


@bp.get("/")
def home():
    svc = services()
    now = svc.clock()
    start_of_day = dt.datetime.combine(now.date(), dt.time(), dt.UTC)
    with _db().tenant_session(g.tenant_id) as db_session:
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
        errors = db_session.execute(
            select(CrmRecord.object_type, CrmRecord.subject_id, CrmRecord.last_error)
            .where(CrmRecord.last_error.is_not(None))
            .limit(10)
        ).all()
    doc = g.tenant.settings or {}
    return render_template(
        "admin/home.html",
        keys=keys,
        events_today=events_today,
        linked=linked,
        failing=failing,
        errors=errors,
        last_sync=doc.get("last_sync"),
        sync_error=doc.get("sync_error"),
        sync_paused=doc.get("sync_paused"),
        api_usage=doc.get("crm_api_usage"),
        revealed=session.pop("revealed", None),
    )


def _key(key_id: int) -> WriteKey:
    with _db().tenant_session(g.tenant_id) as db_session:
        key = db_session.get(WriteKey, key_id)
        if key is None or key.tenant_id != g.tenant_id:
            abort(404)
        return key


@bp.post("/keys/<int(max=2147483647):key_id>/reveal")
def reveal_key(key_id: int):
    key = _key(key_id)
    if not key.secret_encrypted or key.revoked_at:
        session["revealed"] = {"id": key.id, "error": "This key cannot be shown again: rotate it."}
    else:
        secret = services().token_cipher.decrypt(key.secret_encrypted)
        session["revealed"] = {"id": key.id, "secret": secret}
    return redirect(url_for("admin_ui.home"))


@bp.post("/keys/<int(max=2147483647):key_id>/rotate")
def rotate_key(key_id: int):
    svc = services()
    try:
        fresh = rotate_write_key(svc.db, g.tenant_id, key_id, cipher=svc.token_cipher)
    except ValueError:
        abort(409, description="That key is already revoked.")
    session["revealed"] = {"id": fresh.key_id, "secret": fresh.secret, "rotated": key_id}
    return redirect(url_for("admin_ui.home"))


# --- definitions ------------------------------------------------------------------------------


def _sections_of(document: dict[str, Any]) -> dict[str, str]:
    return {
        name: yaml.safe_dump(document.get(name), sort_keys=False, allow_unicode=True)
        for name, _ in SECTIONS
    }


def _flatten(messages: Any, path: str = "") -> list[tuple[str, str]]:
    """marshmallow's nested messages as (path, message) pairs: ``pql.thresholds.simple``."""
    if isinstance(messages, dict):
        out = []
        for key, value in messages.items():
            out += _flatten(value, f"{path}.{key}" if path else str(key))
        return out
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [(path, m) for m in messages]
    if isinstance(messages, list):
        return [pair for m in messages for pair in _flatten(m, path)]
    return [(path, str(messages))]


def _read_form() -> tuple[dict[str, Any], dict[str, list[str]], dict[str, str]]:
    """The definitions document from the form's sections, with YAML errors per section."""
    texts = {name: request.form.get(name, "") for name, _ in SECTIONS}
    document: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, text in texts.items():
        try:
            document[name] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            errors.setdefault(name, []).append(f"not valid YAML{where}: {exc.__class__.__name__}")
    document = {k: v for k, v in document.items() if v is not None}
    return document, errors, texts


@bp.get("/definitions")
def definitions():
    stored = current_definitions(_db(), g.tenant_id)
    return render_template(
        "admin/definitions.html",
        sections=SECTIONS,
        texts=_sections_of(stored.document),
        errors={},
        version=stored.version,
        history=definitions_history(_db(), g.tenant_id),
        preview=None,
        saved=request.args.get("saved"),
    )


@bp.post("/definitions")
def save_definitions_form():
    document, errors, texts = _read_form()
    note = request.form.get("note", "")[:500]
    action = request.form.get("action", "preview")
    stored = current_definitions(_db(), g.tenant_id)
    preview = None
    # A section that is not YAML is checked as it was stored, so the other sections' mistakes
    # show in the same answer.
    checked = {**document, **{name: stored.document.get(name) for name in errors}}
    try:
        candidate = parse_document({k: v for k, v in checked.items() if v is not None})
    except ValidationError as exc:
        for path, message in _flatten(exc.messages):
            section = path.split(".", 1)[0]
            where = path.split(".", 1)[1] if "." in path else ""
            key = section if section in texts else "_general"
            errors.setdefault(key, []).append(f"{where}: {message}" if where else message)
    else:
        if not errors and action == "save":
            saved = save_definitions(_db(), g.tenant_id, document, g.actor, note)
            return redirect(url_for("admin_ui.definitions", saved=saved.version))
        if not errors:
            from app.scores.scoring_pass import preview_definitions

            preview = preview_definitions(_db(), g.tenant_id, candidate, services().clock())
    status = 422 if errors else 200
    return (
        render_template(
            "admin/definitions.html",
            sections=SECTIONS,
            texts=texts,
            errors=errors,
            version=stored.version,
            history=definitions_history(_db(), g.tenant_id),
            preview=preview,
            note=note,
            saved=None,
        ),
        status,
    )


@bp.post("/definitions/rollback")
def rollback_form():
    try:
        version = int(request.form.get("version", ""))
        if not 1 <= version < 2**31:
            raise ValueError(version)
        saved = rollback_definitions(_db(), g.tenant_id, version, g.actor)
    except (ValueError, LookupError):
        abort(404, description="No such definitions version.")
    return redirect(url_for("admin_ui.definitions", saved=saved.version))


# --- accounts ---------------------------------------------------------------------------------


def _filters() -> dict[str, str]:
    keys = ("q", "segment", "pql", "owner", "stage", "min_activation", "min_engagement")
    return {k: request.args.get(k, "").strip() for k in keys}


def _number(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


@bp.get("/accounts")
def accounts():
    filters = _filters()
    sort = request.args.get("sort", "engagement_score")
    if sort not in SORTS and sort not in ("owner", "stage"):
        sort = "engagement_score"
    direction = "asc" if request.args.get("dir") == "asc" else "desc"
    column = SORTS.get(sort, AccountScore.engagement_score)
    with _db().tenant_session(g.tenant_id) as db_session:
        query = accounts_query().order_by(
            column.asc() if direction == "asc" else column.desc(), Account.id
        )
        if filters["q"]:
            like = f"%{filters['q'].lower()}%"
            query = query.where(
                func.lower(func.coalesce(Account.name, Account.external_id)).like(like)
            )
        if filters["pql"] in ("yes", "no"):
            query = query.where(AccountScore.pql.is_(filters["pql"] == "yes"))
        minimum = _number(filters["min_activation"])
        if minimum is not None:
            query = query.where(AccountScore.activation_rate >= minimum)
        minimum = _number(filters["min_engagement"])
        if minimum is not None:
            query = query.where(AccountScore.engagement_score >= minimum)
        owners = owner_names(db_session)
        rows = scored(db_session.execute(query.limit(5000)), owners)
    out = []
    for row in rows:
        if filters["segment"] and not row.in_segment(filters["segment"]):
            continue
        if filters["owner"] and (row.owner_id or "") != filters["owner"]:
            continue
        if filters["stage"] and (row.lifecycle_stage or "") != filters["stage"]:
            continue
        out.append(
            {
                "id": row.external_id,
                "name": row.name,
                "score": row.score,
                "segments": row.segments,
                "owner": row.owner_name or row.owner_id,
                "stage": row.lifecycle_stage,
            }
        )
    if sort in ("owner", "stage"):
        # CRM values live in a JSON document: sorted here, records without one last.
        out.sort(key=lambda r: (r[sort] is None, str(r[sort] or "").lower()))
        if direction == "desc":
            out = [r for r in out if r[sort] is not None][::-1] + [
                r for r in out if r[sort] is None
            ]
    chart = scatter_plot(
        [
            (
                r["score"].activation_rate,
                r["score"].engagement_score,
                r["name"],
                url_for("admin_ui.account", external_id=r["id"]),
                r["score"].pql,
            )
            for r in out[:2000]
        ],
        x_label="Activation rate",
        y_label="Engagement score",
    )
    return render_template(
        "admin/accounts.html",
        rows=out[:500],
        total=len(out),
        filters=filters,
        sort=sort,
        direction=direction,
        chart=chart,
        segments=_segment_names(),
        owners=owners,
    )


def _segment_names() -> list[str]:
    return segment_names(current_definitions(_db(), g.tenant_id).definitions)


def _crm_link(record: CrmRecord | None) -> str | None:
    if record is None or not record.crm_id:
        return None
    try:
        provider = registry.get(g.tenant.crm)
    except registry.UnknownProvider:
        return None
    return provider.account_url(g.tenant, record.crm_id)


@bp.get("/accounts/<path:external_id>")
def account(external_id: str):
    defs = current_definitions(_db(), g.tenant_id).definitions
    with _db().tenant_session(g.tenant_id) as db_session:
        row = db_session.execute(
            select(Account, AccountScore)
            .join(AccountScore, AccountScore.account_id == Account.id)
            .where(Account.external_id == external_id)
        ).first()
        if row is None:
            abort(404, description=f"No scored account {external_id!r}.")
        account, score = row
        record = db_session.scalar(
            select(CrmRecord).where(
                CrmRecord.object_type == "account", CrmRecord.subject_id == account.id
            )
        )
        users = db_session.execute(
            select(User, UserScore)
            .join(UserScore, UserScore.user_id == User.id)
            .join(AccountMembership, AccountMembership.user_id == User.id)
            .where(AccountMembership.account_id == account.id)
            .order_by(UserScore.engagement_score.desc())
        ).all()
        history = db_session.execute(
            select(ScoreHistory.day, ScoreHistory.engagement_score, ScoreHistory.activation_rate)
            .where(ScoreHistory.subject == "a", ScoreHistory.subject_id == account.id)
            .order_by(ScoreHistory.day)
        ).all()
        used = dict(
            db_session.execute(
                select(AccountEventDay.event, func.sum(AccountEventDay.count))
                .where(AccountEventDay.account_id == account.id)
                .group_by(AccountEventDay.event)
            ).all()
        )
        crm_fields = (record.crm_fields if record else None) or {}
        owners = owner_names(db_session)
    checklist = account_checklist(account.traits, defs)
    done = set((score.steps_done or {}).get("done", []))
    steps = [{"label": s.label, "done": s.key in done} for s in checklist.steps]
    features = [
        {"event": f, "count": int(used.get(f, 0)), "used": bool(used.get(f))}
        for f in defs.key_features
    ]
    chart = line_chart(
        [(d, e) for d, e, _ in history],
        [(d, a) for d, _, a in history],
        labels=("Engagement score", "Activation rate"),
    )
    return render_template(
        "admin/account.html",
        account=account,
        score=score,
        steps=steps,
        users=users,
        chart=chart,
        features=features,
        crm_link=_crm_link(record),
        owner=owners.get(crm_fields.get("owner_id"), crm_fields.get("owner_id")),
        stage=crm_fields.get("lifecycle_stage"),
        paid=is_paying(account.traits, defs),
    )


# --- segments ---------------------------------------------------------------------------------


@bp.get("/segments")
def segments():
    names = _segment_names()
    name = request.args.get("name") or (names[0] if names else "")
    field = request.args.get("field", "trait.plan").strip() or "trait.plan"
    with _db().tenant_session(g.tenant_id) as db_session:
        members = [m.record() for m in segment_members(db_session, name)]
    try:
        distribution = trait_distribution(members, field)
    except (KeyError, ValueError, TypeError):
        distribution = []
    counts = Counter(m["engagement_segment"] for m in members)
    return render_template(
        "admin/segments.html",
        names=names,
        name=name,
        field=field,
        members=members[:500],
        count=len(members),
        distribution=distribution,
        counts=counts,
    )


# --- triggers ---------------------------------------------------------------------------------


def _trigger_form() -> tuple[dict[str, Any], dict[str, str]]:
    form = request.form
    event = form.get("event", "")
    params: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name, field in (("min_change", "score_change"), ("threshold", "activation_crossed")):
        if event == field:
            try:
                params[name] = float(form.get(name, ""))
            except ValueError:
                problems[name] = "a number"
    if event == "segment_entered":
        params["segment"] = form.get("segment", "").strip()
    action = form.get("action", "")
    action_params = {}
    if action in ("slack", "webhook"):
        action_params["url"] = form.get("url", "").strip()
    if action == "webhook":
        action_params["secret"] = form.get("secret", "")
    try:
        cap = int(form.get("cap_hours", "24"))
    except ValueError:
        cap = -1
    values = {
        "name": form.get("name", "").strip()[:120],
        "subject": form.get("subject", ""),
        "event": event,
        "params": params,
        "action": action,
        "action_params": action_params,
        "cap_hours": cap,
    }
    from app.jobs.deliveries import check_trigger

    return values, {**check_trigger(values), **problems}


def _triggers_page(values=None, problems=None, status=200):
    from app.models import Delivery, Trigger
    from scoring.triggers import ACTIONS, EVENTS

    with _db().tenant_session(g.tenant_id) as db_session:
        rules = db_session.scalars(select(Trigger).order_by(Trigger.id)).all()
        deliveries = db_session.execute(
            select(Delivery, Trigger.name)
            .join(Trigger, Trigger.id == Delivery.trigger_id)
            .order_by(Delivery.id.desc())
            .limit(50)
        ).all()
    return (
        render_template(
            "admin/triggers.html",
            rules=rules,
            deliveries=deliveries,
            events=EVENTS,
            actions=ACTIONS,
            values=values or {"subject": "account", "cap_hours": 24, "params": {}},
            problems=problems or {},
            segments=_segment_names(),
        ),
        status,
    )


@bp.get("/triggers")
def triggers_page():
    return _triggers_page()


@bp.post("/triggers")
def create_trigger():
    from app.models import Trigger

    values, problems = _trigger_form()
    if problems:
        return _triggers_page(values, problems, 422)
    with _db().tenant_transaction(g.tenant_id) as db_session:
        db_session.add(Trigger(tenant_id=g.tenant_id, enabled=True, **values))
    return redirect(url_for("admin_ui.triggers_page"))


@bp.post("/triggers/<int(max=2147483647):trigger_id>/<any(enable, disable, delete):change>")
def change_trigger(trigger_id: int, change: str):
    from app.models import Trigger

    with _db().tenant_transaction(g.tenant_id) as db_session:
        rule = db_session.get(Trigger, trigger_id)
        if rule is None or rule.tenant_id != g.tenant_id:
            abort(404)
        if change == "delete":
            db_session.delete(rule)
        else:
            rule.enabled = change == "enable"
    return redirect(url_for("admin_ui.triggers_page"))
