"""Recompute scores: read rollups, run ``scoring.engine``, store results and daily history.

A *full* pass scores every account and user of a tenant and fixes the tenant's 90th
percentiles. An *incremental* pass scores only the users and accounts touched since the
previous pass (new events, changed traits), plus the members of touched accounts, grading them
against the percentiles of the last full pass. The daily full pass moves everyone's time window.

Rollups are read with a few aggregate queries per pass (lifetime totals, a recent-days window,
and full daily history only for the events whose steps need it), never raw events.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import ColumnElement, case, delete, func, select, text, update
from sqlalchemy.orm import Session

from app.bulk import insert_rows, store_changed, upsert_history
from app.db import Database, overlapped, stream
from app.models import (
    Account,
    AccountMembership,
    AccountScore,
    DefinitionsVersion,
    ScoringRun,
    User,
    UserScore,
)
from app.scores import activity_basis, firing
from app.scores.activity_basis import chunks, only
from app.scores.collector import collector_paused
from app.scores.definitions_store import current_definitions, parse_document
from app.scores.moments import completed_at, many_step_moments, signal_moment, steps_needed
from app.scores.subjects import Subjects, load_accounts, load_users, previous_raws
from scoring.definitions import Definitions, ScoringProfile
from scoring.engine import (
    Activity,
    account_checklist,
    activation,
    adoption_rate,
    engagement_segment,
    forecast_value,
    grade,
    is_paying,
    lead_type,
    lifecycle_segments,
    matches,
    percentile_90,
    pql_status,
    profile_for,
    raw_engagement,
    trend,
)
from scoring.fit import fit, gate_pql, poor_fit

log = logging.getLogger(__name__)

_frames = activity_basis.frames
# Events received this long before the previous pass started are looked at again, so that an
# ingestion transaction still committing when that pass began is not missed (its events carry
# the receipt time, and such transactions take well under a second). Scoring a subject twice is
# harmless; a longer overlap only re-scores more of the previous interval's subjects.
OVERLAP = dt.timedelta(seconds=15)

Progress = Callable[[str, int, int], None]


@dataclass
class RunSummary:
    full: bool
    accounts: int
    users: int
    definitions_version: int
    percentiles: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _record(traits: dict, crm: dict | None = None, **values: Any) -> dict[str, Any]:
    return {"trait": traits, "traits": traits, "crm": crm or {}, **values}


def _profile_of(defs: Definitions) -> Callable[[dict], ScoringProfile]:
    """The profile a subject's traits pick (``profile_for``); without a profile that filters,
    the default one, with no record built per subject."""
    if not any(p.applies_to and not p.default for p in defs.profiles):
        return lambda traits: defs.default_profile
    return lambda traits: profile_for(defs, _record(traits))


def _stored(session: Session, model, key, subset: list[int] | None) -> dict[int, Any]:
    """What the pass reads of each subject's stored row, in one read instead of one each: its
    profile and previous-period raw (an incremental pass keeps them), when it was first
    activated and (accounts) first a PQL, kept across passes, and (accounts) what decides a
    drop's excuse (see ``_excuse_rule_drops``), and its score and rate (whether today's history
    moves). A full pass reads only the users that were activated: nothing else of theirs is
    kept."""
    account = model is AccountScore
    columns = [
        key,
        model.profile,
        model.previous_raw,
        model.activated_at,
        model.engagement_score,
        model.activation_rate,
    ]
    if account:
        columns += [
            model.pql_at,
            model.definitions_version,
            (model.trend_segment == "Ice Cold").label("was_cold"),
            model.drop_excused,
        ]
    query = select(*columns)
    if subset is None and not account:
        query = query.where(model.activated_at.is_not(None))
    out = {}
    for chunk in chunks(subset):
        for row in session.execute(query.where(*only(key, chunk))):
            out[row[0]] = row
    return out


def _earlier_firsts(
    stored: dict[int, Any], account: bool
) -> dict[int, tuple[dt.datetime | None, dt.datetime | None]]:
    """When each subject was first activated and (accounts) first a PQL: kept across passes."""
    out = {}
    for sid, row in stored.items():
        pql_at = row.pql_at if account else None
        if row.activated_at is not None or pql_at is not None:
            out[sid] = (row.activated_at, pql_at)
    return out


def _score_rows(
    defs: Definitions,
    data: Subjects,
    ids: list[int],
    subject: str,
    today: dt.date,
    now: dt.datetime,
    percentiles: dict[str, float] | None,
    previous: dict[int, float],
    earlier: dict[int, tuple],
    member_stats: dict[int, _MemberStats] | None = None,
    progress: Progress | None = None,
) -> tuple[list[dict], dict[str, float]]:
    """Score every id of one kind. Returns the rows and the percentiles used. Each subject's
    facts are taken out of ``data`` and let go once its row is made.

    The trend compares like with like: ``previous`` holds each subject's raw engagement of the
    previous period under the current definitions (every subject first seen by that period's
    last day), graded here against that period's own 90th percentile (kept as
    "<subject>:<profile>:previous"). A subject first seen after that day is New: no trend."""
    previous_day = today - dt.timedelta(days=defs.default_profile.time_frame_days)
    prepared = []
    raws: dict[str, list[float]] = defaultdict(list)
    profile_of = _profile_of(defs)
    kind = "account" if subject == "a" else "user"
    # The tenant's own segments of this kind: without any, no record is built per subject.
    own_segments = [s for s in defs.segments if s.applies_to == kind]
    for sid in ids:
        # The subject's facts leave ``data`` here; ``prepared`` holds them until its row is made.
        facts, last_seen, domain = data.take(sid)
        profile: ScoringProfile = profile_of(facts.traits)
        raw = raw_engagement(profile, facts.activity, today)
        raws[f"{subject}:{profile.name}"].append(raw)
        before = None
        if facts.first_seen <= previous_day:
            before = previous[sid]
            raws[f"{subject}:{profile.name}:previous"].append(before)
        prepared.append((sid, facts, profile, raw, before, last_seen, domain))
    if percentiles is None:
        percentiles = {key: percentile_90(values) for key, values in raws.items()}
    else:
        for key, values in raws.items():
            percentiles.setdefault(key, percentile_90(values))

    rows = []
    for position in range(len(prepared)):
        sid, facts, profile, raw, before, last_seen, domain = prepared[position]
        # Each subject's facts go as its row is made: the rows take their place in memory.
        prepared[position] = None
        if kind == "account":
            checklist = account_checklist(facts.traits, defs)
        else:
            checklist = defs.user_checklist
        act = activation(checklist, facts)
        score = grade(raw, percentiles[f"{subject}:{profile.name}"])
        last_active_day = last_seen.date() if last_seen else None
        change = trend(
            score,
            None
            if before is None
            else grade(before, percentiles[f"{subject}:{profile.name}:previous"]),
            defs.trend,
        )
        first_activated, first_pql = earlier.get(sid, (None, None))
        row: dict[str, Any] = {
            "definitions_version": 0,
            "computed_at": now,
            "profile": profile.name,
            "activation_rate": act.rate,
            "activated": act.activated,
            "activated_at": (first_activated or now) if act.activated else None,
            # Newly activated: the steps to read the completion times of (see _when_it_happened).
            "_steps": (
                [s for s in checklist.steps if s.key in set(act.done)]
                if act.activated and first_activated is None
                else None
            ),
            "next_step": act.next_step.label if act.next_step else None,
            "steps_done": {"done": list(act.done), "total": act.total},
            "engagement_raw": round(raw, 4),
            "engagement_score": score,
            "engagement_segment": engagement_segment(score, defs.score_bands),
            "trend_change": change.change,
            "trend_segment": change.segment,
            "previous_raw": None if before is None else round(before, 4),
            "adoption_rate": adoption_rate(
                defs.key_features, facts.activity, profile.time_frame_days
            ),
            "adoption_rate_ever": adoption_rate(defs.key_features, facts.activity, None),
            "active_days": facts.activity.active_days.get(defs.frequency_days, 0),
            "last_active_at": last_seen,
        }
        total_users = None
        if kind == "account":
            stats = (member_stats or {}).get(sid)
            total_users = stats.total if stats else 0
            active = stats.active.get(profile.time_frame_days, 0) if stats else 0
            activated_users = stats.activated if stats else 0
            average = stats.average if stats else 0.0
            fitted = fit({**_record(facts.traits, facts.crm), "domain": domain}, defs.fit)
            pql = gate_pql(
                pql_status(facts, act, checklist, defs.pql, defs.deal_size),
                fitted,
                defs.fit,
                defs.pql.min_fit_band,
            )
            # Lead types tell a poor fit apart (the seed's Incompatible Ignoramus): the lowest
            # fit band or a disqualifier, or the tenant's own fit trait.
            poor = (
                poor_fit(fitted, defs.fit)
                or str(facts.traits.get(defs.lead_types.fit_trait, "")).lower()
                == str(defs.lead_types.poor_fit_value).lower()
            )
            fit_word = "poor" if poor else "good"
            # Lead types forecast conversion: for trial and free accounts only (a paying
            # account has converted: no lead type, no chance to convert, no forecast).
            lead = (
                None
                if is_paying(facts.traits, defs)
                else lead_type(
                    act.rate, score, facts.crm.get("communication"), fit_word, defs.lead_types
                )
            )
            row.update(
                active_users=active,
                total_users=total_users,
                activated_users=activated_users,
                average_user_activation=average,
                pql=pql.qualified,
                pql_at=(first_pql or now) if pql.qualified else None,
                _pql_steps=(
                    (
                        [s for s in checklist.steps if s.key in set(act.done)],
                        steps_needed(pql.threshold, act.total),
                    )
                    if pql.qualified
                    and first_pql is None
                    and pql.kind == "criteria"
                    and pql.threshold is not None
                    else None
                ),
                _pql_signal=(
                    _signal_of(pql.kind, defs.pql)
                    if pql.qualified and first_pql is None and pql.kind != "criteria"
                    else None
                ),
                pql_kind=pql.kind,
                pql_reason=pql.reason,
                fit_score=fitted.score if fitted else None,
                fit_band=fitted.band if fitted else None,
                fit_reason=fitted.reason if fitted else None,
                deal_size=pql.deal_size,
                lead_type=lead.name if lead else None,
                chance_to_convert=lead.chance if lead else None,
                forecast_value=(
                    forecast_value(pql.deal_size, lead.chance, defs.deal_size) if lead else None
                ),
            )
        segments = [row["engagement_segment"]]
        if change.segment:
            segments.append(change.segment)
        segments += lifecycle_segments(
            facts.first_seen, last_active_day, today, defs.trend, total_users
        )
        if own_segments:
            record = _record(
                facts.traits,
                facts.crm,
                **row,
                last_active_days=(today - last_active_day).days if last_active_day else None,
                segments=segments,
            )
            segments += [s.name for s in own_segments if matches(s.conditions, record)]
        row["segments"] = {"names": segments}
        row["_id"] = sid
        rows.append(row)
        if progress and position % 1000 == 0:
            progress(kind + "s", position, len(prepared))
    return rows, percentiles


def _score_subjects(
    session: Session,
    defs: Definitions,
    data: Subjects,
    ids: list[int],
    subject: str,
    today: dt.date,
    now: dt.datetime,
    percentiles: dict[str, float] | None,
    subset: list[int] | None,
    progress: Progress | None = None,
    stale: set[int] | None = None,
    alongside: Callable[..., Any] | None = None,
    members: dict[int, _Member] | None = None,
    others: Future | None = None,
) -> tuple[list[dict], dict[str, float], dict[int, tuple[float, float]] | None]:
    """``_score_rows`` with what it needs read for ``subset`` (None: everyone): the scores of
    the previous period, earlier firsts, and (accounts) their members' statistics, with the
    users just scored (``members``, see ``_members_of``) counted as they are now. Returns
    the rows, the percentiles used, and the subjects known to have a stored row with its stored
    score and rate (None when the pass did not read them all: a full pass of users), for
    ``_store``.

    ``alongside`` is database work to do while Python scores (``activity_basis.rebuild`` or
    ``roll_forward`` of the other kind, its arguments bound): it is given the scoring as its
    ``meanwhile``.

    An incremental pass (``subset`` given, same day and definitions as the last full pass)
    reuses each subject's stored previous-period raw unless its past changed (``stale``: late
    events, merges, no basis yet) or its profile did; only the others' previous period is
    read from the rollups."""
    previous_day = today - dt.timedelta(days=defs.default_profile.time_frame_days)
    kind = activity_basis.USERS if subject == "u" else activity_basis.ACCOUNTS
    model, key = (
        (UserScore, UserScore.user_id)
        if subject == "u"
        else (AccountScore, AccountScore.account_id)
    )
    kept: dict[int, float] = {}
    reread = subset
    profile_of = _profile_of(defs)
    stored = _stored(session, model, key, subset)
    if subset is not None:
        for sid, row in stored.items():
            if row.previous_raw is None or sid not in data.first_seen or sid in (stale or ()):
                continue
            if profile_of(data.traits[sid]).name == row.profile:
                kept[sid] = row.previous_raw
        reread = [sid for sid in subset if sid not in kept]
    if reread != []:
        # Each subject's previous-period raw under each profile, computed by the database.
        raws = previous_raws(session, kind, reread, defs, previous_day)
        position = {profile.name: n for n, profile in enumerate(defs.profiles)}
        for sid in ids if reread is None else reread:
            if sid in data.first_seen and data.first_seen[sid] <= previous_day and sid not in kept:
                profile = profile_of(data.traits[sid])
                each = raws.pop(sid, None)
                kept[sid] = (
                    raw_engagement(profile, Activity(), previous_day)
                    if each is None
                    else each[position[profile.name]]
                )
        del raws
    earlier = _earlier_firsts(stored, subject == "a")
    member_stats = (
        _member_stats(session, subset, members or {}, defs, today, others)
        if subject == "a"
        else None
    )
    score = partial(
        _score_rows,
        *(defs, data, ids, subject, today, now, percentiles, kept, earlier),
        member_stats=member_stats,
        progress=progress,
    )
    rows, used = alongside(meanwhile=score) if alongside else score()
    _when_it_happened(session, "account" if subject == "a" else "user", rows, now)
    if subject == "a":
        _excuse_rule_drops(session, defs, rows, stored)
    known = (
        {sid: (row.engagement_score, row.activation_rate) for sid, row in stored.items()}
        if subset is not None or subject == "a"
        else None
    )
    return rows, used, known


def _excuse_rule_drops(
    session: Session, defs: Definitions, rows: list[dict], stored: dict[int, Any]
) -> None:
    """A definitions change alone never opens a CS task. Each account remembers whether it is
    Ice Cold only because the scoring rules changed: in the pass that applies new scoring rules
    (profiles or trend rule), an account that turns Ice Cold while its stored row (old rules)
    was not is excused; the excuse lasts while it stays Ice Cold. A drop seen under unchanged
    rules is a real one. ``stored``: the accounts' stored rows (``_stored``)."""
    changed = _rules_changed(session, defs, {old.definitions_version for old in stored.values()})
    for row in rows:
        old = stored.get(row["_id"])
        excused = False
        if row["trend_segment"] == "Ice Cold" and old is not None:
            excused = bool(old.drop_excused) if old.was_cold else old.definitions_version in changed
        row["drop_excused"] = excused


def _rules_changed(session: Session, defs: Definitions, versions: set[int]) -> set[int]:
    """Which of these definitions versions scored engagement or trend differently from ``defs``."""
    changed = set()
    for version, document in session.execute(
        select(DefinitionsVersion.version, DefinitionsVersion.document).where(
            DefinitionsVersion.version.in_(sorted(versions))
        )
    ):
        try:
            old = parse_document(document)
        except ValidationError:  # stored before a rule it breaks: treat it as different
            changed.add(version)
            continue
        if old.profiles != defs.profiles or old.trend != defs.trend:
            changed.add(version)
    return changed


def _signal_of(kind: str | None, rules) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The events and traits that make a PQL of this kind."""
    sources = {
        "hand_raiser": (rules.hand_raiser_events, rules.hand_raiser_traits),
        "limit_reached": (rules.limit_events, rules.limit_traits),
        "touchless_purchase": (rules.purchase_events, rules.purchase_traits),
    }
    if kind not in sources:
        return None
    events, conditions = sources[kind]
    return tuple(events), tuple(c.field.removeprefix("trait.") for c in conditions)


def _when_it_happened(session: Session, kind: str, rows: list[dict], now: dt.datetime) -> None:
    """A subject activated (or qualified on Activation) in this pass gets the time of the
    event that completed it, not the pass's time. Only newly activated subjects are read
    (once each: the time is kept from then on)."""
    activated: dict[int, list] = {}
    qualified: dict[int, tuple[list, int]] = {}
    by_id = {}
    for row in rows:
        steps, pql_steps = row.pop("_steps", None), row.pop("_pql_steps", None)
        signal = row.pop("_pql_signal", None)
        if signal:
            moment = signal_moment(session, kind, row["_id"], *signal)
            row["pql_at"] = min(moment, now) if moment else now
        if steps:
            activated[row["_id"]] = steps
            by_id[row["_id"]] = row
        if pql_steps:
            qualified[row["_id"]] = pql_steps
            by_id[row["_id"]] = row
    # Read in bulk: a first pass over a big tenant activates thousands of subjects at once.
    for sid, moments in many_step_moments(session, kind, activated).items():
        by_id[sid]["activated_at"] = completed_at(moments, len(moments), now)
    done = {sid: steps for sid, (steps, _) in qualified.items()}
    for sid, moments in many_step_moments(session, kind, done).items():
        by_id[sid]["pql_at"] = completed_at(moments, qualified[sid][1], now)


def _touched_since(
    session: Session, since: dt.datetime, today: dt.date
) -> tuple[set[int], set[int], set[int], set[int]]:
    """The users and accounts with events received or traits changed since ``since``, and of
    those the ones whose events happened before ``today`` (late: their basis no longer holds
    their whole past). The events are read once for both."""
    users, accounts, late_users, late_accounts = set(), set(), set(), set()
    for user_id, account_id, late in activity_basis.received_since(session, since, today):
        users.add(user_id)
        accounts.add(account_id)
        if late:
            late_users.add(user_id)
            late_accounts.add(account_id)
    users |= set(session.scalars(select(User.id).where(User.changed_at >= since)))
    accounts |= set(session.scalars(select(Account.id).where(Account.changed_at >= since)))
    for ids in (users, accounts, late_users, late_accounts):
        ids.discard(None)
    return users, accounts, late_users, late_accounts


@dataclass(frozen=True)
class _MemberStats:
    total: int
    activated: int
    average: float
    # Per time frame (days): members active within it.
    active: dict[int, int]


# A user as their accounts' statistics count them: activated, Activation rate, last active.
_Member = tuple[bool, float, dt.datetime | None]


def _members_of(rows: list[dict]) -> dict[int, _Member]:
    """The users just scored, as their accounts' statistics count them (see ``_member_stats``)."""
    return {r["_id"]: (r["activated"], r["activation_rate"], r["last_active_at"]) for r in rows}


def _frame_starts(defs: Definitions, today: dt.date) -> tuple[list[int], list[dt.datetime]]:
    """The profiles' time frames and when each began (a member last active since is active)."""
    frames = _frames(defs)
    starts = [
        dt.datetime.combine(today - dt.timedelta(days=f - 1), dt.time(), dt.UTC) for f in frames
    ]
    return frames, starts


def _stored_member_sums(
    session: Session,
    account_ids: list[int],
    users: ColumnElement,
    defs: Definitions,
    today: dt.date,
) -> dict[int, list]:
    """Per account of ``account_ids``: its members that ``users`` selects (a condition on
    ``AccountMembership.user_id``), summed by the database from their stored scores: members,
    scored, activated, Σ Activation rate, then active per time frame (``_frame_starts``)."""
    _, starts = _frame_starts(defs, today)
    query = (
        select(
            AccountMembership.account_id,
            func.count(),
            func.count(UserScore.user_id),
            func.sum(case((UserScore.activated.is_(True), 1), else_=0)),
            func.sum(UserScore.activation_rate),
            *(func.sum(case((UserScore.last_active_at >= start, 1), else_=0)) for start in starts),
        )
        .select_from(AccountMembership)
        .outerjoin(UserScore, UserScore.user_id == AccountMembership.user_id)
        .where(users)
        .group_by(AccountMembership.account_id)
    )
    sums = {}
    for chunk in chunks(account_ids):
        for aid, *values in session.execute(
            query.where(*only(AccountMembership.account_id, chunk))
        ):
            sums[aid] = [value or 0 for value in values]
    return sums


def _member_stats(
    session: Session,
    account_ids: list[int] | None,
    members: dict[int, _Member],
    defs: Definitions,
    today: dt.date,
    others: Future | None = None,
) -> dict[int, _MemberStats]:
    """Per account (``account_ids``; None: every account): how many members, activated, their
    average Activation, active per frame. The users scored in this pass (``members``) count
    with their fresh values, so their store need not come first (it is sent while the accounts
    are scored); the other members of these accounts (an incremental pass) with their stored
    scores, summed by the database; a member without a score counts in the total alone.

    ``others``: those sums already being read on a connection of their own (``_read_ahead``),
    for the members other than the users the pass set out to score; the few of those it did not
    score (merged, gone) are summed here."""
    frames, starts = _frame_starts(defs, today)
    # Per account: members, scored, activated, Σ Activation rate, active per frame.
    sums: dict[int, list] = {}

    def counts_of(aid: int) -> list:
        counts = sums.get(aid)
        if counts is None:
            counts = sums[aid] = [0, 0, 0, 0.0] + [0] * len(frames)
        return counts

    def add(aid: int, member: _Member | None) -> None:
        counts = counts_of(aid)
        counts[0] += 1
        if member is None:
            return
        activated, rate, last = member
        counts[1] += 1
        counts[2] += bool(activated)
        counts[3] += rate
        if last is not None:
            for position, start in enumerate(starts, 4):
                if last >= start:
                    counts[position] += 1

    def add_sums(more: dict[int, list]) -> None:
        for aid, values in more.items():
            counts = counts_of(aid)
            for position, value in enumerate(values):
                counts[position] += value

    pairs = select(AccountMembership.account_id, AccountMembership.user_id)
    if account_ids is None:
        for aid, uid in stream(session, pairs):
            add(aid, members.get(uid))
    else:
        wanted = set(account_ids)
        scored = sorted(members)
        for chunk in chunks(scored):
            for aid, uid in session.execute(pairs.where(*only(AccountMembership.user_id, chunk))):
                if aid in wanted:
                    add(aid, members[uid])
        if others is None:
            where = ~only(AccountMembership.user_id, scored)[0]
            add_sums(_stored_member_sums(session, account_ids, where, defs, today))
        else:
            left_out, summed = others.result()
            add_sums(summed)
            unscored = sorted(set(left_out) - set(members))
            if unscored:
                where = only(AccountMembership.user_id, unscored)[0]
                add_sums(_stored_member_sums(session, account_ids, where, defs, today))
    return {
        aid: _MemberStats(
            total=counts[0],
            activated=counts[2],
            average=round(counts[3] / counts[1], 2) if counts[1] else 0.0,
            active={f: counts[position] for position, f in enumerate(frames, 4)},
        )
        for aid, counts in sums.items()
    }


# Not compared when deciding whether a stored score changed: when it was computed, and the
# push's own flag.
_NOT_COMPARED = {"computed_at", "crm_pending"}


def _store(
    session: Session,
    tenant_id: int,
    model,
    key: str,
    rows: list[dict],
    version: int,
    subject: str,
    today: dt.date,
    full: bool,
    later: list[Callable[[], None]] | None = None,
    known: dict[int, tuple[float, float]] | None = None,
) -> dict[int, set[str]] | None:
    """Write the subjects' scores (the rows become the stored rows: do not use them after),
    only where something changed, and upsert today's history row for each; returns the
    subjects written, each with the columns that changed (all of them for a new row). Given
    ``later``, the writes that need no reply are added to it instead, to be sent alongside
    other work (see ``_sent``): today's history, and on PostgreSQL the scores' own compare and
    write after their COPY (then nothing is returned: None). A new
    subject's row is inserted (in bulk); a row whose values differ from the stored one is
    updated and flagged for the CRM push; an unchanged row is left alone, so it is neither
    rewritten nor looked at by the next push. A full pass also deletes the rows of subjects
    that are gone (merged, forgotten). On PostgreSQL the database compares
    (``store_changed``; ``known``, the subjects read to have a stored row in this
    transaction with its score and rate, lets it write the others straight into the table, and
    tells an incremental pass whose history moved when the writes are left for ``later``);
    elsewhere the stored rows are read and compared here."""
    key_column = getattr(model, key)
    history = [(r["_id"], round(r["engagement_score"]), round(r["activation_rate"])) for r in rows]
    compared = [c.name for c in model.__table__.columns if c.name not in _NOT_COMPARED]
    if session.get_bind().dialect.name == "postgresql":
        moved = None
        if later is not None and known is not None and not full:
            # Sent before the database says what changed: today's history moves for the
            # subjects whose score or rate differ from their stored row, or that have none.
            moved = {
                r["_id"]: _HISTORY_COLUMNS
                for r in rows
                if known.get(r["_id"]) != (r["engagement_score"], r["activation_rate"])
            }
        # The rows are COPYed as they are (the key under "_id", the version given once): a key
        # added to each would grow a hundred thousand dicts, 60 MB at the pass's peak.
        written = store_changed(
            session,
            model.__table__,
            tenant_id,
            key,
            rows,
            compared,
            full,
            same={"definitions_version": version},
            key_field="_id",
            existing=known,
            later=later,
        )
        _write_history(
            later,
            session,
            tenant_id,
            subject,
            today,
            history,
            written if moved is None else moved,
            full,
        )
        return written
    # The rows become the stored rows in place.
    payload: dict[int, dict] = {}
    for item in rows:
        sid = item.pop("_id")
        item.update({key: sid, "tenant_id": tenant_id, "definitions_version": version})
        payload[sid] = item
    columns = [model.__table__.c[c] for c in compared]
    stored: dict[int, tuple] = {}
    for chunk in chunks(None if full else sorted(payload)):
        query = select(*columns)
        if chunk is not None:
            query = query.where(*only(key_column, chunk))
        for values in session.execute(query):
            stored[values[compared.index(key)]] = tuple(values)
    if full:
        gone = sorted(set(stored) - set(payload))
        for chunk in chunks(gone):
            if chunk:
                session.execute(delete(model).where(*only(key_column, chunk)))
    fresh, changed = [], []
    written: dict[int, set[str]] = {}
    for sid, item in payload.items():
        old = stored.get(sid)
        new = tuple(item.get(c) for c in compared)
        if old is None:
            fresh.append(item)
            written[sid] = set(compared)
        elif old != new:
            changed.append({**item, "crm_pending": True})
            written[sid] = {c for c, a, b in zip(compared, old, new, strict=True) if a != b}
    insert_rows(session, model.__table__, fresh)
    # By primary key: (tenant_id, key).
    for start in range(0, len(changed), 5000):
        session.execute(update(model), changed[start : start + 5000])
    _write_history(later, session, tenant_id, subject, today, history, written, full)
    return written


def _write_history(later: list[Callable[[], None]] | None, *args) -> None:
    if later is None:
        _history(*args)
    else:
        later.append(partial(_history, *args))


def _sent(session: Session, statements: list[Callable[[], None]]) -> Callable[..., Any]:
    """An ``alongside`` (see ``_score_subjects``) of writes that return no rows: they are sent
    in a pipeline, and the database runs them while Python scores."""

    def alongside(meanwhile: Callable[[], Any]) -> Any:
        with overlapped(session):
            for statement in statements:
                statement()
            return meanwhile()

    return alongside


_HISTORY_COLUMNS = {"engagement_score", "activation_rate"}


def _history(
    session: Session,
    tenant_id: int,
    subject: str,
    today: dt.date,
    values: list[tuple[int, int, int]],
    written: dict[int, set[str]] | None,
    full: bool,
) -> None:
    """Today's history row of each subject scored. A full pass writes everyone's; an
    incremental pass (same day as the full pass before it, which wrote a row for every subject
    it scored) only those whose score or rate changed or that are new, where it knows them
    (``written``; None: sent before they were known): the others' row of the day already holds
    their values, and the upsert leaves an equal row alone."""
    if not full and written is not None:
        values = [v for v in values if _HISTORY_COLUMNS & written.get(v[0], set())]
    upsert_history(session, tenant_id, subject, today, values)


FIT_COLUMNS = {"fit_score", "fit_band", "fit_reason"}


def _members_follow_fit(session: Session, written: dict[int, set[str]]) -> None:
    """Contacts carry their account's fit: when it changed, the members' rows go to the push."""
    moved = sorted(sid for sid, columns in written.items() if columns & FIT_COLUMNS)
    for chunk in chunks(moved):
        if chunk:
            session.execute(
                update(UserScore)
                .where(
                    UserScore.user_id.in_(
                        select(User.id).where(*only(User.current_account_id, chunk))
                    )
                )
                .values(crm_pending=True),
                execution_options={"synchronize_session": False},
            )


# The daily pass moves the basis forward from the last full pass's day when it is at most this
# many days old (and built under the same definitions); an older one is rebuilt from scratch.
ROLL_DAYS = 7


def _basis_to_roll(last_full: ScoringRun | None, version: int, today: dt.date) -> dt.date | None:
    """The day of the basis a full pass can move to ``today`` instead of rebuilding it."""
    if last_full is None or last_full.basis_day is None:
        return None
    if last_full.definitions_version != version:
        return None
    if not 0 <= (today - last_full.basis_day).days <= ROLL_DAYS:
        return None
    return last_full.basis_day


def _load(
    session: Session,
    tenant_id: int,
    kind,
    ids: list[int] | None,
    defs: Definitions,
    today: dt.date,
    stale_by_kind: dict[str, set[int]],
    ahead: Future | None = None,
) -> Subjects:
    """The facts of ``ids`` (None: everyone, after the full pass built the basis). For some of
    them (an incremental pass) the basis is brought up to date first where their past changed
    (``stale_by_kind``: late events, merges), and as they are read, rebuilt for those found
    without one (new since it was built, or forgotten), who are then read again and added to
    the stale ones (their stored previous period no longer holds). ``ahead``: the facts of the
    others, already being read on a connection of their own (see ``_read_ahead``); the stale
    ones are read here, after their rebuild."""
    loader = load_users if kind is activity_basis.USERS else load_accounts
    if ids is None:
        return loader(session, None, defs, today)
    stale = stale_by_kind.setdefault(kind.subject, set())
    if stale:
        activity_basis.rebuild(session, tenant_id, kind, sorted(stale), defs, today)
    if ahead is None:
        data = loader(session, ids, defs, today)
    else:
        data = ahead.result()
        rest = [sid for sid in ids if sid in stale]
        if rest:
            data.absorb(loader(session, rest, defs, today))
    missing = sorted(sid for sid in data.first_seen if sid not in data.based)
    if missing:
        activity_basis.rebuild(session, tenant_id, kind, missing, defs, today)
        for sid in missing:
            data.release(sid)
        data.absorb(loader(session, missing, defs, today))
        stale.update(missing)
    return data


def _read_ahead(
    aside: ThreadPoolExecutor,
    db: Database,
    tenant_id: int,
    account_ids: list[int],
    stale: set[int],
    user_ids: list[int],
    defs: Definitions,
    today: dt.date,
) -> tuple[Future | None, Future | None]:
    """Start reading the facts of an incremental pass's accounts on a connection of their own,
    while this one reads, scores and stores the users: the database reads for the accounts
    (the other core) as Python works on the users, and the pass waits only for what is left.
    Not the stale ones (late events, merges): their basis is rebuilt in the pass's own
    transaction first, and read there. The other connection sees what was committed when it
    began, a moment after the pass did: an event that arrived in between is counted for its
    account now, and for its user at the next pass, which reads it again (it was received
    after this pass started). PostgreSQL only (SQLite: one writer, a file, nothing to gain).

    Then, on the same connection, the accounts' members other than ``user_ids`` (the users the
    pass is about to score) summed from their stored scores, for ``_member_stats``: a
    futures' pair (facts, members' sums), each None where there is nothing to read."""
    if db.dialect != "postgresql" or not account_ids:
        return None, None
    ahead = [aid for aid in account_ids if aid not in stale]

    def read() -> Subjects:
        with db.tenant_transaction(tenant_id) as session:
            return load_accounts(session, ahead, defs, today)

    def sum_others() -> tuple[list[int], dict[int, list]]:
        with db.tenant_transaction(tenant_id) as session:
            where = ~only(AccountMembership.user_id, user_ids)[0]
            return user_ids, _stored_member_sums(session, account_ids, where, defs, today)

    return (aside.submit(read) if ahead else None), aside.submit(sum_others)


@collector_paused()
def recompute(
    db: Database,
    tenant_id: int,
    now: dt.datetime,
    full: bool = True,
    progress: Progress | None = None,
) -> RunSummary:
    """Score a tenant (everyone, or only what changed since the last pass) and store it."""
    started = dt.datetime.now(dt.UTC)
    stored = current_definitions(db, tenant_id)
    defs = stored.definitions
    today = now.astimezone(dt.UTC).date()

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="accounts-ahead") as aside,
        db.tenant_transaction(tenant_id) as session,
    ):
        # The passes last run (by id: a pass for a past day, `pql score --as-of`, runs after
        # today's and leaves the activity basis at its own day).
        last_full = session.scalar(
            select(ScoringRun)
            .where(ScoringRun.full.is_(True), ScoringRun.finished_at.is_not(None))
            .order_by(ScoringRun.id.desc())
            .limit(1)
        )
        last_any = session.scalar(
            select(ScoringRun)
            .where(ScoringRun.finished_at.is_not(None))
            .order_by(ScoringRun.id.desc())
            .limit(1)
        )
        if not full and (
            last_full is None
            or last_full.definitions_version != stored.version
            or last_full.basis_day != today
        ):
            # Nothing to grade against, definitions changed, or a new day moved everyone's
            # time window: score everyone.
            full = True
        run = ScoringRun(
            tenant_id=tenant_id,
            full=full,
            started_at=now,
            definitions_version=stored.version,
        )
        session.add(run)
        session.flush()

        stale_by_kind: dict[str, set[int]] = {}
        accounts_ahead: Future | None = None
        others_ahead: Future | None = None
        rebuilt = False
        # A full pass brings the accounts' basis up to date while the users are scored: the
        # database works on it (one core) while Python scores (the other).
        accounts_basis: Callable[..., Any] | None = None
        if full:
            user_ids: list[int] | None = None
            account_ids: list[int] | None = None
            percentiles = None
            if progress:
                progress("activity basis", 0, 1)
            start = _basis_to_roll(last_full, stored.version, today)
            if start is None:
                rebuilt = True
                activity_basis.rebuild(session, tenant_id, activity_basis.USERS, None, defs, today)
                accounts_basis = partial(
                    activity_basis.rebuild,
                    *(session, tenant_id, activity_basis.ACCOUNTS, None, defs, today),
                )

            else:
                # Subjects whose past before the basis day changed since the last pass.
                late_users, late_accounts = activity_basis.late_subjects(
                    session, last_any.started_at - OVERLAP, start
                )
                activity_basis.roll_forward(
                    session, tenant_id, activity_basis.USERS, defs, start, today, late_users
                )

                accounts_basis = partial(
                    activity_basis.roll_forward,
                    *(session, tenant_id, activity_basis.ACCOUNTS, defs, start, today),
                    late_accounts,
                )

            run.basis_day = today
        else:
            since = last_any.started_at - OVERLAP
            touched_users, touched_accounts, late_users, late_accounts = _touched_since(
                session, since, today
            )
            for chunk in chunks(sorted(touched_users)):
                touched_accounts |= set(
                    session.scalars(
                        select(AccountMembership.account_id).where(
                            *only(AccountMembership.user_id, chunk)
                        )
                    )
                )
            account_ids = sorted(touched_accounts)
            user_ids = sorted(touched_users)
            percentiles = dict(last_full.percentiles)
            # Subjects whose past changed since the basis was built.
            stale_by_kind = {"u": late_users, "a": late_accounts}
            accounts_ahead, others_ahead = _read_ahead(
                aside, db, tenant_id, account_ids, late_accounts, user_ids, defs, today
            )

        users = _load(
            session, tenant_id, activity_basis.USERS, user_ids, defs, today, stale_by_kind
        )
        uids = (
            sorted(users.first_seen)
            if user_ids is None
            else [u for u in user_ids if u in users.first_seen]
        )
        user_rows, percentiles, known = _score_subjects(
            session,
            defs,
            users,
            uids,
            "u",
            today,
            now,
            percentiles,
            user_ids,
            progress,
            stale=stale_by_kind.get("u"),
            alongside=accounts_basis,
        )
        firing.fire(session, tenant_id, "user", user_rows, now)
        run.users = len(user_rows)
        # The accounts' members' statistics count the users as just scored: the users' rows
        # are COPYed now, and compared, written and kept in history while the accounts are
        # scored.
        members = _members_of(user_rows)
        later: list[Callable[[], None]] = []
        _store(
            session,
            *(tenant_id, UserScore, "user_id", user_rows, stored.version, "u", today, full),
            later=later,
            known=known,
        )
        del users, user_rows  # the pass's peak memory: users are most of the subjects

        accounts = _load(
            session,
            *(tenant_id, activity_basis.ACCOUNTS, account_ids, defs, today, stale_by_kind),
            ahead=accounts_ahead,
        )
        aids = (
            sorted(accounts.first_seen)
            if account_ids is None
            else [a for a in account_ids if a in accounts.first_seen]
        )
        account_rows, percentiles, known = _score_subjects(
            session,
            defs,
            accounts,
            aids,
            "a",
            today,
            now,
            percentiles,
            account_ids,
            progress,
            stale=stale_by_kind.get("a"),
            alongside=_sent(session, later),
            members=members,
            others=others_ahead,
        )
        if progress:
            progress("storing", 0, 1)
        firing.fire(session, tenant_id, "account", account_rows, now)
        written = _store(
            session,
            tenant_id,
            AccountScore,
            "account_id",
            account_rows,
            stored.version,
            "a",
            today,
            full,
            known=known,
        )
        _members_follow_fit(session, written)
        run.accounts = len(account_rows)
        run.percentiles = {k: round(v, 4) for k, v in percentiles.items()}
        run.finished_at = now
        summary = RunSummary(
            full=full,
            accounts=len(account_rows),
            users=run.users,
            definitions_version=stored.version,
            percentiles=run.percentiles,
        )
    if rebuilt and db.dialect == "postgresql":
        # A pass from scratch (the first one, new definitions, a basis too old to move) may
        # have written every score row: fresh statistics keep the id lookups of the
        # incremental passes that follow on index scans (autovacuum would get there later).
        # The daily pass that moves the basis a day rewrites the rows' values, not their
        # number: the statistics hold, and analysing three tables would take a tenth of it.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE account_scores, user_scores, score_history"))
    summary.seconds = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 2)
    log.info(
        "tenant %s: %s scoring pass: %s accounts, %s users in %ss",
        tenant_id,
        "full" if full else "incremental",
        summary.accounts,
        summary.users,
        summary.seconds,
    )
    return summary


@collector_paused()
def preview_definitions(
    db: Database,
    tenant_id: int,
    defs: Definitions,
    now: dt.datetime,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """What saving ``defs`` would change, before it is saved: every subject scored as a full
    pass would score it, inside a transaction that is rolled back (nothing is stored, the
    activity basis included), compared with the stored account scores. Returns how many
    accounts would change engagement segment, enter or leave each segment, and become or stop
    being PQLs, with a few names of each."""
    today = now.astimezone(dt.UTC).date()
    with db.tenant_session(tenant_id) as session:
        try:
            before = {
                account_id: (segment, set((names or {}).get("names", [])), pql)
                for account_id, segment, names, pql in session.execute(
                    select(
                        AccountScore.account_id,
                        AccountScore.engagement_segment,
                        AccountScore.segments,
                        AccountScore.pql,
                    )
                )
            }
            names = dict(session.execute(select(Account.id, Account.name)).all())
            if progress:
                progress("activity basis", 0, 1)
            for kind in (activity_basis.USERS, activity_basis.ACCOUNTS):
                activity_basis.rebuild(session, tenant_id, kind, None, defs, today)
            users = load_users(session, None, defs, today)
            user_rows, percentiles, _ = _score_subjects(
                session,
                defs,
                users,
                sorted(users.first_seen),
                "u",
                today,
                now,
                None,
                None,
                progress,
            )
            accounts = load_accounts(session, None, defs, today)
            account_rows, _, _ = _score_subjects(
                session,
                defs,
                accounts,
                sorted(accounts.first_seen),
                "a",
                today,
                now,
                percentiles,
                None,
                progress,
                # Account scores count their members' fresh scores, as in a pass.
                members=_members_of(user_rows),
            )
        finally:
            session.rollback()
    moved, entered, left = [], Counter(), Counter()
    became, stopped = [], []
    for row in account_rows:
        old = before.get(row["_id"])
        name = names.get(row["_id"]) or str(row["_id"])
        new_names = set((row.get("segments") or {}).get("names", []))
        if old is None:
            old = (None, set(), False)
        if old[0] != row["engagement_segment"]:
            moved.append(name)
        for segment in new_names - old[1]:
            entered[segment] += 1
        for segment in old[1] - new_names:
            left[segment] += 1
        if row["pql"] and not old[2]:
            became.append(name)
        elif old[2] and not row["pql"]:
            stopped.append(name)
    return {
        "accounts": len(account_rows),
        "engagement_segment_changes": len(moved),
        "examples_moved": sorted(moved)[:5],
        "entered": dict(entered),
        "left": dict(left),
        "become_pql": len(became),
        "stop_being_pql": len(stopped),
        "examples_become_pql": sorted(became)[:5],
        "examples_stop_being_pql": sorted(stopped)[:5],
    }
