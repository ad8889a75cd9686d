"""When a trigger fires: pure rules over a record's scores before and after a scoring pass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

EVENTS = {
    "score_change": "Engagement score changes by at least N points",
    "new": "A new account or user appears",
    "activation_crossed": "Activation rate reaches a threshold",
    "segment_entered": "Enters a segment",
    "became_pql": "Becomes a product-qualified lead (accounts)",
}
ACTIONS = {
    "crm_task": "CRM task for the record's owner",
    "crm_note": "CRM note on the account's timeline",
    "slack": "Slack message (incoming webhook)",
    "webhook": "Signed webhook (HTTP POST)",
}


@dataclass(frozen=True)
class Snapshot:
    engagement_score: float
    activation_rate: float
    segments: frozenset[str]
    pql: bool = False

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Snapshot:
        names = (row.get("segments") or {}).get("names", [])
        return cls(
            float(row.get("engagement_score") or 0),
            float(row.get("activation_rate") or 0),
            frozenset(names),
            bool(row.get("pql")),
        )


def check(subject: str, event: str, params: Mapping[str, Any]) -> dict[str, str]:
    """Problems with a rule, by field name (empty: fine)."""
    problems: dict[str, str] = {}
    if subject not in ("account", "user"):
        problems["subject"] = "must be account or user"
    if event not in EVENTS:
        problems["event"] = f"must be one of {', '.join(EVENTS)}"
    if event == "became_pql" and subject != "account":
        problems["event"] = "only accounts become PQLs"
    if event == "score_change":
        value = params.get("min_change")
        if not isinstance(value, int | float) or not 1 <= value <= 100:
            problems["min_change"] = "a number of points from 1 to 100"
    if event == "activation_crossed":
        value = params.get("threshold")
        if not isinstance(value, int | float) or not 1 <= value <= 100:
            problems["threshold"] = "a percentage from 1 to 100"
    if event == "segment_entered" and not str(params.get("segment") or "").strip():
        problems["segment"] = "name the segment"
    return problems


def fires(
    event: str, params: Mapping[str, Any], before: Snapshot | None, after: Snapshot
) -> str | None:
    """Why the rule fires for this change, in a sentence, or None when it does not."""
    if event == "new":
        return "first seen" if before is None else None
    if event == "score_change":
        if before is None:
            return None
        change = after.engagement_score - before.engagement_score
        if abs(change) >= float(params["min_change"]):
            verb = "rose" if change > 0 else "fell"
            return (
                f"engagement score {verb} from {before.engagement_score:.0f} to "
                f"{after.engagement_score:.0f}"
            )
        return None
    if event == "activation_crossed":
        threshold = float(params["threshold"])
        earlier = before.activation_rate if before else 0.0
        if earlier < threshold <= after.activation_rate:
            return f"Activation reached {after.activation_rate:.0f}% (threshold {threshold:.0f}%)"
        return None
    if event == "segment_entered":
        segment = str(params["segment"])
        if segment in after.segments and (before is None or segment not in before.segments):
            return f"entered the segment {segment}"
        return None
    if event == "became_pql":
        if after.pql and not (before and before.pql):
            return "became a product-qualified lead"
        return None
    raise ValueError(f"unknown trigger event {event!r}")
