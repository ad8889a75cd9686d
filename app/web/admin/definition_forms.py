"""The definitions as forms, section by section: no YAML needed. Each section's form edits that
part of the current document and nothing else; the result goes through the same validation
and store as the YAML page (``parse_document``, ``save_definitions``), so a form and the YAML
that says the same thing save the same document. Event names are offered from the event
catalogue. The first button previews the effect (a job, as on the YAML page); the preview
then offers to save exactly the draft it scored."""

from __future__ import annotations

import re
from typing import Any

from flask import abort, g, redirect, render_template, request, url_for
from marshmallow import ValidationError

from app.models import ScoringJob
from app.scores.definitions_store import (
    current_definitions,
    parse_document,
    save_definitions,
    to_document,
)
from app.scores.jobs import request_job
from app.services import services
from app.web.admin.definitions import _flatten, _preview_job
from app.web.admin.session import bp, tenant_db
from app.web.catalogue import event_catalogue
from scoring.definitions import COMPLEXITIES, DEAL_SIZES, STEP_KINDS, TIME_FRAMES, TRAIT_OPS
from scoring.engine import CONDITION_OPS

CHECKLISTS = {
    "trial": ("account_checklist_trial", "Activation checklist: trial and free accounts"),
    "paid": ("account_checklist_paid", "Activation checklist: paying accounts"),
    "users": ("user_checklist", "Activation checklist: users"),
}
SECTIONS = (
    *CHECKLISTS,
    "profiles",
    "key_features",
    "pql",
    "bands",
    "segments",
    "lead_types",
    "fit",
)
TREND_FIELDS = (
    "points",
    "new_days",
    "recently_inactive_from_days",
    "recently_inactive_to_days",
    "mature_days",
)
BLANK_ROWS = 2  # empty rows under each list, to add steps, weights or penalties
SIGNALS = (
    ("hand_raiser_events", "Hand-raiser events (asked for a demo or sales)"),
    ("limit_events", "Plan-limit events"),
    ("purchase_events", "Touchless-purchase events"),
)
KIND_LABELS = {
    "event_count": "did an event N times",
    "distinct_users": "N different users did an event",
    "trait": "a trait condition",
}
OP_LABELS = {
    "equals": "equals",
    "not_equals": "is not",
    "gt": "more than",
    "gte": "at least",
    "lt": "less than",
    "lte": "at most",
    "contains": "contains",
    "in": "is one of (comma-separated)",
    "ends_with": "ends with (comma-separated)",
    "exists": "is set",
    "not_exists": "is not set",
}
# What a condition can look at, offered in the condition builder (any trait.X works too).
CONDITION_FIELDS = (
    "engagement_score",
    "activation_rate",
    "engagement_segment",
    "pql",
    "lead_type",
    "last_active_days",
    "active_users",
    "total_users",
    "adoption_rate",
    "crm.owner_id",
    "crm.lifecycle_stage",
)


def _text(name: str) -> str:
    return request.form.get(name, "").strip()


def _rows(name: str, cap: int) -> int:
    """How many rows the form says it has (at most ``cap``; nonsense counts as none)."""
    text = _text(name)
    return min(int(text), cap) if text.isdigit() and len(text) < 6 else 0


def _number(name: str) -> str | None:
    """A number field as sent ("" is None): validation says what is wrong with it."""
    value = _text(name)
    return value or None


def _scalar(text: str) -> Any:
    """A condition value typed as YAML would read it: 5, 2.5, true, or text."""
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _slug(label: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:36] or "step"
    key, n = base, 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    taken.add(key)
    return key


def _read_checklist(prefix: str) -> tuple[list[dict], dict[int, int]]:
    """The steps of one checklist form; and each step's row (for errors next to fields)."""
    rows = _rows(f"{prefix}-rows", 200)
    steps, row_of = [], {}
    taken = {_text(f"{prefix}-{i}-key") for i in range(rows)} - {""}
    for i in range(rows):
        f = f"{prefix}-{i}"
        label = _text(f"{f}-label")
        if request.form.get(f"{f}-remove") or not (label or _text(f"{f}-event")):
            continue
        kind = _text(f"{f}-kind") or "event_count"
        step: dict[str, Any] = {
            "key": _text(f"{f}-key") or _slug(label or _text(f"{f}-event"), taken),
            "label": label or _text(f"{f}-event"),
            "kind": kind,
        }
        if kind == "trait":
            step.update(trait=_text(f"{f}-trait") or None, op=_text(f"{f}-op") or None)
            value = _text(f"{f}-value")
            if value:
                step["value"] = _scalar(value)
        else:
            step.update(event=_text(f"{f}-event") or None, min_count=_number(f"{f}-min_count"))
            if kind == "event_count" and _text(f"{f}-within_days"):
                step["within_days"] = _number(f"{f}-within_days")
            if step["min_count"] is None:
                step.pop("min_count")
        row_of[len(steps)] = i
        steps.append(step)
    return steps, row_of


def _kept(count: str, prefix: str, key: str, cap: int):
    """The rows of a repeated part of a form that are kept: (row number, its field prefix,
    its ``key`` field's value) for each row not ticked "remove" and not left blank."""
    for n in range(_rows(count, cap)):
        p = f"{prefix}{n}"
        value = _text(f"{p}-{key}")
        if value and not request.form.get(f"{p}-remove"):
            yield n, p, value


def _read_conditions(prefix: str) -> tuple[list[dict], dict[int, int]]:
    """Condition rows ``{prefix}-c{i}-field/op/value``; and each condition's row."""
    conditions, row_of = [], {}
    for i, f, field in _kept(f"{prefix}-crows", f"{prefix}-c", "field", 50):
        op = _text(f"{f}-op") or "equals"
        condition: dict[str, Any] = {"field": field, "op": op}
        value = _text(f"{f}-value")
        if op == "in" or (op == "ends_with" and "," in value):
            condition["value"] = [_scalar(v.strip()) for v in value.split(",") if v.strip()]
        elif op not in ("exists", "not_exists"):
            condition["value"] = _scalar(value) if value else None
        row_of[len(conditions)] = i
        conditions.append(condition)
    return conditions, row_of


def _read_segments() -> tuple[list[dict], dict]:
    segments, where = [], {}
    for n, p, name in _kept("segments-rows", "s", "name", 100):
        conditions, rows = _read_conditions(p)
        where[len(segments)] = (n, rows)
        segments.append(
            {
                "name": name,
                "applies_to": _text(f"{p}-applies_to") or "account",
                "conditions": conditions,
            }
        )
    return segments, where


def _read_labelled(kind: str, with_points: bool) -> tuple[list[dict], dict]:
    """Fit rules (``fr``) or disqualifiers (``fd``): a label, (points and a group,) and
    condition rows; where each came from, for errors."""
    out, where = [], {}
    for n, p, label in _kept(f"{kind}-rows", kind, "label", 100):
        conditions, rows = _read_conditions(p)
        item: dict[str, Any] = {"label": label, "conditions": conditions}
        if with_points:
            item["points"] = _number(f"{p}-points")
            item["group"] = _text(f"{p}-group") or None
        where[len(out)] = (n, rows)
        out.append(item)
    return out, where


def _read_fit(document: dict) -> tuple[dict, dict]:
    rules, rule_rows = _read_labelled("fr", True)
    disqualifiers, disqualifier_rows = _read_labelled("fd", False)
    caps = {}
    for i in range(_rows("cap-rows", 50)):
        group = _text(f"cap{i}-group")
        if group:
            caps[group] = _number(f"cap{i}-points")
    bands = []
    for i in range(_rows("band-rows", 10)):
        name = _text(f"band{i}-name")
        if name:
            bands.append({"name": name, "min_score": _number(f"band{i}-min_score")})
    fit = {
        **(document.get("fit") or {}),
        "rules": rules,
        "disqualifiers": disqualifiers,
        "group_caps": caps,
        "bands": bands,
    }
    pql = {**(document.get("pql") or {}), "min_fit_band": _text("min_fit_band") or None}
    return {**document, "fit": fit, "pql": pql}, {"fr": rule_rows, "fd": disqualifier_rows}


def _read_profiles(stored: list[dict]) -> tuple[list[dict], dict]:
    """Each profile's weights, time frame, decay and penalties; its filters and name stay."""
    out, rows_of = [], {}
    for n, profile in enumerate(stored):
        p = f"p{n}"
        if f"{p}-wrows" not in request.form:
            out.append(profile)  # another profile's form: this one stays as it is
            continue
        weights: dict[str, Any] = {}
        known = set(profile.get("weights") or {})
        for i in range(_rows(f"{p}-wrows", 1000)):
            event = _text(f"{p}-w{i}-event")
            weight = _number(f"{p}-w{i}-weight")
            if not event or weight is None:
                continue
            # An event the definitions did not weight yet is added only with points.
            if event in known or weight not in ("0", "0.0"):
                weights[event] = weight
        penalties, penalty_rows = [], {}
        for i in range(_rows(f"{p}-prows", 50)):
            points, days = _number(f"{p}-pen{i}-points"), _number(f"{p}-pen{i}-days")
            if request.form.get(f"{p}-pen{i}-remove") or (points is None and days is None):
                continue
            penalty_rows[len(penalties)] = i
            penalties.append(
                {"points": points, "days": days, "event": _text(f"{p}-pen{i}-event") or None}
            )
        applies_to, condition_rows = _read_conditions(f"{p}-a")
        rows_of[n] = {"penalties": penalty_rows, "applies_to": condition_rows}
        out.append(
            {
                **profile,
                "applies_to": [] if profile.get("default") else applies_to,
                "weights": weights,
                "time_frame_days": _number(f"{p}-time_frame_days"),
                "decay": request.form.get(f"{p}-decay") == "yes",
                "penalties": penalties,
            }
        )
    return out, rows_of


def _lines(name: str) -> list[str]:
    return [line.strip() for line in request.form.get(name, "").splitlines() if line.strip()]


def _read_section(section: str, document: dict) -> tuple[dict, dict]:
    """The document with this section replaced from the form; and what errors need to be put
    next to their fields."""
    if section in CHECKLISTS:
        name = CHECKLISTS[section][0]
        steps, row_of = _read_checklist(section)
        return {**document, name: steps}, {"rows": row_of}
    if section == "profiles":
        profiles, rows_of = _read_profiles(document.get("profiles") or [])
        return {**document, "profiles": profiles}, {"rows": rows_of}
    if section == "key_features":
        return {**document, "key_features": request.form.getlist("key_features")}, {}
    if section == "pql":
        pql = dict(document.get("pql") or {})
        pql["complexity"] = _text("complexity")
        pql["thresholds"] = {
            c: {size: _number(f"t-{c}-{size}") for size in DEAL_SIZES} for c in COMPLEXITIES
        }
        for field, _ in SIGNALS:
            pql[field] = _lines(field)
        pql["stage_trait"] = _text("stage_trait")
        for field in ("trial_values", "paid_values"):
            pql[field] = [v.strip() for v in _text(field).split(",") if v.strip()]
        deal = dict(document.get("deal_size") or {})
        deal.update(
            trait=_text("deal-trait"),
            mid_from=_number("deal-mid_from"),
            large_from=_number("deal-large_from"),
            unknown=_text("deal-unknown"),
            values={size: _number(f"deal-value-{size}") for size in DEAL_SIZES},
        )
        return {**document, "pql": pql, "deal_size": deal}, {}
    if section == "bands":
        bands = {k: _number(f"bands-{k}") for k in ("most_engaged", "engaged", "passive")}
        trend = dict(document.get("trend") or {})
        for field in TREND_FIELDS:
            trend[field] = _number(f"trend-{field}")
        return {**document, "score_bands": bands, "trend": trend}, {}
    if section == "segments":
        segments, where = _read_segments()
        return {**document, "segments": segments}, {"segments": where}
    if section == "fit":
        return _read_fit(document)
    if section == "lead_types":
        lead = dict(document.get("lead_types") or {})
        for key in ("activation_high", "activation_medium", "engagement_high", "engagement_medium"):
            lead[key] = _number(f"lead-{key}")
        lead["fit_trait"] = _text("lead-fit_trait")
        lead["poor_fit_value"] = _scalar(_text("lead-poor_fit_value"))
        return {**document, "lead_types": lead}, {}
    abort(404, description="No such definitions section.")


def _field_id(section: str, path: str, where: dict) -> str:
    """The form field an error path names (``account_checklist_trial.2.min_count`` → the
    min_count box of that step's row); the section itself when there is no better one."""
    parts = path.split(".")
    if section in CHECKLISTS and len(parts) >= 3 and parts[1].isdigit():
        row = where.get("rows", {}).get(int(parts[1]))
        if row is not None:
            return f"{section}-{row}-{parts[2]}"
    if section == "profiles" and len(parts) >= 3 and parts[1].isdigit():
        n = int(parts[1])
        if parts[2] in ("penalties", "applies_to") and len(parts) >= 5 and parts[3].isdigit():
            row = where.get("rows", {}).get(n, {}).get(parts[2], {}).get(int(parts[3]))
            if row is not None:
                kind = "pen" if parts[2] == "penalties" else "a-c"
                return f"p{n}-{kind}{row}-{parts[4]}"
        if parts[2] == "weights":
            return f"p{n}-weights"
        return f"p{n}-{parts[2]}"
    if section == "pql":
        if parts[:2] == ["pql", "thresholds"] and len(parts) >= 3:
            size = next((p for p in parts[3:] if p in DEAL_SIZES), None)
            return f"t-{parts[2]}-{size}" if size else "t-table"
        if parts[0] == "deal_size" and len(parts) >= 2:
            if parts[1] == "values" and len(parts) >= 3:
                size = next((p for p in parts[2:] if p in DEAL_SIZES), None)
                return f"deal-value-{size}" if size else "deal-values"
            return f"deal-{parts[1]}"
        if parts[0] == "pql" and len(parts) >= 2:
            return parts[1]
    if section == "segments" and len(parts) >= 3 and parts[1].isdigit():
        found = where.get("segments", {}).get(int(parts[1]))
        if found is not None:
            n, rows = found
            if parts[2] == "conditions" and len(parts) >= 5 and parts[3].isdigit():
                row = rows.get(int(parts[3]))
                if row is not None:
                    return f"s{n}-c{row}-{parts[4]}"
            return f"s{n}-{parts[2]}"
    if section == "lead_types" and len(parts) >= 2:
        return f"lead-{parts[1]}"
    if section == "fit":
        if parts[:2] == ["pql", "min_fit_band"] or parts[-1:] == ["min_fit_band"]:
            return "min_fit_band"
        if len(parts) >= 3 and parts[1] in ("rules", "disqualifiers") and parts[2].isdigit():
            kind = "fr" if parts[1] == "rules" else "fd"
            found = where.get(kind, {}).get(int(parts[2]))
            if found is not None:
                n, rows = found
                if len(parts) >= 6 and parts[3] == "conditions" and parts[4].isdigit():
                    row = rows.get(int(parts[4]))
                    if row is not None:
                        return f"{kind}{n}-c{row}-{parts[5]}"
                return f"{kind}{n}-{parts[3]}" if len(parts) >= 4 else f"{kind}{n}-label"
        if len(parts) >= 2 and parts[1] == "bands":
            return "fit-bands"
        if len(parts) >= 2 and parts[1] == "group_caps":
            return "fit-caps"
    if section == "bands" and len(parts) >= 2:
        return f"bands-{parts[1]}" if parts[0] == "score_bands" else f"trend-{parts[1]}"
    return section


def _page(document: dict, errors: dict[str, list[str]], status: int = 200, **extra):
    svc = services()
    stored = current_definitions(tenant_db(), g.tenant_id)
    with tenant_db().tenant_session(g.tenant_id) as session:
        catalogue = event_catalogue(session, g.tenant_id, stored.definitions, svc.clock().date())
    known = [e.name for e in catalogue.events]
    event_names = sorted(
        set(known)
        | {s.get("event") for c, _ in CHECKLISTS.values() for s in document.get(c) or []} - {None}
    )
    profiles = []
    for profile in document.get("profiles") or []:
        weighted = list((profile.get("weights") or {}).items())
        extra_events = [(e, 0) for e in known if e not in dict(weighted)]
        profiles.append({**profile, "rows": weighted + extra_events})
    return (
        render_template(
            "admin/definition_forms.html",
            document=document,
            checklists=CHECKLISTS,
            profiles=profiles,
            event_names=event_names,
            known_events=set(known),
            traits=[t.name for t in catalogue.traits],
            errors=errors,
            version=stored.version,
            blank_rows=BLANK_ROWS,
            kinds=STEP_KINDS,
            kind_labels=KIND_LABELS,
            ops=TRAIT_OPS,
            op_labels=OP_LABELS,
            time_frames=TIME_FRAMES,
            complexities=COMPLEXITIES,
            deal_sizes=DEAL_SIZES,
            signals=SIGNALS,
            condition_ops=CONDITION_OPS,
            condition_fields=list(CONDITION_FIELDS) + [f"trait.{t.name}" for t in catalogue.traits],
            **extra,
        ),
        status,
    )


@bp.get("/definitions/setup")
def definition_forms():
    """The forms; with ``preview=<job>``, that draft and (once the worker has it) its effect,
    with a button that saves exactly that draft."""
    job = _preview_job(request.args.get("preview"))
    stored = current_definitions(tenant_db(), g.tenant_id)
    document = job.params["document"] if job else stored.document
    return _page(
        document,
        {},
        preview=job.result if job and job.status == "done" else None,
        preview_job=job,
        saved=request.args.get("saved"),
    )


@bp.post("/definitions/setup")
def definition_forms_post():
    section = request.form.get("section", "")
    if section not in SECTIONS:
        abort(400, description="Unknown definitions section.")
    stored = current_definitions(tenant_db(), g.tenant_id)
    document, where = _read_section(section, stored.document)
    errors: dict[str, list[str]] = {}
    try:
        candidate = parse_document(document)
    except ValidationError as exc:
        for path, message in _flatten(exc.messages):
            field = _field_id(section, path, where)
            errors.setdefault(field, []).append(message)
        errors.setdefault(section, []).insert(0, "Nothing was saved: correct the fields marked.")
        return _page(document, errors, 422, failed=section)
    if request.form.get("action") == "save":
        note = request.form.get("note", "")[:500] or f"{section} (form)"
        saved = save_definitions(tenant_db(), g.tenant_id, document, g.actor, note)
        return redirect(url_for("admin_ui.definition_forms", saved=saved.version) + f"#{section}")
    job_id = request_job(
        tenant_db(),
        g.tenant_id,
        "preview",
        {"document": to_document(candidate), "section": section, "base": stored.version},
        services().clock(),
        g.actor,
    )
    return redirect(url_for("admin_ui.definition_forms", preview=job_id))


@bp.post("/definitions/setup/save-preview")
def save_previewed_draft():
    """Save the draft a preview scored (its document as the job holds it)."""
    job = _preview_job(request.form.get("job"))
    if job is None or not isinstance(job, ScoringJob):
        abort(404, description="No such preview.")
    section = (job.params or {}).get("section", "definitions")
    current = current_definitions(tenant_db(), g.tenant_id)
    base = (job.params or {}).get("base")
    if base is not None and base != current.version:
        # Saving it would undo what was saved since (the draft was built on the older version).
        abort(
            409,
            description=f"The definitions changed since this preview (now version "
            f"{current.version}, the draft was made from version {base}): preview again.",
        )
    note = request.form.get("note", "")[:500] or f"{section} (form)"
    saved = save_definitions(tenant_db(), g.tenant_id, job.params["document"], g.actor, note)
    return redirect(url_for("admin_ui.definition_forms", saved=saved.version))
