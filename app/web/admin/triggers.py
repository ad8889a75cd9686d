"""The triggers page: create, enable, disable, delete; the deliveries log."""

from __future__ import annotations

from typing import Any

from flask import abort, g, redirect, render_template, request, url_for
from sqlalchemy import select, update

from app.services import services
from app.web.admin.session import bp, tenant_db, tenant_segment_names

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

    allow_loopback = not services().settings.is_production
    return values, {**check_trigger(values, allow_loopback), **problems}


def _triggers_page(values=None, problems=None, status=200):
    from app.models import Delivery, Trigger
    from scoring.triggers import ACTIONS, EVENTS

    with tenant_db().tenant_session(g.tenant_id) as db_session:
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
            segments=tenant_segment_names(),
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
    params = values["action_params"]
    if "secret" in params:
        # The signing secret is kept encrypted like the CRM tokens, never in plain text.
        params["secret_encrypted"] = services().token_cipher.encrypt(params.pop("secret"))
    with tenant_db().tenant_transaction(g.tenant_id) as db_session:
        db_session.add(Trigger(tenant_id=g.tenant_id, enabled=True, **values))
    return redirect(url_for("admin_ui.triggers_page"))


@bp.post("/triggers/<int(max=2147483647):trigger_id>/<any(enable, disable, delete):change>")
def change_trigger(trigger_id: int, change: str):
    from app.models import Delivery, Trigger

    with tenant_db().tenant_transaction(g.tenant_id) as db_session:
        rule = db_session.get(Trigger, trigger_id)
        if rule is None or rule.tenant_id != g.tenant_id:
            abort(404)
        if change == "delete":
            db_session.delete(rule)
        else:
            rule.enabled = change == "enable"
            if not rule.enabled:
                # What it queued is not sent either (it was meant for the rule as it was).
                db_session.execute(
                    update(Delivery)
                    .where(Delivery.trigger_id == rule.id, Delivery.status == "pending")
                    .values(status="cancelled")
                )
    return redirect(url_for("admin_ui.triggers_page"))
