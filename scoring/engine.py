"""Activation, engagement, trend, segments, PQL and lead types as pure functions.

Inputs are plain values (daily event counts, traits, the day to score for); outputs are plain
values. No clock is read: ``today`` is always passed in.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scoring.definitions import (
    Checklist,
    Condition,
    DealSizeRule,
    Definitions,
    LeadTypeBands,
    PQLRules,
    ScoreBands,
    ScoringProfile,
    Step,
    TrendRule,
)

# event -> day -> count
Daily = Mapping[str, Mapping[dt.date, int]]


@dataclass(frozen=True, slots=True)
class Activity:
    """One subject's use of the product, aggregated the way scoring reads it.

    ``app`` builds it with a few grouped SQL queries over the daily rollups; ``summarize``
    builds the same from daily counts (tests, small data)."""

    # Per event: count ever, first and last day it happened.
    totals: Mapping[str, int] = field(default_factory=dict)
    first_day: Mapping[str, dt.date] = field(default_factory=dict)
    last_day: Mapping[str, dt.date] = field(default_factory=dict)
    # Per time frame (days, ending today): per event, count within it ...
    in_frame: Mapping[int, Mapping[str, float]] = field(default_factory=dict)
    # ... and Σ count × (frame − age) / frame, for profiles with linear decay.
    decayed: Mapping[int, Mapping[str, float]] = field(default_factory=dict)
    # Per window (days, ending today): on how many days anything happened.
    active_days: Mapping[int, int] = field(default_factory=dict)
    # Full daily history, only for events whose steps count "within the first D days".
    early: Daily = field(default_factory=dict)


def summarize(
    daily: Daily,
    today: dt.date,
    frames: Iterable[int] = (1, 7, 30),
    windows: Iterable[int] = (30,),
) -> Activity:
    """The Activity of a subject from its daily counts (every day up to ``today``)."""
    totals, first_day, last_day = {}, {}, {}
    in_frame: dict[int, dict[str, float]] = {f: {} for f in frames}
    decayed: dict[int, dict[str, float]] = {f: {} for f in frames}
    for event, days in daily.items():
        happened = {d: c for d, c in days.items() if c > 0}
        if not happened:
            continue
        totals[event] = sum(happened.values())
        first_day[event], last_day[event] = min(happened), max(happened)
        for frame in in_frame:
            start = today - dt.timedelta(days=frame - 1)
            inside = {d: c for d, c in happened.items() if start <= d <= today}
            if inside:
                in_frame[frame][event] = float(sum(inside.values()))
                decayed[frame][event] = sum(
                    c * (frame - (today - d).days) / frame for d, c in inside.items()
                )
    all_days = {d for days in daily.values() for d, c in days.items() if c > 0}
    active = {
        n: sum(1 for d in all_days if today - dt.timedelta(days=n - 1) <= d <= today)
        for n in windows
    }
    return Activity(totals, first_day, last_day, in_frame, decayed, active, daily)


@dataclass(frozen=True, slots=True)
class Facts:
    """What scoring reads about one account or user."""

    first_seen: dt.date
    traits: Mapping[str, Any]
    activity: Activity
    # Accounts only: per event, the first day each of its users did it (needed only for
    # "within the first D days" team steps) ...
    user_first_day: Mapping[str, Mapping[int, dt.date]] = field(default_factory=dict)
    # ... and per event, how many different users ever did it.
    distinct_users: Mapping[str, int] = field(default_factory=dict)
    # Values read back from the CRM (owner, lifecycle stage, communication).
    crm: Mapping[str, Any] = field(default_factory=dict)


# --- Activation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActivationResult:
    rate: float
    done: tuple[str, ...]
    total: int
    next_step: Step | None
    activated: bool


def _trait_holds(traits: Mapping[str, Any], trait: str, op: str, value: Any) -> bool:
    present = trait in traits and traits[trait] is not None
    if op == "exists":
        return present
    if not present:
        return False
    actual = traits[trait]
    if op == "equals":
        return actual == value or str(actual).lower() == str(value).lower()
    if op == "contains":
        if isinstance(actual, list | tuple | set):
            return value in actual
        return str(value).lower() in str(actual).lower()
    try:
        number, limit = float(actual), float(value)
    except (TypeError, ValueError):
        return False
    return number >= limit if op == "gte" else number <= limit


def step_done(step: Step, facts: Facts) -> bool:
    if step.kind == "trait":
        return _trait_holds(facts.traits, step.trait or "", step.op or "exists", step.value)
    deadline = facts.first_seen + dt.timedelta(days=step.within_days) if step.within_days else None
    if step.kind == "distinct_users":
        event = step.event or ""
        if deadline is None and event in facts.distinct_users:
            return facts.distinct_users[event] >= step.min_count
        firsts = facts.user_first_day.get(event, {})
        users = sum(1 for day in firsts.values() if deadline is None or day < deadline)
        return users >= step.min_count
    if deadline is None:
        return facts.activity.totals.get(step.event or "", 0) >= step.min_count
    days = facts.activity.early.get(step.event or "", {})
    return sum(c for day, c in days.items() if day < deadline) >= step.min_count


def activation(checklist: Checklist, facts: Facts) -> ActivationResult:
    """Rate = completed steps / total steps × 100; the next step is the first one not done."""
    done = [step for step in checklist.steps if step_done(step, facts)]
    done_keys = {s.key for s in done}
    total = len(checklist.steps)
    rate = 100.0 * len(done) / total if total else 0.0
    next_step = next((s for s in checklist.steps if s.key not in done_keys), None)
    return ActivationResult(
        rate=round(rate, 2),
        done=tuple(s.key for s in done),
        total=total,
        next_step=next_step,
        activated=total > 0 and len(done) == total,
    )


# --- Engagement ----------------------------------------------------------------------------


def _last_day(activity: Activity, event: str | None) -> dt.date | None:
    if event:
        return activity.last_day.get(event)
    return max(activity.last_day.values(), default=None)


def raw_engagement(profile: ScoringProfile, activity: Activity, today: dt.date) -> float:
    """Σ count × weight over the time frame ending today (inclusive), each day's points fading
    linearly with age when decay is on; plus inactivity penalties."""
    counts = (activity.decayed if profile.decay else activity.in_frame).get(
        profile.time_frame_days, {}
    )
    raw = 0.0
    for event, weight in profile.weights.items():
        if weight > 0:
            raw += counts.get(event, 0.0) * weight
    for penalty in profile.penalties:
        last = _last_day(activity, penalty.event)
        if last is None or (today - last).days >= penalty.days:
            raw += penalty.points
    return raw


def percentile_90(raw_scores: Iterable[float]) -> float:
    """The 90th percentile (nearest rank) of the positive raw scores; 0 when none is positive.

    Subjects with nothing in the time frame are left out, so that a tenant with many idle
    accounts does not hand 100 to anyone who logged in once."""
    positive = sorted(v for v in raw_scores if v > 0)
    if not positive:
        return 0.0
    rank = max(1, math.ceil(0.9 * len(positive)))
    return positive[rank - 1]


def grade(raw: float, p90: float) -> float:
    """0–100: the tenant's 90th percentile and above are 100, the rest raw ÷ p90 × 100."""
    if raw <= 0:
        return 0.0
    if p90 <= 0:
        return 100.0
    return round(min(100.0, raw / p90 * 100.0), 2)


def engagement_segment(score: float, bands: ScoreBands) -> str:
    """The band of a score as stored. A score exactly on a boundary belongs to the band that
    boundary opens (DOMAIN.md): above 75 is Most engaged and 75 itself Engaged; 50 is Engaged;
    25 is Passive."""
    if score > bands.most_engaged:
        return "Most engaged"
    if score >= bands.engaged:
        return "Engaged"
    if score >= bands.passive:
        return "Passive"
    return "Least engaged"


def profile_for(definitions: Definitions, record: Mapping[str, Any]) -> ScoringProfile:
    """The first non-default profile whose filters match, else the default profile."""
    for profile in definitions.profiles:
        if profile.applies_to and not profile.default and matches(profile.applies_to, record):
            return profile
    return definitions.default_profile


def adoption_rate(key_features: Iterable[str], activity: Activity, frame_days: int | None) -> float:
    """Share (0–100) of key features used within the time frame (None = ever)."""
    features = list(key_features)
    if not features:
        return 0.0
    used_counts = activity.totals if frame_days is None else activity.in_frame.get(frame_days, {})
    used = sum(1 for event in features if used_counts.get(event, 0) > 0)
    return round(100.0 * used / len(features), 2)


# --- Trend ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trend:
    change: float | None
    segment: str | None  # "Red Hot", "Ice Cold" or None
    dropped: bool


def trend(current: float, previous: float | None, rule: TrendRule) -> Trend:
    """Change against the previous period's score; a change beyond ``rule.points`` either way
    is Red Hot or Ice Cold, and a fall beyond it is a drop."""
    if previous is None:
        return Trend(change=None, segment=None, dropped=False)
    change = round(current - previous, 2)
    if change > rule.points:
        return Trend(change, "Red Hot", False)
    if change < -rule.points:
        return Trend(change, "Ice Cold", True)
    return Trend(change, None, False)


def lifecycle_segments(
    first_seen: dt.date,
    last_active: dt.date | None,
    today: dt.date,
    rule: TrendRule,
    total_users: int | None = None,
) -> list[str]:
    segments = []
    if (today - first_seen).days < rule.new_days:
        segments.append("New")
    if last_active is not None:
        idle = (today - last_active).days
        if rule.recently_inactive_from_days <= idle <= rule.recently_inactive_to_days:
            segments.append("Recently inactive")
    if (today - first_seen).days > rule.mature_days:
        segments.append("Mature")
    if total_users is not None and total_users > 1:
        segments.append("Multi-user")
    return segments


# --- Custom segments -----------------------------------------------------------------------

CONDITION_OPS = (
    "equals",
    "not_equals",
    "gt",
    "gte",
    "lt",
    "lte",
    "contains",
    "in",
    "ends_with",
    "exists",
    "not_exists",
)


def _field_value(record: Mapping[str, Any], name: str) -> Any:
    if name in record:
        return record[name]
    head, _, rest = name.partition(".")
    holder = record.get(head)
    if rest and isinstance(holder, Mapping):
        return holder.get(rest)
    return None


def condition_holds(condition: Condition, record: Mapping[str, Any]) -> bool:
    actual = _field_value(record, condition.field)
    op, expected = condition.op, condition.value
    if op == "exists":
        return actual is not None
    if op == "not_exists":
        return actual is None
    if actual is None:
        return op == "not_equals"
    if op == "equals":
        return actual == expected or str(actual).lower() == str(expected).lower()
    if op == "not_equals":
        return not (actual == expected or str(actual).lower() == str(expected).lower())
    if op == "contains":
        if isinstance(actual, list | tuple | set):
            return expected in actual
        return str(expected).lower() in str(actual).lower()
    if op == "in":
        options = expected if isinstance(expected, list | tuple) else [expected]
        return any(actual == o or str(actual).lower() == str(o).lower() for o in options)
    if op == "ends_with":
        endings = expected if isinstance(expected, list | tuple) else [expected]
        return any(str(actual).lower().endswith(str(e).lower()) for e in endings)
    try:
        a, b = float(actual), float(expected)
    except (TypeError, ValueError):
        return False
    return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]


def matches(conditions: Iterable[Condition], record: Mapping[str, Any]) -> bool:
    return all(condition_holds(c, record) for c in conditions)


def trait_distribution(records: Iterable[Mapping[str, Any]], field_name: str) -> list[dict]:
    """Within a set of records, how the values of one field are spread (count and share %)."""
    values = Counter()
    total = 0
    for record in records:
        value = _field_value(record, field_name)
        values["(none)" if value is None else str(value)] += 1
        total += 1
    return [
        {"value": value, "count": count, "share": round(100.0 * count / total, 2)}
        for value, count in values.most_common()
    ]


# --- PQL -----------------------------------------------------------------------------------


def deal_size(traits: Mapping[str, Any], rule: DealSizeRule) -> str | None:
    try:
        size = float(traits[rule.trait])
    except (KeyError, TypeError, ValueError):
        return None
    if size < rule.mid_from:
        return "small"
    if size < rule.large_from:
        return "mid"
    return "large"


DEAL_WORDS = {"small": "small", "mid": "mid-size", "large": "large"}


@dataclass(frozen=True, slots=True)
class PQLResult:
    qualified: bool
    kind: str | None
    reason: str
    threshold: float | None
    deal_size: str | None


def _stage(traits: Mapping[str, Any], rules: PQLRules) -> str:
    value = (traits or {}).get(rules.stage_trait)
    return str(value).strip().lower() if value is not None else ""


def account_stage(traits: Mapping[str, Any], defs: Definitions) -> str:
    """Where an account is in its life by its stage trait: "paid", "trial" (trials and free
    plans) or "other" (churned, unknown...)."""
    stage = _stage(traits, defs.pql)
    if stage in {v.lower() for v in defs.pql.paid_values}:
        return "paid"
    if stage in {v.lower() for v in defs.pql.trial_values}:
        return "trial"
    return "other"


def is_paying(traits: Mapping[str, Any], defs: Definitions) -> bool:
    return account_stage(traits, defs) == "paid"


def account_checklist(traits: Mapping[str, Any], defs: Definitions) -> Checklist:
    """The Activation checklist that applies to an account: paid accounts have their own."""
    return defs.account_checklist_paid if is_paying(traits, defs) else defs.account_checklist_trial


def _first_done(events: Iterable[str], activity: Activity) -> tuple[str, dt.date] | None:
    found = [(activity.first_day[e], e) for e in events if e in activity.first_day]
    if not found:
        return None
    day, event = min(found)
    return event, day


def _kind_signal(
    events: Iterable[str],
    conditions: tuple[Condition, ...],
    facts: Facts,
    record: Mapping[str, Any],
) -> str | None:
    """Why a PQL kind applies, in words ('did X on <day>' or the trait), or None."""
    found = _first_done(events, facts.activity)
    if found:
        return f"did '{found[0]}' on {found[1].isoformat()}"
    if conditions and matches(conditions, record):
        return " and ".join(
            f"{c.field.removeprefix('trait.')} {c.op.replace('_', ' ')} {c.value}"
            if c.value is not None
            else f"{c.field.removeprefix('trait.')} {c.op.replace('_', ' ')}"
            for c in conditions
        )
    return None


def pql_status(
    facts: Facts,
    result: ActivationResult,
    checklist: Checklist,
    rules: PQLRules,
    size_rule: DealSizeRule,
) -> PQLResult:
    """Is this account a product-qualified lead, of which kind, and why (in a rep's words)."""
    size = deal_size(facts.traits, size_rule)
    stage = _stage(facts.traits, rules)
    record = {"trait": facts.traits, "traits": facts.traits}
    purchase = _kind_signal(rules.purchase_events, rules.purchase_traits, facts, record)
    if purchase:
        return PQLResult(
            True, "touchless_purchase", f"Bought without sales: {purchase}.", None, size
        )
    trial_values = {v.lower() for v in rules.trial_values}
    if stage not in trial_values:
        shown = stage or "unknown"
        return PQLResult(
            False,
            None,
            f"Not a trial or free account ({rules.stage_trait}: {shown}); PQL applies to trials.",
            None,
            size,
        )
    for kind, events, conditions, words in (
        ("hand_raiser", rules.hand_raiser_events, rules.hand_raiser_traits, "Asked for sales"),
        ("limit_reached", rules.limit_events, rules.limit_traits, "Hit a plan limit"),
    ):
        found = _kind_signal(events, conditions, facts, record)
        if found:
            return PQLResult(True, kind, f"{words}: {found}.", None, size)
    effective_size = size or size_rule.unknown
    threshold = rules.thresholds[rules.complexity][effective_size]
    size_words = DEAL_WORDS[effective_size] + " deal"
    if size is None:
        size_words += f" (no {size_rule.trait} known, so counted as {DEAL_WORDS[effective_size]})"
    else:
        size_words += f" ({facts.traits.get(size_rule.trait)} {size_rule.trait})"
    labels = {s.key: s.label for s in checklist.steps}
    done_labels = ", ".join(labels[k] for k in result.done) or "none"
    summary = (
        f"{result.rate:g}% Activation ({len(result.done)} of {result.total} steps: {done_labels})"
    )
    if result.total and result.rate >= threshold:
        return PQLResult(
            True,
            "criteria",
            f"Reached {summary}, at or above the {threshold:g}% threshold for a {size_words} "
            f"on a {rules.complexity} product.",
            threshold,
            size,
        )
    return PQLResult(
        False,
        None,
        f"At {summary}; a {size_words} on a {rules.complexity} product needs {threshold:g}%.",
        threshold,
        size,
    )


# --- Lead types ----------------------------------------------------------------------------

LEVELS = {"low": 0, "medium": 1, "high": 2}
# type: (activation, engagement, communication, fit or None, chance to convert %)
LEAD_TYPES: dict[str, tuple[str, str, str, str | None, int]] = {
    "Golden Lead": ("high", "high", "active", None, 90),
    "Silent Success": ("high", "high", "low", None, 75),
    "Contrary Converter": ("medium", "medium", "active", None, 60),
    "Positive Procrastinator": ("low", "low", "active", "good", 30),
    "Fizzler": ("high", "low", "low", None, 10),
    "Incompatible Ignoramus": ("low", "low", "active", "poor", 5),
    "Heartbreaker": ("low", "low", "low", None, 5),
}


def level(value: float, high: float, medium: float) -> str:
    if value >= high:
        return "high"
    if value >= medium:
        return "medium"
    return "low"


@dataclass(frozen=True, slots=True)
class LeadType:
    name: str
    chance: int
    exact: bool
    signals: tuple[str, str, str, str]


COMMUNICATION_DAYS = 30


def communication(
    crm: Mapping[str, Any], today: dt.date, window_days: int = COMMUNICATION_DAYS
) -> str | None:
    """How responsive an account is to the team, from what the CRM says: "active" when the
    record was contacted or had a sales activity within ``window_days``, "low" when the CRM
    knows the record but it has been quiet, None (unknown) when nothing was pulled yet."""
    if not crm.get("pulled_at"):
        return None
    for key in ("last_contacted_at", "last_sales_activity_at"):
        value = crm.get(key)
        if value:
            moment = dt.datetime.fromisoformat(str(value))
            if (today - moment.date()).days < window_days:
                return "active"
    return "low"


def lead_type(
    activation_rate: float,
    engagement_score: float,
    communication: str | None,
    fit: str,
    bands: LeadTypeBands,
) -> LeadType:
    """The seed's seven types. Unknown communication counts as low/none until the CRM says
    otherwise. A combination outside the table takes the nearest type (sum of level distances,
    fit counting one step where a type requires it); ties go to the lower chance, so the
    forecast errs on the side of caution."""
    a = level(activation_rate, bands.activation_high, bands.activation_medium)
    e = level(engagement_score, bands.engagement_high, bands.engagement_medium)
    c = "active" if communication == "active" else "low"
    signals = (a, e, c, fit)

    def distance(spec: tuple[str, str, str, str | None, int]) -> int:
        ta, te, tc, tfit, _ = spec
        d = abs(LEVELS[a] - LEVELS[ta]) + abs(LEVELS[e] - LEVELS[te]) + (c != tc)
        return d + (tfit is not None and tfit != fit)

    name, spec = min(LEAD_TYPES.items(), key=lambda item: (distance(item[1]), item[1][4]))
    return LeadType(name=name, chance=spec[4], exact=distance(spec) == 0, signals=signals)


def forecast_value(size: str | None, chance: int, rule: DealSizeRule) -> float:
    """Deal value × chance to convert; an unknown size counts as the tenant's ``unknown`` band."""
    return round(rule.values.get(size or rule.unknown, 0.0) * chance / 100.0, 2)


def forecast_basis(size: str | None, rule: DealSizeRule) -> str:
    """What the forecast assumed about the deal, in words."""
    if size is not None:
        return f"a {DEAL_WORDS[size]} deal"
    return f"deal size unknown (no {rule.trait}): counted as a {DEAL_WORDS[rule.unknown]} deal"
