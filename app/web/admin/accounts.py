"""The accounts pages: the PQL spectrum (sort, filter, scatter plot), an account's detail, and
segments with the distribution of a field among their members."""

from __future__ import annotations

import csv
import io

from flask import Response, abort, g, render_template, request, url_for
from sqlalchemy import func, select

from app.models import (
    Account,
    AccountEventDay,
    AccountMembership,
    AccountScore,
    CrmRecord,
    ScoreHistory,
    User,
    UserScore,
)
from app.scores.definitions_store import current_definitions
from app.web.admin.session import bp, tenant_db, tenant_segment_names
from app.web.charts import line_chart, scatter_plot
from app.web.read_model import (
    accounts_query,
    crm_account_url,
    owner_names,
    scored,
    segment_view,
)
from scoring.engine import account_checklist, is_paying

SORTS = {
    "name": Account.name,
    "activation_rate": AccountScore.activation_rate,
    "engagement_score": AccountScore.engagement_score,
    "engagement_segment": AccountScore.engagement_segment,
    "pql": AccountScore.pql,
    "last_active_at": AccountScore.last_active_at,
    "forecast_value": AccountScore.forecast_value,
    "fit_score": AccountScore.fit_score,
}


# --- accounts ---------------------------------------------------------------------------------


def _filters() -> dict[str, str]:
    keys = ("q", "segment", "pql", "owner", "stage", "min_activation", "min_engagement", "fit")
    return {k: request.args.get(k, "").strip() for k in keys}


def _number(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _listed() -> tuple[list[dict], dict[str, str], str, str, dict[str, str]]:
    """The accounts the filters select, in the chosen order (PQLs first by default: the
    reps' worklist), as rows for the page and the CSV."""
    filters = _filters()
    sort = request.args.get("sort", "pql_first")
    if sort not in SORTS and sort not in ("owner", "stage", "pql_first"):
        sort = "pql_first"
    direction = "asc" if request.args.get("dir") == "asc" else "desc"
    if sort == "pql_first":
        order = [AccountScore.pql.desc(), AccountScore.engagement_score.desc()]
    else:
        column = SORTS.get(sort, AccountScore.engagement_score)
        order = [column.asc() if direction == "asc" else column.desc()]
    with tenant_db().tenant_session(g.tenant_id) as db_session:
        query = accounts_query().order_by(*order, Account.id)
        if filters["q"]:
            # Wildcards the admin typed (`%`, `_`) are plain characters.
            query = query.where(
                func.lower(func.coalesce(Account.name, Account.external_id)).contains(
                    filters["q"].lower(), autoescape=True
                )
            )
        if filters["pql"] in ("yes", "no"):
            query = query.where(AccountScore.pql.is_(filters["pql"] == "yes"))
        if filters["fit"]:
            query = query.where(AccountScore.fit_band == filters["fit"])
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
                "owner_id": row.owner_id,
                "stage": row.lifecycle_stage,
                "crm_url": crm_account_url(g.tenant, row.crm_id),
            }
        )
    if sort in ("owner", "stage"):
        # CRM values live in a JSON document: sorted here, records without one last.
        out.sort(key=lambda r: (r[sort] is None, str(r[sort] or "").lower()))
        if direction == "desc":
            out = [r for r in out if r[sort] is not None][::-1] + [
                r for r in out if r[sort] is None
            ]
    return out, filters, sort, direction, owners


CSV_COLUMNS = (
    "account_id",
    "name",
    "pql",
    "pql_reason",
    "activation_rate",
    "engagement_score",
    "engagement_segment",
    "trend",
    "trend_change",
    "fit_score",
    "fit_band",
    "fit_reason",
    "owner",
    "owner_id",
    "lifecycle_stage",
    "last_active_at",
    "crm_url",
)


@bp.get("/accounts.csv")
def accounts_csv():
    """The filtered list (every row, not only the first 500) as CSV for a spreadsheet."""
    out, *_ = _listed()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for r in out:
        score = r["score"]
        writer.writerow(
            [
                _cell(v)
                for v in (
                    r["id"],
                    r["name"],
                    "yes" if score.pql else "no",
                    score.pql_reason if score.pql else "",
                    score.activation_rate,
                    score.engagement_score,
                    score.engagement_segment,
                    score.trend_segment or "",
                    "" if score.trend_change is None else score.trend_change,
                    "" if score.fit_score is None else score.fit_score,
                    score.fit_band or "",
                    score.fit_reason or "",
                    r["owner"] or "",
                    r["owner_id"] or "",
                    r["stage"] or "",
                    score.last_active_at.isoformat() if score.last_active_at else "",
                    r["crm_url"] or "",
                )
            ]
        )
    return Response(
        buffer.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="accounts.csv"'},
    )


def _cell(value):
    """A spreadsheet must not run a cell as a formula: text starting with = + - @ is quoted
    with a leading apostrophe (names come from product events)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@bp.get("/accounts")
def accounts():
    out, filters, sort, direction, owners = _listed()
    fit_bands = [
        b.name for b in current_definitions(tenant_db(), g.tenant_id).definitions.fit.bands
    ]
    colour_by_fit = request.args.get("colour") == "fit"
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
        **(
            {
                "groups": [r["score"].fit_band for r in out[:2000]],
                "group_names": fit_bands,
            }
            if colour_by_fit
            else {}
        ),
    )
    return render_template(
        "admin/accounts.html",
        colour_by_fit=colour_by_fit,
        rows=out[:500],
        total=len(out),
        filters=filters,
        sort=sort,
        direction=direction,
        chart=chart,
        segments=tenant_segment_names(),
        owners=owners,
        fit_bands=fit_bands,
    )


@bp.get("/accounts/<path:external_id>")
def account(external_id: str):
    defs = current_definitions(tenant_db(), g.tenant_id).definitions
    with tenant_db().tenant_session(g.tenant_id) as db_session:
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
        crm_link=crm_account_url(g.tenant, record.crm_id if record else None),
        owner=owners.get(crm_fields.get("owner_id"), crm_fields.get("owner_id")),
        owner_id=crm_fields.get("owner_id"),
        stage=crm_fields.get("lifecycle_stage"),
        paid=is_paying(account.traits, defs),
    )


# --- segments ---------------------------------------------------------------------------------


@bp.get("/segments")
def segments():
    names = tenant_segment_names()
    name = request.args.get("name") or (names[0] if names else "")
    field = request.args.get("field", "trait.plan").strip() or "trait.plan"
    with tenant_db().tenant_session(g.tenant_id) as db_session:
        view = segment_view(db_session, name, "account", field, limit=500)
        owners = owner_names(db_session) if field == "crm.owner_id" else {}
    return render_template(
        "admin/segments.html",
        names=names,
        name=name,
        field=field,
        members=[m.record() for m in view.page],
        count=view.count,
        distribution=view.distribution,
        counts=view.engagement,
        owners=owners,
    )
