"""The definitions pages: each section edited with errors next to the field, a preview of the
effect, history and rollback."""

from __future__ import annotations

from typing import Any

import yaml
from flask import abort, g, redirect, render_template, request, url_for
from marshmallow import ValidationError

from app.models import ScoringJob
from app.scores.definitions_store import (
    current_definitions,
    definitions_history,
    load_yaml,
    parse_document,
    rollback_definitions,
    save_definitions,
    to_document,
)
from app.scores.jobs import request_job
from app.services import services
from app.web.admin.session import bp, tenant_db

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
    ("fit", "Fit (firmographic rules, disqualifiers, bands)"),
)


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
            document[name] = load_yaml(text) if text.strip() else None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            errors.setdefault(name, []).append(
                f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"
            )
    document = {k: v for k, v in document.items() if v is not None}
    return document, errors, texts


def _preview_job(job_id: str | None) -> ScoringJob | None:
    if not job_id or not job_id.isdigit() or int(job_id) >= 2**31:
        return None
    with tenant_db().tenant_session(g.tenant_id) as session:
        job = session.get(ScoringJob, int(job_id))
        if job is None or job.tenant_id != g.tenant_id or job.kind != "preview":
            return None
        session.expunge(job)
        return job


@bp.get("/definitions")
def definitions():
    """The definitions; with ``preview=<job>``, the draft that preview was asked for and its
    result once the worker has it (the page reloads itself every 2 s until then)."""
    stored = current_definitions(tenant_db(), g.tenant_id)
    job = _preview_job(request.args.get("preview"))
    texts = _sections_of(job.params["document"] if job else stored.document)
    return render_template(
        "admin/definitions.html",
        sections=SECTIONS,
        texts=texts,
        errors={},
        version=stored.version,
        history=definitions_history(tenant_db(), g.tenant_id),
        preview=job.result if job and job.status == "done" else None,
        preview_job=job,
        saved=request.args.get("saved"),
    )


@bp.post("/definitions")
def save_definitions_form():
    document, errors, texts = _read_form()
    note = request.form.get("note", "")[:500]
    action = request.form.get("action", "preview")
    stored = current_definitions(tenant_db(), g.tenant_id)
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
            saved = save_definitions(tenant_db(), g.tenant_id, document, g.actor, note)
            return redirect(url_for("admin_ui.definitions", saved=saved.version))
        if not errors:
            # Scored by the worker under the tenant's scoring lease, not in this request.
            job_id = request_job(
                tenant_db(),
                g.tenant_id,
                "preview",
                {"document": to_document(candidate)},
                services().clock(),
                g.actor,
            )
            return redirect(url_for("admin_ui.definitions", preview=job_id))
    status = 422 if errors else 200
    return (
        render_template(
            "admin/definitions.html",
            sections=SECTIONS,
            texts=texts,
            errors=errors,
            version=stored.version,
            history=definitions_history(tenant_db(), g.tenant_id),
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
        saved = rollback_definitions(tenant_db(), g.tenant_id, version, g.actor)
    except (ValueError, LookupError):
        abort(404, description="No such definitions version.")
    return redirect(url_for("admin_ui.definitions", saved=saved.version))
