"""What scoring a set of subjects reads: their traits, activity (from the activity basis and
the day's rollups), what the CRM says of them, and for accounts their members."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sqlalchemy import Float, Integer, and_, case, cast, func, literal, or_, select
from sqlalchemy.orm import Session

from app.db import stream
from app.models import (
    Account,
    AccountEventDay,
    CrmRecord,
    User,
)
from app.scores import activity_basis
from app.scores.activity_basis import chunks, only
from scoring.definitions import Definitions
from scoring.engine import (
    Activity,
    Facts,
    communication,
)


def _history_events(defs: Definitions) -> set[str]:
    """Events whose daily history scoring needs: those of steps counted "within the first D
    days" (everything else reads lifetime totals, first/last days and in-frame counts)."""
    events: set[str] = set()
    for checklist in (
        defs.account_checklist_trial,
        defs.account_checklist_paid,
        defs.user_checklist,
    ):
        events |= {s.event for s in checklist.steps if s.within_days and s.event}
    return events


def _early_team_events(defs: Definitions) -> set[str]:
    """Events of team steps limited to the first D days: those need each user's first day."""
    steps = defs.account_checklist_trial.steps + defs.account_checklist_paid.steps
    return {s.event for s in steps if s.kind == "distinct_users" and s.within_days and s.event}


_NOTHING: Mapping = MappingProxyType({})


@dataclass
class Subjects:
    first_seen: dict[int, dt.date] = field(default_factory=dict)
    last_seen: dict[int, dt.datetime] = field(default_factory=dict)
    traits: dict[int, dict] = field(default_factory=dict)
    totals: dict[int, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    first_day: dict[int, dict[str, dt.date]] = field(default_factory=lambda: defaultdict(dict))
    last_day: dict[int, dict[str, dt.date]] = field(default_factory=lambda: defaultdict(dict))
    in_frame: dict[int, dict[int, dict[str, float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict))
    )
    decayed: dict[int, dict[int, dict[str, float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict))
    )
    active_days: dict[int, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))
    early: dict[int, dict[str, dict[dt.date, int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict))
    )
    user_first_day: dict[int, dict[str, dict[int, dt.date]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict))
    )
    distinct_users: dict[int, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    crm: dict[int, dict] = field(default_factory=dict)
    # Accounts: the domain (from the website trait), for fit rules.
    domain: dict[int, str | None] = field(default_factory=dict)
    # Of subjects read by id (an incremental pass), those whose activity basis was read (its
    # marker row): the others have none yet. Not kept for a full pass, which built everyone's.
    based: dict[int, bool] = field(default_factory=dict)

    def release(self, sid: int) -> None:
        """Let go of what was read for ``sid`` (scored: its facts are no longer needed)."""
        for values in vars(self).values():  # every field: each maps subject ids to facts
            values.pop(sid, None)

    def absorb(self, other: Subjects) -> None:
        """Take ``other``'s subjects (read again after their basis was rebuilt)."""
        for name, values in vars(other).items():
            getattr(self, name).update(values)

    def take(self, sid: int) -> tuple[Facts, dt.datetime | None, str | None]:
        """The facts of ``sid`` with the last time seen and the domain, let go of as they are
        taken (one lookup each instead of a read and then a ``release``). What a subject lacks
        is one shared empty mapping: a full pass holds every subject's facts at once, and an
        empty dict each was 30 MB of it at 100,000 users."""
        activity = Activity(
            totals=self.totals.pop(sid, _NOTHING),
            first_day=self.first_day.pop(sid, _NOTHING),
            last_day=self.last_day.pop(sid, _NOTHING),
            in_frame=self.in_frame.pop(sid, _NOTHING),
            decayed=self.decayed.pop(sid, _NOTHING),
            active_days=self.active_days.pop(sid, _NOTHING),
            early=self.early.pop(sid, _NOTHING),
        )
        facts = Facts(
            first_seen=self.first_seen.pop(sid),
            traits=self.traits.pop(sid, _NOTHING),
            activity=activity,
            user_first_day=self.user_first_day.pop(sid, _NOTHING),
            distinct_users=self.distinct_users.pop(sid, _NOTHING),
            crm=self.crm.pop(sid, _NOTHING),
        )
        self.based.pop(sid, None)
        return facts, self.last_seen.pop(sid, None), self.domain.pop(sid, None)


def _load_activity(
    session: Session,
    data: Subjects,
    kind,
    chunk: list[int] | None,
    defs: Definitions,
    today: dt.date,
) -> None:
    """Fill ``data`` for one chunk: the activity basis plus today's rollups, and daily rows
    only for what needs days (decaying profiles' frames, "within the first D days" steps)."""
    activity_basis.load(session, data, kind, chunk, defs, today)
    rollup, subject_column = kind.rollup, kind.key
    in_chunk = only(subject_column, chunk)
    decay_frames = sorted({p.time_frame_days for p in defs.profiles if p.decay})
    if decay_frames:
        start = today - dt.timedelta(days=decay_frames[-1] - 1)
        daily = (
            select(subject_column, rollup.event, rollup.day, func.sum(rollup.count))
            .where(*in_chunk, rollup.day >= start, rollup.day <= today)
            .group_by(subject_column, rollup.event, rollup.day)
        )
        for sid, event, day, count in stream(session, daily):
            age = (today - day).days
            for frame in decay_frames:
                if age < frame:
                    points = data.decayed[sid][frame]
                    points[event] = points.get(event, 0.0) + int(count) * (frame - age) / frame

    early_events = _history_events(defs)
    if early_events:
        daily = (
            select(subject_column, rollup.event, rollup.day, func.sum(rollup.count))
            .where(*in_chunk, rollup.event.in_(early_events))
            .group_by(subject_column, rollup.event, rollup.day)
        )
        for sid, event, day, count in stream(session, daily):
            data.early[sid][event][day] = int(count)


def _load_crm(
    session: Session, data: Subjects, subject: str, chunk: list[int] | None, today: dt.date
) -> None:
    """What the CRM says of them (owner, lifecycle stage, contact), for segments and lead
    types; ``communication`` is derived here because it depends on the day."""
    query = select(CrmRecord.subject_id, CrmRecord.crm_fields, CrmRecord.pulled_at).where(
        CrmRecord.object_type == subject, *only(CrmRecord.subject_id, chunk)
    )
    for sid, fields, pulled_at in session.execute(query):
        if fields or pulled_at:
            known = {k: v for k, v in (fields or {}).items() if k != "pulled_at"}
            if pulled_at is not None:
                known["pulled_at"] = pulled_at.isoformat()
            data.crm[sid] = {**known, "communication": communication(known, today)}


def load_users(
    session: Session, ids: list[int] | None, defs: Definitions, today: dt.date
) -> Subjects:
    data = Subjects()
    base = select(User.id, User.first_seen_at, User.last_active_at, User.traits).where(
        User.merged_into_id.is_(None)
    )
    for chunk in chunks(ids):
        for uid, first, last, traits in stream(session, base.where(*only(User.id, chunk))):
            data.first_seen[uid] = first.date()
            data.last_seen[uid] = last
            data.traits[uid] = traits or {}
        _load_activity(session, data, activity_basis.USERS, chunk, defs, today)
        _load_crm(session, data, "user", chunk, today)
    return data


def load_accounts(
    session: Session, ids: list[int] | None, defs: Definitions, today: dt.date
) -> Subjects:
    data = Subjects()
    base = select(
        Account.id, Account.first_seen_at, Account.last_active_at, Account.traits, Account.domain
    )
    early_team = _early_team_events(defs)
    for chunk in chunks(ids):
        for aid, first, last, traits, domain in stream(
            session, base.where(*only(Account.id, chunk))
        ):
            data.first_seen[aid] = first.date()
            data.last_seen[aid] = last
            data.traits[aid] = traits or {}
            data.domain[aid] = domain
        _load_activity(session, data, activity_basis.ACCOUNTS, chunk, defs, today)
        _load_crm(session, data, "account", chunk, today)
        if early_team:
            per_user = (
                select(
                    AccountEventDay.account_id,
                    AccountEventDay.event,
                    AccountEventDay.user_id,
                    func.min(AccountEventDay.day),
                )
                .where(
                    *only(AccountEventDay.account_id, chunk),
                    AccountEventDay.event.in_(early_team),
                )
                .group_by(
                    AccountEventDay.account_id, AccountEventDay.event, AccountEventDay.user_id
                )
            )
            for aid, event, uid, first_day in stream(session, per_user):
                data.user_first_day[aid][event][uid] = first_day
    return data


def previous_raws(
    session: Session, kind, ids: list[int] | None, defs: Definitions, day: dt.date
) -> dict[int, tuple[float, ...]]:
    """Each subject's raw engagement as it stood at the end of ``day`` (the previous period's
    last day) under every profile of the *current* definitions, in ``defs.profiles`` order: the
    previous score is recomputed under today's rules, so a trend compares like with like.

    Set-based: one grouped statement per chunk computes ``scoring.engine.raw_engagement`` in
    the database from the daily rollups, one row per subject, instead of reading each
    subject's counts per event into Python (at 10M events, 700,000 rows every daily pass). The
    arithmetic is the engine's, in its order: per profile, 0 plus each positively weighted
    event's count in the frame (with linear decay: Σ count × (frame − age) ÷ frame) times its
    weight, then each inactivity penalty whose event (any event if none) did not happen within
    its days. A subject with no rollups in reach is not returned: its raw is the penalties alone
    (``raw_engagement`` of an empty Activity). The differential test checks this against the
    engine on random tenants."""
    rollup, key = kind.rollup, kind.key
    frames = sorted({p.time_frame_days for p in defs.profiles})
    reach = max([*frames, *(pen.days for p in defs.profiles for pen in p.penalties)])
    start = day - dt.timedelta(days=reach - 1)
    if session.get_bind().dialect.name == "postgresql":
        age = literal(day) - rollup.day
    else:
        age = cast(func.julianday(literal(day.isoformat())) - func.julianday(rollup.day), Integer)

    def in_frame(event: str, frame: int, decay: bool):
        inside = and_(rollup.event == event, rollup.day >= day - dt.timedelta(days=frame - 1))
        if decay:
            points = func.sum(case((inside, rollup.count * (frame - age)), else_=0))
            return cast(points, Float) / frame
        return cast(func.sum(case((inside, rollup.count), else_=0)), Float)

    def last(event: str | None):
        return func.max(rollup.day if event is None else case((rollup.event == event, rollup.day)))

    raws = []
    for profile in defs.profiles:
        raw = literal(0.0, Float)
        for event, weight in profile.weights.items():
            if weight > 0:
                raw = raw + in_frame(event, profile.time_frame_days, profile.decay) * float(weight)
        for penalty in profile.penalties:
            gone = last(penalty.event)
            quiet = or_(gone.is_(None), gone <= day - dt.timedelta(days=penalty.days))
            raw = raw + case((quiet, literal(float(penalty.points), Float)), else_=0.0)
        raws.append(raw)
    out: dict[int, tuple[float, ...]] = {}
    for chunk in chunks(ids):
        grouped = (
            select(key, *raws)
            .where(*only(key, chunk), rollup.day >= start, rollup.day <= day)
            .group_by(key)
        )
        for sid, *values in stream(session, grouped):
            out[sid] = tuple(float(v) for v in values)
    return out
