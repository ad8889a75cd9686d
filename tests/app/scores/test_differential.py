"""Differential: what the scoring pass stores, read through its fast paths (the activity basis,
today's rollups, the previous period rescored from rollups, activation moments, the database
comparing rows), equals the pure rules of ``scoring.engine`` applied one subject at a time to
facts rebuilt from the raw events, on random tenants: late events, a merge, trial, free and paid
checklists, penalties, decay, two profiles, a "within the first days" step, a segment, every
PQL kind, and the accounts' members' statistics (members, activated, average Activation, active
in the time frame) made of the users' rules."""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict

import pytest
from sqlalchemy import select

from app.models import (
    Account,
    AccountMembership,
    AccountScore,
    Event,
    ScoringRun,
    User,
    UserScore,
)
from app.scores.definitions_store import current_definitions, save_definitions, to_document
from app.scores.scoring_pass import recompute
from scoring.engine import (
    Facts,
    account_checklist,
    activation,
    adoption_rate,
    grade,
    matches,
    pql_status,
    profile_for,
    raw_engagement,
    summarize,
    trend,
)
from tests.helpers.events import NOW, ev, group, send

EVENTS = [
    "Logged In",
    "Logged In",
    "Report Created",
    "Dashboard Viewed",
    "Teammate Invited",
    "Integration Connected",
    "Dashboard Shared",
    "Export Downloaded",
]
# Each makes a PQL of its kind (hand-raiser, limit, purchase) when it happens.
SIGNALS = ["Demo Requested", "Plan Limit Reached", "Order Completed"]


def _definitions(db, tenant_id):
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["profiles"].append(
        {
            **document["profiles"][0],
            "name": "Paid monthly",
            "time_frame_days": 30,
            "decay": True,
            "penalties": [{"points": -3, "days": 14, "event": None}],
            "applies_to": [{"field": "trait.plan", "op": "equals", "value": "paid"}],
            "default": False,
        }
    )
    document["user_checklist"].append(
        {
            **document["user_checklist"][1],
            "key": "early",
            "label": "Two reports in the first 10 days",
            "min_count": 2,
            "within_days": 10,
        }
    )
    team = next(s for s in document["account_checklist_trial"] if s["kind"] == "distinct_users")
    document["account_checklist_trial"].append(
        {**team, "key": "early_team", "label": "2 people in 14 days", "min_count": 2}
        | {"within_days": 14}
    )
    document["segments"] = [
        {
            "name": "Busy",
            "applies_to": "account",
            "conditions": [{"field": "engagement_score", "op": "gte", "value": 50}],
        }
    ]
    return save_definitions(db, tenant_id, document, "test").definitions


def _traffic(rng: random.Random, users: range, days: list[float]) -> list[dict]:
    messages = []
    for u in users:
        account = f"g{u % 5}"
        for _ in range(rng.randint(0, 9)):
            event = rng.choice(EVENTS + ([rng.choice(SIGNALS)] if rng.random() < 0.12 else []))
            messages += ev(f"u{u}", event, account, days_ago=rng.choice(days), n=rng.randint(1, 3))
    return messages


def _reference_facts(db, tenant_id, defs, today):
    """Facts per subject from the raw track events, as ``summarize`` reads daily counts."""
    frames = (1, 7, 30)
    with db.tenant_session(tenant_id) as s:
        users = {
            u.id: (u.first_seen_at.date(), u.traits or {})
            for u in s.scalars(select(User).where(User.merged_into_id.is_(None)))
        }
        accounts = {
            a.id: (a.first_seen_at.date(), a.traits or {}) for a in s.scalars(select(Account))
        }
        events = s.execute(
            select(Event.user_id, Event.account_id, Event.name, Event.timestamp).where(
                Event.type == "track"
            )
        ).all()
    daily = {"u": defaultdict(lambda: defaultdict(lambda: defaultdict(int))), "a": None}
    daily["a"] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    firsts: dict = defaultdict(lambda: defaultdict(dict))
    for uid, aid, name, moment in events:
        day = moment.date()
        if day > today:
            continue
        daily["u"][uid][name][day] += 1
        if aid is not None:
            daily["a"][aid][name][day] += 1
            seen = firsts[aid][name].get(uid)
            firsts[aid][name][uid] = day if seen is None else min(seen, day)

    def facts(kind, sid, first_seen, traits, until):
        history = {
            e: {d: c for d, c in days.items() if d <= until} for e, days in daily[kind][sid].items()
        }
        activity = summarize(history, until, frames=frames, windows=(defs.frequency_days,))
        return Facts(
            first_seen=first_seen,
            traits=traits,
            activity=activity,
            user_first_day={e: dict(u) for e, u in firsts[sid].items()} if kind == "a" else {},
            distinct_users={e: len(u) for e, u in firsts[sid].items()} if kind == "a" else {},
        )

    return {
        "u": {uid: (facts, "u", uid, *info) for uid, info in users.items()},
        "a": {aid: (facts, "a", aid, *info) for aid, info in accounts.items()},
    }


def _check(db, tenant_id, today):
    defs = current_definitions(db, tenant_id).definitions
    with db.tenant_session(tenant_id) as s:
        run = s.scalar(
            select(ScoringRun)
            .where(ScoringRun.full.is_(True), ScoringRun.finished_at.is_not(None))
            .order_by(ScoringRun.started_at.desc())
            .limit(1)
        )
        p90 = dict(run.percentiles)
        stored = {
            "u": {r.user_id: r for r in s.scalars(select(UserScore))},
            "a": {r.account_id: r for r in s.scalars(select(AccountScore))},
        }
        members = defaultdict(list)
        for aid, uid in s.execute(select(AccountMembership.account_id, AccountMembership.user_id)):
            members[aid].append(uid)
        last_active = dict(s.execute(select(User.id, User.last_active_at)).all())
    reference = _reference_facts(db, tenant_id, defs, today)
    previous_day = today - dt.timedelta(days=defs.default_profile.time_frame_days)
    # Each user's Activation by the rules: its accounts' members' statistics are made of it.
    activated_by_rule: dict[int, tuple[bool, float]] = {}
    checked = 0
    for kind in ("u", "a"):
        assert set(stored[kind]) == set(reference[kind]), kind
        for sid, (build, _, _, first_seen, traits) in reference[kind].items():
            facts = build(kind, sid, first_seen, traits, today)
            record = {"trait": traits, "traits": traits}
            profile = profile_for(defs, record)
            raw = raw_engagement(profile, facts.activity, today)
            score = grade(raw, p90[f"{kind}:{profile.name}"])
            checklist = account_checklist(traits, defs) if kind == "a" else defs.user_checklist
            act = activation(checklist, facts)
            before = before_raw = None
            if first_seen <= previous_day:
                earlier = build(kind, sid, first_seen, traits, previous_day).activity
                before_raw = raw_engagement(profile, earlier, previous_day)
                before = grade(before_raw, p90[f"{kind}:{profile.name}:previous"])
            if kind == "u":
                activated_by_rule[sid] = (act.activated, act.rate)
            row = stored[kind][sid]
            got = {
                "profile": row.profile,
                "raw": row.engagement_raw,
                "score": row.engagement_score,
                "rate": row.activation_rate,
                "done": sorted(row.steps_done["done"]),
                "adoption": row.adoption_rate,
                "active_days": row.active_days,
                "trend": row.trend_change,
                "previous_raw": row.previous_raw,
            }
            expected = {
                "profile": profile.name,
                "raw": round(raw, 4),
                "score": score,
                "rate": act.rate,
                "done": sorted(act.done),
                "adoption": adoption_rate(
                    defs.key_features, facts.activity, profile.time_frame_days
                ),
                "active_days": facts.activity.active_days.get(defs.frequency_days, 0),
                "trend": trend(score, before, defs.trend).change,
                "previous_raw": None if before_raw is None else round(before_raw, 4),
            }
            if kind == "a":
                pql = pql_status(facts, act, checklist, defs.pql, defs.deal_size)
                got.update(pql=(row.pql, row.pql_kind))
                expected.update(pql=(pql.qualified, pql.kind))
                # Members' statistics: every member counts; the Activation rate is averaged
                # over the members scored; active: last seen within the profile's time frame.
                scored = [activated_by_rule[u] for u in members[sid] if u in activated_by_rule]
                since = dt.datetime.combine(
                    today - dt.timedelta(days=profile.time_frame_days - 1), dt.time(), dt.UTC
                )
                got.update(
                    members=(
                        row.total_users,
                        row.activated_users,
                        row.average_user_activation,
                        row.active_users,
                    )
                )
                expected.update(
                    members=(
                        len(members[sid]),
                        sum(1 for activated, _ in scored if activated),
                        round(sum(rate for _, rate in scored) / len(scored), 2) if scored else 0,
                        sum(
                            1
                            for u in members[sid]
                            if u in activated_by_rule
                            and last_active[u] is not None
                            and last_active[u] >= since
                        ),
                    )
                )
                if defs.segments:  # the test's own (the defaults have none)
                    got.update(busy="Busy" in row.segments["names"])
                    expected.update(
                        busy=matches(defs.segments[0].conditions, {"engagement_score": score})
                    )
            # Decayed points are summed in another order: the raw may differ in its last digit.
            assert got.pop("raw") == pytest.approx(expected.pop("raw"), abs=2e-4), (kind, sid)
            assert got == expected, (kind, sid, traits)
            checked += 1
    return checked


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_the_pass_agrees_with_the_pure_rules_on_random_tenants(app, client, db, tenant_key, seed):
    rng = random.Random(seed)
    tenant_id, key = tenant_key
    _definitions(db, tenant_id)
    moment = NOW - dt.timedelta(minutes=30)
    app.extensions["pql"].clock = lambda: moment
    plans = ["trial", "paid", "free", "trial", "paid"]
    history = [
        group(f"u{u}", f"g{u % 5}", days_ago=rng.choice([40, 20, 9]), plan=plans[u % 5])
        for u in range(14)
    ]
    # The days on each side of every boundary: the frames (7 and 30 days) and penalties (7 and
    # 14 days) today, and the same for the previous period (7 days back).
    days = [0, 0.3, 1, 2, 4, 6, 7, 8, 12, 13, 14, 15, 20, 21, 29, 30, 31, 36, 37, 45]
    history += _traffic(rng, range(14), days)
    # Exactly on the previous period's penalty boundaries: last logged in 7 days before it (the
    # default profile's penalty), and a paid account last active 14 days before it (Paid
    # monthly's).
    history += [group("u20", "g0", days_ago=40), *ev("u20", "Logged In", "g0", days_ago=14)]
    history += [
        group("u21", "g5", days_ago=40, plan="paid"),
        *ev("u21", "Report Created", "g5", 21),
    ]
    # Members last seen on the first day outside their account's time frame (7 and 30 days):
    # not active members.
    history += [group("u22", "g0", days_ago=40), *ev("u22", "Logged In", "g0", days_ago=7)]
    history += [group("u23", "g5", days_ago=40), *ev("u23", "Logged In", "g5", days_ago=30)]
    send(client, key, history)
    recompute(db, tenant_id, NOW - dt.timedelta(minutes=20))
    today = NOW.date()
    assert _check(db, tenant_id, today) > 15

    # Then, the same day: late events (earlier days), today's, a merge, a new user.
    moment = NOW
    late = _traffic(rng, range(0, 16, 2), [3, 12, 25, 0])
    alias = {"type": "alias", "userId": "u12", "previousId": "u13", "timestamp": NOW.isoformat()}
    send(client, key, [group("u15", "g2", days_ago=0), *late, alias])
    summary = recompute(db, tenant_id, NOW + dt.timedelta(seconds=30), full=False)
    assert summary.full is False
    assert _check(db, tenant_id, today) > 15
    recompute(db, tenant_id, NOW + dt.timedelta(minutes=1))
    assert _check(db, tenant_id, today) > 15
