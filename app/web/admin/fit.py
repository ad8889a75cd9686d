"""The fit page: the tenant's fit rules in words and the backtest against the CRM's outcomes."""

from __future__ import annotations

from flask import g, render_template

from app.scores.definitions_store import current_definitions
from app.web.admin.session import bp, tenant_db
from app.web.backtest import fit_backtest


@bp.get("/fit")
def fit_page():
    rules = current_definitions(tenant_db(), g.tenant_id).definitions.fit
    with tenant_db().tenant_session(g.tenant_id) as db_session:
        backtest = fit_backtest(db_session, rules)
    return render_template("admin/fit.html", rules=rules, backtest=backtest)
