"""Fit: who the account is, next to what it does. Pure functions over a record (the account's
traits as ``trait.*``, what the CRM says as ``crm.*``, its ``domain``)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scoring.definitions import FitRules
from scoring.engine import PQLResult, matches


@dataclass(frozen=True)
class FitResult:
    score: float
    band: str
    reason: str
    disqualified: bool = False


def fit(record: Mapping[str, Any], rules: FitRules) -> FitResult | None:
    """The account's fit score (0–100: the points of the rules that hold, each group capped,
    clamped to 0–100), its band (the first whose minimum it reaches) and a one-sentence why.
    A disqualifier forces the lowest band with its reason. None when no rules are set."""
    if not rules.enabled:
        return None
    lowest = rules.bands[-1].name
    for disqualifier in rules.disqualifiers:
        if matches(disqualifier.conditions, record):
            return FitResult(0.0, lowest, f"Disqualified: {disqualifier.label}.", True)
    by_group: dict[str | None, int] = defaultdict(int)
    held = []
    for rule in rules.rules:
        if matches(rule.conditions, record):
            by_group[rule.group] += rule.points
            held.append(rule)
    total = 0
    for group, points in by_group.items():
        cap = rules.group_caps.get(group) if group else None
        total += min(points, cap) if cap is not None else points
    score = float(max(0, min(100, total)))
    band = next((b.name for b in rules.bands if score >= b.min_score), lowest)
    if held:
        strongest = sorted(held, key=lambda r: -abs(r.points))[:3]
        why = "; ".join(f"{r.label} ({r.points:+d})" for r in strongest)
        more = f" and {len(held) - 3} more" if len(held) > 3 else ""
        reason = f"Fit {band} ({score:.0f}): {why}{more}."
    else:
        reason = f"Fit {band} ({score:.0f}): no fit rule matched."
    return FitResult(score, band, reason)


def crm_fields_used(rules: FitRules) -> set[str]:
    """The CRM fields (``crm.<name>``) the rules and disqualifiers read: what the pull fetches."""
    conditions = [c for r in rules.rules for c in r.conditions]
    conditions += [c for d in rules.disqualifiers for c in d.conditions]
    return {c.field.removeprefix("crm.") for c in conditions if c.field.startswith("crm.")}


def band_rank(rules: FitRules, band: str | None) -> int:
    """0 for the best band; bands unknown to the rules rank last."""
    names = [b.name for b in rules.bands]
    return names.index(band) if band in names else len(names)


def gate_pql(pql: PQLResult, result: FitResult | None, rules: FitRules, minimum: str | None):
    """A PQL whose fit band is below the tenant's minimum is not one (the reason says so).
    No minimum, or fit not scored: the PQL decision stands."""
    if not pql.qualified or not minimum or result is None:
        return pql
    if band_rank(rules, result.band) <= band_rank(rules, minimum):
        return pql
    return dataclasses.replace(
        pql,
        qualified=False,
        reason=f"{pql.reason} But its fit is {result.band}, below the {minimum} needed: "
        f"{result.reason}",
    )


def poor_fit(result: FitResult | None, rules: FitRules) -> bool:
    """For lead types: the lowest band, or disqualified, is a poor fit."""
    return result is not None and (result.disqualified or result.band == rules.bands[-1].name)
