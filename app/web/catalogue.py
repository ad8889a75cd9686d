"""The event catalogue: every event name and trait a tenant has sent, how much and by whom, and
where its definitions use each; names the definitions use that never arrived are flagged.

Read from the daily rollups (events) and the subjects' trait documents (traits), one grouped
query each, so it costs the same for a tenant with a million events as with a hundred."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import case, distinct, func, select, text
from sqlalchemy.orm import Session

from app.models import AccountEventDay, UserEventDay
from scoring.definitions import Condition, Definitions


@dataclass
class EventEntry:
    name: str
    last_7_days: int = 0
    last_30_days: int = 0
    total: int = 0
    last_seen: dt.date | None = None
    users: int = 0
    accounts: int = 0
    used_in: list[str] = field(default_factory=list)


@dataclass
class TraitEntry:
    name: str
    accounts: int = 0
    users: int = 0
    used_in: list[str] = field(default_factory=list)


@dataclass
class Catalogue:
    events: list[EventEntry]
    traits: list[TraitEntry]
    # Names the definitions use that no event (trait) has carried yet: name → where used.
    unknown_events: dict[str, list[str]]
    unknown_traits: dict[str, list[str]]

    def as_dict(self) -> dict:
        def event(e: EventEntry) -> dict:
            return {
                "name": e.name,
                "last_7_days": e.last_7_days,
                "last_30_days": e.last_30_days,
                "total": e.total,
                "last_seen": e.last_seen.isoformat() if e.last_seen else None,
                "users": e.users,
                "accounts": e.accounts,
                "used_in": e.used_in,
            }

        return {
            "events": [event(e) for e in self.events],
            "traits": [
                {"name": t.name, "accounts": t.accounts, "users": t.users, "used_in": t.used_in}
                for t in self.traits
            ],
            "unknown_events": [{"name": k, "used_in": v} for k, v in self.unknown_events.items()],
            "unknown_traits": [{"name": k, "used_in": v} for k, v in self.unknown_traits.items()],
        }


def _conditions(where: str, conditions, traits: dict[str, list[str]]) -> None:
    for condition in conditions:
        if isinstance(condition, Condition) and condition.field.startswith("trait."):
            traits[condition.field.removeprefix("trait.")].append(where)


def usage(defs: Definitions) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Where the definitions use each event name and each trait, in words an admin reads
    ("weight 8 in profile default", "trial checklist: Created a report")."""
    events: dict[str, list[str]] = defaultdict(list)
    traits: dict[str, list[str]] = defaultdict(list)
    for name, checklist in (
        ("trial checklist", defs.account_checklist_trial),
        ("paid checklist", defs.account_checklist_paid),
        ("user checklist", defs.user_checklist),
    ):
        for step in checklist.steps:
            where = f"{name}: {step.label}"
            if step.kind == "trait" and step.trait:
                traits[step.trait].append(where)
            elif step.event:
                events[step.event].append(where)
    for profile in defs.profiles:
        for event, weight in profile.weights.items():
            if weight > 0:
                events[event].append(f"weight {weight} in profile {profile.name}")
        for penalty in profile.penalties:
            if penalty.event:
                events[penalty.event].append(f"inactivity penalty in profile {profile.name}")
        _conditions(f"profile {profile.name} applies to", profile.applies_to, traits)
    for event in defs.key_features:
        events[event].append("key feature")
    rules = defs.pql
    for label, names, conditions in (
        ("hand-raiser", rules.hand_raiser_events, rules.hand_raiser_traits),
        ("plan limit reached", rules.limit_events, rules.limit_traits),
        ("touchless purchase", rules.purchase_events, rules.purchase_traits),
    ):
        for event in names:
            events[event].append(f"PQL signal: {label}")
        _conditions(f"PQL signal: {label}", conditions, traits)
    traits[rules.stage_trait].append("trial or paid (PQL stage trait)")
    traits[defs.deal_size.trait].append("deal size")
    traits[defs.lead_types.fit_trait].append("lead types (fit)")
    for segment in defs.segments:
        _conditions(f"segment {segment.name}", segment.conditions, traits)
    return dict(events), dict(traits)


def _trait_counts(session: Session, tenant_id: int, table: str) -> dict[str, int]:
    """How many subjects of ``table`` carry each trait key (one grouped query)."""
    if session.get_bind().dialect.name == "postgresql":
        sql = (
            f"SELECT k, count(*) FROM {table}, jsonb_object_keys(CASE WHEN "
            f"jsonb_typeof({table}.traits::jsonb) = 'object' THEN {table}.traits::jsonb "
            f"ELSE '{{}}'::jsonb END) AS k WHERE {table}.tenant_id = :tenant GROUP BY k"
        )
    else:
        sql = (
            f"SELECT j.key, count(*) FROM {table}, json_each({table}.traits) AS j "
            f"WHERE {table}.tenant_id = :tenant AND json_type({table}.traits) = 'object' "
            "GROUP BY j.key"
        )
    return {str(k): int(n) for k, n in session.execute(text(sql), {"tenant": tenant_id})}


def event_catalogue(
    session: Session, tenant_id: int, defs: Definitions, today: dt.date
) -> Catalogue:
    used_events, used_traits = usage(defs)
    week = today - dt.timedelta(days=6)
    month = today - dt.timedelta(days=29)
    rows = session.execute(
        select(
            UserEventDay.event,
            func.sum(UserEventDay.count),
            func.sum(case((UserEventDay.day >= week, UserEventDay.count), else_=0)),
            func.sum(case((UserEventDay.day >= month, UserEventDay.count), else_=0)),
            func.max(UserEventDay.day),
            func.count(distinct(UserEventDay.user_id)),
        )
        .where(UserEventDay.tenant_id == tenant_id)
        .group_by(UserEventDay.event)
    ).all()
    accounts = dict(
        session.execute(
            select(AccountEventDay.event, func.count(distinct(AccountEventDay.account_id)))
            .where(AccountEventDay.tenant_id == tenant_id)
            .group_by(AccountEventDay.event)
        ).all()
    )
    events = [
        EventEntry(
            name=name,
            total=int(total or 0),
            last_7_days=int(week_count or 0),
            last_30_days=int(month_count or 0),
            last_seen=last,
            users=int(users or 0),
            accounts=int(accounts.get(name, 0)),
            used_in=used_events.get(name, []),
        )
        for name, total, week_count, month_count, last, users in rows
    ]
    events.sort(key=lambda e: (-e.last_30_days, -e.total, e.name))
    account_traits = _trait_counts(session, tenant_id, "accounts")
    user_traits = _trait_counts(session, tenant_id, "users")
    traits = [
        TraitEntry(
            name=name,
            accounts=account_traits.get(name, 0),
            users=user_traits.get(name, 0),
            used_in=used_traits.get(name, []),
        )
        for name in sorted(set(account_traits) | set(user_traits))
    ]
    seen_events = {e.name for e in events}
    seen_traits = {t.name for t in traits}
    return Catalogue(
        events=events,
        traits=traits,
        unknown_events={k: v for k, v in sorted(used_events.items()) if k not in seen_events},
        unknown_traits={k: v for k, v in sorted(used_traits.items()) if k not in seen_traits},
    )
