"""The activity basis: each subject's rollups before a day, aggregated per event, kept in a table.

A scoring pass needs per subject and event: the count ever, first and last day, the count within
each time frame, the days active in the frequency window and, for team steps, who did it. Read
from the daily rollups that is the subject's whole history (hundreds of rows for an active
account). The basis holds those figures for every day before ``day`` (built server-side with one
INSERT … SELECT per rollup table), and a pass on ``day`` adds that day's rollups to it: a dozen
rows per subject instead of its history, which is what makes an incremental pass fast.

The daily full pass rebuilds the basis for everyone with ``day`` = its own day; an incremental
pass on the same day rebuilds it for the few subjects whose past changed since (events that
arrived late, with an earlier timestamp; user merges) and for subjects that have none yet.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    Date,
    Integer,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import UserDefinedType

from app.bulk import array_text, dialect_insert
from app.db import overlapped, stream
from app.models import Account, AccountEventDay, ActivityBasis, Event, User, UserEventDay
from scoring.definitions import TIME_FRAMES, Definitions

MARKER = ""  # the event of a subject's own row (present + active days)
REBUILD_WORK_MEM = "256MB"
FRAME_COLUMNS = [f"in_{frame}" for frame in TIME_FRAMES]
CHUNK = 5000
T = TypeVar("T")


class _Kind:
    def __init__(self, subject: str, rollup, key, table, subject_filter):
        self.subject, self.rollup, self.key = subject, rollup, key
        self.table, self.subject_filter = table, subject_filter


USERS = _Kind("u", UserEventDay, UserEventDay.user_id, User, (User.merged_into_id.is_(None),))
ACCOUNTS = _Kind("a", AccountEventDay, AccountEventDay.account_id, Account, ())


def frames(defs: Definitions) -> list[int]:
    return sorted({p.time_frame_days for p in defs.profiles})


def team_events(defs: Definitions) -> set[str]:
    """Events of team steps ("N people did X")."""
    steps = defs.account_checklist_trial.steps + defs.account_checklist_paid.steps
    return {s.event for s in steps if s.kind == "distinct_users" and s.event}


def chunks(ids: list[int] | None) -> Iterable[list[int] | None]:
    """None (no filter: everyone) or the ids in chunks small enough for an IN list."""
    if ids is None:
        yield None
        return
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


class _IdArray(UserDefinedType):
    """A list of ids as one parameter. On PostgreSQL an array (``INTEGER[]`` or ``BIGINT[]``)
    sent in its text form (``array_text``): the parameter takes the array type from its bind
    cast and PostgreSQL reads it as such when the statement is bound, a constant the planner
    can hash (a cast written around a text parameter is not: ``= ANY`` then compares each row
    with every id). Elsewhere (SQLite) a JSON array, read back with ``json_each``."""

    cache_ok = True
    render_bind_cast = True

    def __init__(self, item: str) -> None:
        self.item = item

    def get_col_spec(self, **kw) -> str:
        return f"{self.item}[]"

    def bind_processor(self, dialect):
        if dialect.name == "postgresql":
            return lambda ids: None if ids is None else array_text(ids)
        return lambda ids: None if ids is None else "[" + ",".join(map(str, ids)) + "]"


class _IdIn(ColumnElement):
    """``column IN ids`` with the ids as one parameter: on PostgreSQL ``column = ANY(:ids)``,
    on SQLite ``column IN (SELECT value FROM json_each(:ids))``, instead of thousands of bound
    values (whose rendering and parsing cost more than the query in an incremental pass). The
    array has the column's own type: against a wider one (``integer = ANY(bigint[])``)
    PostgreSQL cannot hash the ids and compares each row with every id in turn (370 ms instead
    of 20 ms for today's rollups of 5,000 accounts).

    The ids are a bound parameter of the statement, not part of its text: a statement that
    differs only in its ids is compiled once and taken from SQLAlchemy's cache after that
    (compiling each of an incremental pass's statements anew was a tenth of its Python)."""

    inherit_cache = True
    type = Boolean()
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("ids", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column, ids: list[int]):
        own = column.type
        item = (
            "INTEGER" if isinstance(own, Integer) and not isinstance(own, BigInteger) else "BIGINT"
        )
        self.column = column
        self.ids = bindparam(None, list(ids), type_=_IdArray(item), unique=True)


@compiles(_IdIn)
def _id_in_default(element: _IdIn, compiler, **kw) -> str:
    column = compiler.process(element.column, **kw)
    return f"{column} IN (SELECT value FROM json_each({compiler.process(element.ids, **kw)}))"


@compiles(_IdIn, "postgresql")
def _id_in_postgresql(element: _IdIn, compiler, **kw) -> str:
    return compiler.process(element.column == any_(element.ids), **kw)


def only(column, chunk: list[int] | None) -> tuple:
    return () if chunk is None else (_IdIn(column, chunk),)


def _postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _json_array(session: Session, column):
    builder = func.json_agg if _postgresql(session) else func.json_group_array
    return builder(column)


def rebuild(
    session: Session,
    tenant_id: int,
    kind: _Kind,
    ids: list[int] | None,
    defs: Definitions,
    day: dt.date,
    meanwhile: Callable[[], T] | None = None,
) -> T | None:
    """Replace the basis of ``ids`` (None: every subject of the kind) with their rollups before
    ``day``. Runs in the database; nothing crosses into Python. ``meanwhile`` (Python work that
    does not read the basis of this kind) runs while it does, and its result is returned."""
    with overlapped(session) if meanwhile else nullcontext():
        _rebuild(session, tenant_id, kind, ids, defs, day)
        return meanwhile() if meanwhile else None


def _rebuild(
    session: Session,
    tenant_id: int,
    kind: _Kind,
    ids: list[int] | None,
    defs: Definitions,
    day: dt.date,
) -> None:
    """``rebuild``'s statements: none returns rows (they may be sent in a pipeline)."""
    rollup, key, table = kind.rollup, kind.key, kind.table
    window_start = day - dt.timedelta(days=defs.frequency_days - 1)
    # Only the time frames the profiles use are kept (``frames``); the others' columns hold 0.
    used = frames(defs)
    frame_counts = [
        func.sum(case((rollup.day >= day - dt.timedelta(days=frame - 1), rollup.count), else_=0))
        if frame in used
        else literal(0)
        for frame in TIME_FRAMES
    ]
    team = sorted(team_events(defs)) if kind is ACCOUNTS else []
    columns = ["tenant_id", "subject", "subject_id", "event", "total", "first_day", "last_day"]
    if _postgresql(session) and ids is None:
        # A whole tenant's rollups are grouped here: enough memory to hash instead of sorting
        # on disk (the default 4 MB spills millions of rows). For this transaction only.
        session.execute(text(f"SET LOCAL work_mem = '{REBUILD_WORK_MEM}'"))
    for chunk in chunks(ids):
        session.execute(
            delete(ActivityBasis).where(
                ActivityBasis.tenant_id == tenant_id,
                ActivityBasis.subject == kind.subject,
                *only(ActivityBasis.subject_id, chunk),
            )
        )
        grouped = (
            select(
                key.label("sid"),
                rollup.event.label("event"),
                func.sum(rollup.count).label("total"),
                func.min(rollup.day).label("first_day"),
                func.max(rollup.day).label("last_day"),
                *[c.label(name) for c, name in zip(frame_counts, FRAME_COLUMNS, strict=True)],
            )
            .where(rollup.tenant_id == tenant_id, rollup.day < day, *only(key, chunk))
            .group_by(key, rollup.event)
            .subquery()
        )
        source = grouped
        users = cast(literal(None), JSON)
        if team:
            # Who did each team event: distinct (account, event, user) first (hashable), then
            # one JSON array per account and event, joined on.
            pairs = (
                select(key.label("sid"), rollup.event.label("event"), rollup.user_id.label("uid"))
                .where(
                    rollup.tenant_id == tenant_id,
                    rollup.day < day,
                    rollup.event.in_(team),
                    *only(key, chunk),
                )
                .distinct()
                .subquery()
            )
            team_users = (
                select(pairs.c.sid, pairs.c.event, _json_array(session, pairs.c.uid).label("ids"))
                .group_by(pairs.c.sid, pairs.c.event)
                .subquery()
            )
            source = grouped.outerjoin(
                team_users,
                and_(team_users.c.sid == grouped.c.sid, team_users.c.event == grouped.c.event),
            )
            users = team_users.c.ids
        per_event = select(
            literal(tenant_id).label("tenant_id"),
            literal(kind.subject).label("subject"),
            grouped.c.sid.label("subject_id"),
            grouped.c.event,
            grouped.c.total,
            grouped.c.first_day,
            grouped.c.last_day,
            *[grouped.c[name] for name in FRAME_COLUMNS],
            users.label("users"),
            cast(literal(None), Integer).label("active_days"),
        ).select_from(source)
        # Distinct (subject, day) pairs, then a count: hashable, where count(DISTINCT) sorts.
        days = (
            select(key.label("sid"), rollup.day)
            .where(
                rollup.tenant_id == tenant_id,
                rollup.day >= window_start,
                rollup.day < day,
                *only(key, chunk),
            )
            .distinct()
            .subquery()
        )
        active = select(days.c.sid, func.count().label("days")).group_by(days.c.sid).subquery()
        markers = (
            select(
                literal(tenant_id),
                literal(kind.subject),
                table.id,
                literal(MARKER),
                literal(0),
                cast(literal(None), Date),
                cast(literal(None), Date),
                *[literal(0) for _ in FRAME_COLUMNS],
                cast(literal(None), JSON),
                func.coalesce(active.c.days, 0),
            )
            .select_from(table)
            .outerjoin(active, active.c.sid == table.id)
            .where(table.tenant_id == tenant_id, *kind.subject_filter, *only(table.id, chunk))
        )
        # Written in key order, each subject's rows (its marker first) side by side: a pass
        # that reads a thousand subjects' basis then reads a few pages each, not a page per
        # row (hashed grouping hands the rows over in no order). The daily move updates rows
        # in place (room is left on each page), so the order mostly lasts: the rows it adds,
        # and those of subjects rebuilt later, land where there is room.
        rows = union_all(per_event, markers).subquery()
        session.execute(
            insert(ActivityBasis).from_select(
                [*columns, *FRAME_COLUMNS, "users", "active_days"],
                select(rows).order_by(rows.c.subject_id, rows.c.event),
            )
        )
    if _postgresql(session) and ids is None:
        # Fresh statistics: the passes that follow look subjects up by id in this table.
        session.execute(text("ANALYZE activity_bases"))


def _moved(frame: int, start: dt.date, day: dt.date) -> tuple[tuple, tuple]:
    """A frame's window ends before its day and holds ``frame - 1`` days (the day itself is read
    live). Moving it from ``start`` to ``day``: the days that leave it and the days that join."""
    old_start = start - dt.timedelta(days=frame - 1)
    new_start = day - dt.timedelta(days=frame - 1)
    return (old_start, min(start, new_start)), (max(start, new_start), day)


def roll_forward(
    session: Session,
    tenant_id: int,
    kind: _Kind,
    defs: Definitions,
    start: dt.date,
    day: dt.date,
    stale: set[int],
    meanwhile: Callable[[], T] | None = None,
) -> T | None:
    """Move the basis of every subject of the kind from ``start`` (the day it was built for) to
    ``day``, reading only the rollups of the days that join or leave its figures: the days from
    ``start`` to ``day`` and the day or two each time frame drops, instead of everyone's whole
    history. The figures are sums and bounds, so they move by what changed: totals and frame
    counts add what joined and take away what left, last days move on, active days count the
    days of the frequency window that joined and left.

    Only valid when nothing before ``start`` changed since the basis was built: ``stale`` names
    the subjects whose past did (late events: see ``late_subjects``); they, and subjects with no
    basis yet, are rebuilt. The definitions must be those the basis was built with (team events
    and the frequency window).

    ``meanwhile`` (Python work that does not read the basis of this kind) runs while the
    database moves the figures, and its result is returned."""
    stale = stale | _without_basis(session, tenant_id, kind)
    with overlapped(session) if meanwhile else nullcontext():
        if start < day:
            _move(session, tenant_id, kind, defs, start, day)
        result = meanwhile() if meanwhile else None
    if start < day:
        _roll_team_users(session, tenant_id, kind, defs, (start, day))
    rebuild(session, tenant_id, kind, sorted(stale), defs, day)
    return result


def _move(
    session: Session, tenant_id: int, kind: _Kind, defs: Definitions, start: dt.date, day: dt.date
) -> None:
    """The figures of ``roll_forward``: statements that return nothing (they may be sent in a
    pipeline and left to run)."""
    rollup, key = kind.rollup, kind.key
    basis = ActivityBasis.__table__
    joined = (start, day)
    # Only the frames the profiles use are kept: a day leaving another frame changes nothing.
    frames_moved = {frame: _moved(frame, start, day) for frame in frames(defs)}
    window_left, window_joined = _moved(defs.frequency_days, start, day)

    def within(span: tuple) -> ColumnElement:
        return and_(rollup.day >= span[0], rollup.day < span[1])

    def count_in(span: tuple) -> ColumnElement:
        if span[0] >= span[1]:
            return literal(0)
        return func.sum(case((within(span), rollup.count), else_=0))

    # The days that change a figure, each read once (the frames share days), into a hash big
    # enough not to spill a tenant's day of rollups to disk. (The frequency window's days are
    # counted apart, by ``_roll_active_days``.)
    spans = [joined, *[span for moved in frames_moved.values() for span in moved]]
    read = or_(*[within(span) for span in dict.fromkeys(spans) if span[0] < span[1]])
    if _postgresql(session):
        session.execute(text(f"SET LOCAL work_mem = '{REBUILD_WORK_MEM}'"))
    delta = (
        select(
            literal(tenant_id),
            literal(kind.subject),
            key,
            rollup.event,
            count_in(joined),
            func.min(case((within(joined), rollup.day))),
            func.max(case((within(joined), rollup.day))),
            *[
                count_in(frames_moved[frame][1]) - count_in(frames_moved[frame][0])
                if frame in frames_moved
                else literal(0)
                for frame in TIME_FRAMES
            ],
        )
        .where(rollup.tenant_id == tenant_id, read)
        .group_by(key, rollup.event)
    )
    columns = ["tenant_id", "subject", "subject_id", "event", "total", "first_day"]
    columns += ["last_day", *FRAME_COLUMNS]
    upsert = dialect_insert(session)(basis).from_select(columns, delta)
    new = upsert.excluded
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=["tenant_id", "subject", "subject_id", "event"],
            set_={
                "total": basis.c.total + new.total,
                "first_day": func.coalesce(basis.c.first_day, new.first_day),
                "last_day": func.coalesce(new.last_day, basis.c.last_day),
                **{c: basis.c[c] + new[c] for c in FRAME_COLUMNS},
            },
        )
    )
    _roll_active_days(session, tenant_id, kind, within, window_left, window_joined)


def _roll_active_days(session, tenant_id, kind, within, left: tuple, joined: tuple) -> None:
    """Each subject's active days in the frequency window: plus the days that joined it, less
    those that left (distinct days per subject: a few days' rollups)."""
    rollup, key = kind.rollup, kind.key
    spans = [span for span in dict.fromkeys((left, joined)) if span[0] < span[1]]
    if not spans:
        return
    days = (
        select(key.label("sid"), rollup.day.label("day"))
        .where(rollup.tenant_id == tenant_id, or_(*[within(span) for span in spans]))
        .distinct()
        .subquery()
    )

    def days_in(span: tuple) -> ColumnElement:
        if span[0] >= span[1]:
            return literal(0)
        inside = and_(days.c.day >= span[0], days.c.day < span[1])
        return func.sum(case((inside, 1), else_=0))

    change = (
        select(days.c.sid, (days_in(joined) - days_in(left)).label("change"))
        .group_by(days.c.sid)
        .subquery()
    )
    basis = ActivityBasis.__table__
    session.execute(
        update(basis)
        .where(
            basis.c.tenant_id == tenant_id,
            basis.c.subject == kind.subject,
            basis.c.event == MARKER,
            basis.c.subject_id == change.c.sid,
        )
        .values(active_days=func.coalesce(basis.c.active_days, 0) + change.c.change)
    )


def _roll_team_users(session, tenant_id, kind, defs, joined: tuple) -> None:
    """Who did each team event: the basis's people plus those of the days that joined."""
    team = sorted(team_events(defs))
    if kind is not ACCOUNTS or not team:
        return
    rollup = kind.rollup
    joined_users: dict[tuple[int, str], set[int]] = defaultdict(set)
    for aid, event, uid in session.execute(
        select(rollup.account_id, rollup.event, rollup.user_id)
        .where(
            rollup.tenant_id == tenant_id,
            rollup.day >= joined[0],
            rollup.day < joined[1],
            rollup.event.in_(team),
        )
        .distinct()
    ):
        joined_users[(aid, event)].add(uid)
    accounts = sorted({aid for aid, _ in joined_users})
    changed = []
    for chunk in chunks(accounts):
        for aid, event, users in session.execute(
            select(ActivityBasis.subject_id, ActivityBasis.event, ActivityBasis.users).where(
                ActivityBasis.tenant_id == tenant_id,
                ActivityBasis.subject == kind.subject,
                ActivityBasis.event.in_(team),
                *only(ActivityBasis.subject_id, chunk),
            )
        ):
            new = joined_users.get((aid, event))
            if new and not new <= set(users or ()):
                merged = sorted(set(users or ()) | new)
                changed.append({"s": aid, "e": event, "u": merged})
    basis = ActivityBasis.__table__
    statement = (
        update(basis)
        .where(
            basis.c.tenant_id == tenant_id,
            basis.c.subject == kind.subject,
            basis.c.subject_id == bindparam("s"),
            basis.c.event == bindparam("e"),
        )
        .values(users=bindparam("u", type_=basis.c.users.type))
    )
    for start in range(0, len(changed), CHUNK):
        session.execute(statement, changed[start : start + CHUNK])


def _without_basis(session: Session, tenant_id: int, kind: _Kind) -> set[int]:
    """The subjects of the kind that have no basis (new since it was built, or forgotten)."""
    table = kind.table
    marker = (
        select(ActivityBasis.subject_id)
        .where(
            ActivityBasis.tenant_id == tenant_id,
            ActivityBasis.subject == kind.subject,
            ActivityBasis.event == MARKER,
            ActivityBasis.subject_id == table.id,
        )
        .exists()
    )
    return set(
        session.scalars(
            select(table.id).where(table.tenant_id == tenant_id, *kind.subject_filter, ~marker)
        )
    )


def forget(session: Session, tenant_id: int, users: Iterable[int], accounts: Iterable[int]):
    """Drop these subjects' basis (their past changed): the next pass rebuilds it."""
    for subject, ids in (("u", sorted(set(users))), ("a", sorted(set(accounts)))):
        for chunk in chunks(ids):
            if chunk:
                session.execute(
                    delete(ActivityBasis).where(
                        ActivityBasis.tenant_id == tenant_id,
                        ActivityBasis.subject == subject,
                        *only(ActivityBasis.subject_id, chunk),
                    )
                )


def load(
    session: Session, data, kind: _Kind, chunk: list[int] | None, defs: Definitions, day: dt.date
) -> None:
    """Fill ``data`` (scoring_jobs._Subjects) for one chunk: the basis rows, plus the rollups
    from ``day`` on (``day`` is today: the frames and the window end on it)."""
    window = defs.frequency_days
    team_users: dict[int, dict[str, set[int]]] = {}
    basis = select(
        ActivityBasis.subject_id,
        ActivityBasis.event,
        ActivityBasis.total,
        ActivityBasis.first_day,
        ActivityBasis.last_day,
        ActivityBasis.in_1,
        ActivityBasis.in_7,
        ActivityBasis.in_30,
        ActivityBasis.users,
        ActivityBasis.active_days,
    ).where(ActivityBasis.subject == kind.subject, *only(ActivityBasis.subject_id, chunk))
    used = frames(defs)
    wanted = [(position, frame) for position, frame in enumerate(TIME_FRAMES) if frame in used]
    # One object per distinct event name, day and count: the driver makes a new one for every
    # value, and at 100,000 users those copies were a third of the facts a full pass holds.
    name_of = {}.setdefault
    day_of = {}.setdefault
    total_of = {}.setdefault
    floats: dict[int, float] = {}
    # Each subject's mappings, looked up once per row (its rows do not come together); handed
    # to ``data`` once per subject at the end: (totals, first days, last days, per frame).
    found: dict[int, tuple[dict, dict, dict, dict[int, dict]]] = {}
    markers = []
    for sid, event, total, first, last, in_1, in_7, in_30, users, active_days in stream(
        session, basis
    ):
        if event == MARKER:
            markers.append((sid, active_days))
            continue
        entry = found.get(sid)
        if entry is None:
            entry = found[sid] = ({}, {}, {}, {frame: {} for _, frame in wanted})
        event = name_of(event, event)
        entry[0][event] = total_of(total, total)
        entry[1][event] = day_of(first, first)
        entry[2][event] = day_of(last, last)
        counts = (in_1, in_7, in_30)
        for position, frame in wanted:
            count = counts[position]
            if count:
                shared = floats.get(count)
                if shared is None:
                    shared = floats[count] = float(count)
                entry[3][frame][event] = shared
        if users:
            team_users.setdefault(sid, {})[event] = set(users)
    for sid, active_days in markers:
        data.active_days[sid][window] = int(active_days or 0)
        if chunk is not None:  # a full pass built everyone's basis: nothing asks
            data.based[sid] = True
    for sid, (totals, first_days, last_days, per_frame) in found.items():
        data.totals[sid] = totals
        data.first_day[sid] = first_days
        data.last_day[sid] = last_days
        kept = {frame: counts for frame, counts in per_frame.items() if counts}
        if kept:
            data.in_frame[sid] = kept
    del found, markers

    rollup, key = kind.rollup, kind.key
    live = (
        select(
            key,
            rollup.event,
            func.sum(rollup.count),
            func.min(rollup.day),
            func.max(rollup.day),
            func.sum(case((rollup.day == day, rollup.count), else_=0)),
        )
        .where(rollup.day >= day, *only(key, chunk))
        .group_by(key, rollup.event)
    )
    active_today: set[int] = set()
    for sid, event, total, first, last, today_count in stream(session, live):
        event = name_of(event, event)
        totals = data.totals[sid]
        totals[event] = totals.get(event, 0) + int(total)
        earlier = data.first_day[sid].get(event)
        data.first_day[sid][event] = first if earlier is None else min(earlier, first)
        later = data.last_day[sid].get(event)
        data.last_day[sid][event] = last if later is None else max(later, last)
        if today_count:
            active_today.add(sid)
            for frame in used:
                counts = data.in_frame[sid].setdefault(frame, {})
                counts[event] = counts.get(event, 0.0) + float(today_count)
    for sid in active_today:
        data.active_days[sid][window] = data.active_days[sid].get(window, 0) + 1

    team = team_events(defs)
    if kind is ACCOUNTS and team:
        pairs = (
            select(rollup.account_id, rollup.event, rollup.user_id)
            .where(rollup.day >= day, rollup.event.in_(team), *only(key, chunk))
            .distinct()
        )
        for aid, event, uid in session.execute(pairs):
            team_users.setdefault(aid, {}).setdefault(event, set()).add(uid)
        for aid, per_event in team_users.items():
            for event, users in per_event.items():
                data.distinct_users[aid][event] = len(users)


def received_since(
    session: Session, since: dt.datetime, day: dt.date, late_only: bool = False
) -> list[tuple[int | None, int | None, bool]]:
    """The distinct (user, account, late) of the events received since ``since``; late: it
    happened before ``day``, so the basis of its subjects no longer holds their whole past."""
    late = Event.timestamp < dt.datetime.combine(day, dt.time(), dt.UTC)
    query = select(Event.user_id, Event.account_id, late).where(Event.received_at >= since)
    if late_only:
        query = query.where(late)
    return [tuple(row) for row in session.execute(query.distinct())]


def late_subjects(session: Session, since: dt.datetime, day: dt.date) -> tuple[set[int], set[int]]:
    """Users and accounts with events received since ``since`` that happened before ``day``:
    their basis no longer holds their whole past."""
    rows = received_since(session, since, day, late_only=True)
    users = {u for u, _, _ in rows if u is not None}
    accounts = {a for _, a, _ in rows if a is not None}
    return users, accounts
