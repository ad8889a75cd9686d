"""The fit backtest: how the fit bands separate the accounts the CRM says converted from those
it says were lost or churned, so an admin can judge the rules before relying on them.

Outcomes come from the pulled CRM values: converted when the lifecycle stage is a customer
one or the opportunity stage is won; lost when the lifecycle stage says lost/churned (HubSpot's
"other" included) or the opportunity stage is lost; every other account is still open and
left out of the rates."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import AccountScore, CrmRecord
from scoring.definitions import FitRules

CONVERTED_STAGES = {"customer", "evangelist"}
LOST_STAGES = {"other", "churned", "lost", "former customer", "former_customer"}


def outcome(crm: dict[str, Any]) -> str:
    stage = str(crm.get("lifecycle_stage") or "").strip().lower()
    deal = str(crm.get("opportunity_stage") or "").strip().lower()
    if stage in CONVERTED_STAGES or "won" in deal:
        return "converted"
    if stage in LOST_STAGES or "lost" in deal:
        return "lost"
    return "open"


def fit_backtest(session: Session, rules: FitRules) -> dict[str, Any]:
    """Per fit band (best first): accounts, converted, lost, open and the conversion rate
    (converted ÷ decided, None when nothing is decided yet)."""
    counts: dict[str, Counter] = {b.name: Counter() for b in rules.bands}
    unscored = Counter()
    query = select(AccountScore.fit_band, CrmRecord.crm_fields).outerjoin(
        CrmRecord,
        (CrmRecord.subject_id == AccountScore.account_id) & (CrmRecord.object_type == "account"),
    )
    for band, crm in session.execute(query):
        result = outcome(crm or {})
        counts.get(band, unscored)[result] += 1
    bands = []
    for name, c in counts.items():
        decided = c["converted"] + c["lost"]
        bands.append(
            {
                "band": name,
                "accounts": sum(c.values()),
                "converted": c["converted"],
                "lost": c["lost"],
                "open": c["open"],
                "conversion_rate": round(100.0 * c["converted"] / decided, 1) if decided else None,
            }
        )
    return {
        "enabled": rules.enabled,
        "bands": bands,
        "unscored": sum(unscored.values()),
        "decided": sum(b["converted"] + b["lost"] for b in bands),
    }
