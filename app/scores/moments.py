"""When a subject's Activation steps were completed: the time of the event that completed
each one (the N-th occurrence, within the step's first days where it has a window; for
accounts, the first time the N-th distinct user did it; a trait step, when the trait got its
value). ``activated_at`` is when the last step was completed and a criteria PQL's ``pql_at``
when enough steps were, so both say when it happened, late and backfilled events included,
not when a pass noticed."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.db import TENANT_KEY
from app.models import Account, Event, User
from app.scores.activity_basis import chunks, only
from scoring.definitions import Step

ACTIVITY = "track"  # the messages the checklist counts (the daily rollups' type)


def _nth_event(
    session: Session, column, sid: int, step: Step, since: dt.datetime | None
) -> dt.datetime | None:
    query = select(Event.timestamp).where(
        column == sid, Event.type == ACTIVITY, Event.name == step.event
    )
    if step.within_days and since is not None:
        query = query.where(Event.timestamp < since + dt.timedelta(days=step.within_days))
    return session.scalar(
        query.order_by(Event.timestamp).offset(max(step.min_count, 1) - 1).limit(1)
    )


def _nth_user(
    session: Session, sid: int, step: Step, since: dt.datetime | None
) -> dt.datetime | None:
    first = func.min(Event.timestamp)
    query = select(first).where(
        Event.account_id == sid, Event.type == ACTIVITY, Event.name == step.event
    )
    if step.within_days and since is not None:
        query = query.where(Event.timestamp < since + dt.timedelta(days=step.within_days))
    query = query.group_by(Event.user_id).order_by(first)
    return session.scalar(query.offset(max(step.min_count, 1) - 1).limit(1))


def _nth_query(kind: str, column, event: str, n: int, chunk: list[int] | None):
    """(subject, time) of the N-th occurrence of ``event`` (``event_count``) or of the N-th
    distinct user's first ``event`` (``distinct_users``, accounts) for a chunk of subjects:
    one window query instead of one query per subject."""
    if kind == "distinct_users":
        firsts = (
            select(
                Event.account_id.label("sid"),
                Event.user_id,
                func.min(Event.timestamp).label("moment"),
            )
            .where(Event.type == ACTIVITY, Event.name == event, *only(Event.account_id, chunk))
            .group_by(Event.account_id, Event.user_id)
            .subquery()
        )
        rank = func.row_number().over(partition_by=firsts.c.sid, order_by=firsts.c.moment)
        ranked = select(firsts.c.sid, firsts.c.moment, rank.label("rn")).subquery()
    else:
        rank = func.row_number().over(partition_by=column, order_by=Event.timestamp)
        ranked = (
            select(column.label("sid"), Event.timestamp.label("moment"), rank.label("rn"))
            .where(Event.type == ACTIVITY, Event.name == event, *only(column, chunk))
            .subquery()
        )
    return select(ranked.c.sid, ranked.c.moment).where(ranked.c.rn == n)


def _nth_by_days(kind: str, subject: str, n: int):
    """PostgreSQL: the N-th occurrence of an event for a chunk of subjects, found through the
    daily rollups: a running sum over the subject's days gives the day the N-th happened and
    how many of that day's it is, and only that day's events are read (through the events'
    (subject, timestamp) index). ``_nth_query`` sorts every event of that name instead, which
    on a first pass over ten million events is most of the pass. Same answer: the rollups
    count exactly the track events, per UTC day of their timestamp. ``distinct_users``: the
    N-th distinct user's first time, the same way (``_nth_user_by_days``)."""
    if kind == "distinct_users":
        return _nth_user_by_days(n)
    rollup, key, column = (
        ("account_event_days", "account_id", "account_id")
        if subject == "account"
        else ("user_event_days", "user_id", "user_id")
    )
    return text(
        f"""
        WITH daily AS (
            SELECT {key} AS sid, day, sum(count) AS c FROM {rollup}
            WHERE tenant_id = :tenant_id AND {key} = ANY(:ids) AND event = :event
            GROUP BY {key}, day
        ),
        running AS (
            SELECT sid, day, c, sum(c) OVER (PARTITION BY sid ORDER BY day) AS upto FROM daily
        ),
        hit AS (
            SELECT sid, day, {n} - (upto - c) AS need FROM running
            WHERE upto >= {n} AND upto - c < {n}
        )
        SELECT hit.sid, e.timestamp FROM hit CROSS JOIN LATERAL (
            SELECT timestamp FROM events
            WHERE tenant_id = :tenant_id AND {column} = hit.sid
              AND type = '{ACTIVITY}' AND name = :event
              AND timestamp >= hit.day::timestamp AND timestamp < (hit.day + 1)::timestamp
            ORDER BY timestamp OFFSET hit.need - 1 LIMIT 1
        ) AS e
        """
    )


def _nth_user_by_days(n: int):
    """PostgreSQL, accounts: when the N-th distinct user first did an event. Each user's first
    day comes from the account's daily rollups (which keep the user); a running count over those
    days gives the day the N-th user arrived and how many of that day's newcomers it takes, and
    only that day's events of those newcomers are read (through the (account, timestamp)
    index) for their first times."""
    return text(
        f"""
        WITH firsts AS (
            SELECT account_id AS sid, user_id, min(day) AS day FROM account_event_days
            WHERE tenant_id = :tenant_id AND account_id = ANY(:ids) AND event = :event
            GROUP BY account_id, user_id
        ),
        newcomers AS (
            SELECT sid, day, count(*) AS c, array_agg(user_id) AS users FROM firsts
            GROUP BY sid, day
        ),
        running AS (
            SELECT sid, day, c, users, sum(c) OVER (PARTITION BY sid ORDER BY day) AS upto
            FROM newcomers
        ),
        hit AS (
            SELECT sid, day, users, {n} - (upto - c) AS need FROM running
            WHERE upto >= {n} AND upto - c < {n}
        )
        SELECT hit.sid, u.moment FROM hit CROSS JOIN LATERAL (
            SELECT min(e.timestamp) AS moment FROM events AS e
            WHERE e.tenant_id = :tenant_id AND e.account_id = hit.sid
              AND e.type = '{ACTIVITY}' AND e.name = :event
              AND e.timestamp >= hit.day::timestamp AND e.timestamp < (hit.day + 1)::timestamp
              AND e.user_id = ANY(hit.users)
            GROUP BY e.user_id ORDER BY moment OFFSET hit.need - 1 LIMIT 1
        ) AS u
        """
    )


def many_step_moments(
    session: Session, subject: str, wanted: dict[int, list[Step]]
) -> dict[int, list[dt.datetime | None]]:
    """The completion time of each (done) step of each subject (None where it cannot be told),
    for a pass's newly activated subjects at once: steps without a first-days window are read
    with one window query per distinct step and chunk of subjects; windowed steps, which
    depend on each subject's first day, one subject at a time."""
    model = Account if subject == "account" else User
    column = Event.account_id if subject == "account" else Event.user_id
    ids = sorted(wanted)
    seen: dict[int, tuple] = {}
    for chunk in chunks(ids):
        for sid, since, trait_times in session.execute(
            select(model.id, model.first_seen_at, model.trait_times).where(*only(model.id, chunk))
        ):
            seen[sid] = (since, trait_times)

    def kind_of(step: Step) -> str | None:
        if step.kind == "trait" or not step.event or step.within_days:
            return None
        return (
            "distinct_users"
            if step.kind == "distinct_users" and subject == "account"
            else ("event_count")
        )

    batches: dict[tuple[str, str, int], set[int]] = {}
    for sid, steps in wanted.items():
        for step in steps:
            kind = kind_of(step)
            if kind:
                batches.setdefault((kind, step.event, max(step.min_count, 1)), set()).add(sid)
    found: dict[tuple[str, str, int, int], dt.datetime] = {}
    tenant_id = session.info.get(TENANT_KEY)
    by_days = session.get_bind().dialect.name == "postgresql" and tenant_id is not None
    for (kind, event, n), sids in batches.items():
        for chunk in chunks(sorted(sids)):
            if by_days:
                query = _nth_by_days(kind, subject, n)
                params = {"ids": chunk, "event": event, "tenant_id": tenant_id}
            else:
                query, params = _nth_query(kind, column, event, n, chunk), {}
            for sid, moment in session.execute(query, params):
                found[(kind, event, n, sid)] = _aware(moment)
    out: dict[int, list[dt.datetime | None]] = {}
    for sid, steps in wanted.items():
        since, trait_times = seen.get(sid, (None, None))
        moments: list[dt.datetime | None] = []
        for step in steps:
            kind = kind_of(step)
            if step.kind == "trait":
                moments.append(_parse((trait_times or {}).get(step.trait or "")))
            elif kind:
                moments.append(found.get((kind, step.event, max(step.min_count, 1), sid)))
            elif step.kind == "distinct_users" and subject == "account":
                moments.append(_nth_user(session, sid, step, since))
            else:
                moments.append(_nth_event(session, column, sid, step, since))
        out[sid] = moments
    return out


def _parse(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def completed_at(moments: list[dt.datetime | None], needed: int, now: dt.datetime) -> dt.datetime:
    """When ``needed`` of the steps were complete: the ``needed``-th earliest moment. A step
    whose moment cannot be told counts as completed at ``now`` (the pass's time, as before)."""
    known = sorted(_aware(m) or now for m in moments)
    if not known or needed <= 0:
        return now
    return min(known[min(needed, len(known)) - 1], now)


def steps_needed(threshold: float, total: int) -> int:
    """How many of ``total`` steps make a rate of at least ``threshold`` percent."""
    return max(1, math.ceil(threshold * total / 100 - 1e-9))


def signal_moment(
    session: Session, subject: str, sid: int, events: tuple[str, ...], traits: tuple[str, ...]
) -> dt.datetime | None:
    """When a PQL signal happened: the first of its events (a hand-raise, a limit, a
    purchase), else when the signalling trait got its value."""
    column = Event.account_id if subject == "account" else Event.user_id
    if events:
        first = session.scalar(
            select(func.min(Event.timestamp)).where(
                column == sid, Event.type == ACTIVITY, Event.name.in_(list(events))
            )
        )
        if first is not None:
            return _aware(first)
    if traits:
        model = Account if subject == "account" else User
        trait_times = session.scalar(select(model.trait_times).where(model.id == sid)) or {}
        moments = [m for m in (_parse(trait_times.get(t)) for t in traits) if m]
        if moments:
            return max(moments)
    return None
