"""The sync engine: push changed traits to the CRM, pull owners and stages back, create CS tasks.

CRM-neutral: it speaks to a ``connectors.base.Connector``. Per record it keeps the values the
CRM last accepted (``CrmRecord.pushed``), so unchanged traits cost no call and a push sends only
what changed. Each batch's outcome is committed before the next batch is sent: a sync stopped
at any point resumes where it was, and a record created just before a crash is found again by
the app's unique key property instead of being created twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from app import crm_properties
from app.bulk import dialect_insert
from app.db import Database
from app.definitions import current_definitions
from app.models import (
    Account,
    AccountScore,
    CrmOwner,
    CrmRecord,
    CrmWebhookEvent,
    CsTask,
    SyncCursor,
    Tenant,
    User,
    UserScore,
)
from connectors.base import PULL_FIELDS, Connector, CrmObject, TaskSpec, Write, batches
from scoring.definitions import Definitions

log = logging.getLogger(__name__)

SUBJECTS = ("account", "user")
# Pulled into crm_fields (connectors.base.PULL_FIELDS) for segments, task routing, lead types.
TIME_FIELDS = {"last_contacted_at", "last_sales_activity_at"}
FIRST_PULL_DAYS = 3650


@dataclass
class SubjectReport:
    unchanged: int = 0  # scored again, but nothing the CRM holds changed
    to_write: int = 0
    matched_by_id: int = 0
    matched_by_key: int = 0
    matched_by_natural_key: int = 0
    created: int = 0
    updated: int = 0
    failed: int = 0
    skipped: int = 0  # not creatable (a user without email) or creation disabled
    would_create: int = 0
    would_update: int = 0
    properties: Counter = field(default_factory=Counter)  # changed values per property


@dataclass
class SyncReport:
    dry_run: bool
    subjects: dict[str, SubjectReport] = field(
        default_factory=lambda: {s: SubjectReport() for s in SUBJECTS}
    )
    schema_created: list[str] = field(default_factory=list)
    tasks_created: int = 0
    handoffs_written: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    # Set when the CRM's quota paused syncing: its reason, since and until.
    paused: dict[str, str] | None = None

    def summary(self) -> dict[str, int]:
        """The counts an admin looks at first."""
        subjects = self.subjects.values()
        return {
            "created": sum(r.created for r in subjects),
            "updated": sum(r.updated for r in subjects),
            "failed": sum(r.failed for r in subjects),
            "tasks_created": self.tasks_created,
            "requests": self.calls.get("requests", 0),
        }

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dry_run": self.dry_run, "calls": dict(self.calls)}
        if self.paused:
            out["paused"] = self.paused
        for name, r in self.subjects.items():
            out[name] = {
                k: (dict(v) if isinstance(v, Counter) else v) for k, v in r.__dict__.items()
            }
        out["schema_created"] = self.schema_created
        out["tasks_created"] = self.tasks_created
        out["handoffs_written"] = self.handoffs_written
        return out


@dataclass
class _Row:
    subject_id: int
    key: str
    desired: dict[str, str]
    natural_key: str | None  # domain / email
    standard: dict[str, str]  # set on creation only (name, domain, email ...)
    record: _Known | None
    computed_at: dt.datetime
    company_subject_id: int | None = None


def _tenant_settings(db: Database, tenant_id: int) -> dict[str, Any]:
    with db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
        return dict(tenant.settings or {})


def ensure_schema(
    db: Database, tenant_id: int, connector: Connector, prefix: str, force: bool = False
) -> list[str]:
    """Create the property group and properties when the definitions changed since the last
    time (or never ran): enumeration options follow the definitions."""
    stored = current_definitions(db, tenant_id)
    settings = _tenant_settings(db, tenant_id)
    if not force and settings.get("schema_version") == stored.version:
        return []
    created = []
    group = (crm_properties.group_name(prefix), crm_properties.GROUP_LABEL)
    for subject, object_type in (
        ("account", connector.account_type),
        ("user", connector.user_type),
    ):
        specs = crm_properties.specs(prefix, subject, stored.definitions)
        created += connector.ensure_schema(object_type, group, specs)
    with db.system_transaction() as session:
        tenant = session.get(Tenant, tenant_id, with_for_update=True)
        tenant.settings = {**(tenant.settings or {}), "schema_version": stored.version}
    log.info("tenant %s: CRM schema ensured (%s created)", tenant_id, len(created))
    return created


@dataclass(frozen=True)
class _Known:
    """What we know of a record in the CRM."""

    crm_id: str | None
    pushed: dict[str, str]


def _load_rows(db: Database, tenant_id: int, subject: str, prefix: str) -> list[_Row]:
    """The score rows written since the push last looked, with what the CRM holds of them.
    Plain column rows, not ORM objects: this runs over every pending subject."""
    key_property = crm_properties.key_property(prefix, subject)
    score_model, score_key = (
        (AccountScore, AccountScore.account_id)
        if subject == "account"
        else (UserScore, UserScore.user_id)
    )
    rows = []
    with db.tenant_session(tenant_id) as session:
        known = {
            sid: _Known(crm_id, pushed or {})
            for sid, crm_id, pushed in session.execute(
                select(CrmRecord.subject_id, CrmRecord.crm_id, CrmRecord.pushed)
                .join(score_model, score_key == CrmRecord.subject_id)
                .where(CrmRecord.object_type == subject, score_model.crm_pending.is_(True))
            )
        }
        scores = [c for c in score_model.__table__.c if c.name != "tenant_id"]
        if subject == "account":
            query = (
                select(
                    Account.id.label("subject_id"),
                    Account.external_id.label("external_id"),
                    Account.name.label("display_name"),
                    Account.domain.label("domain"),
                    *scores,
                )
                .join(AccountScore, AccountScore.account_id == Account.id)
                .where(AccountScore.crm_pending.is_(True))
            )
        else:
            query = (
                select(
                    User.id.label("subject_id"),
                    User.external_id.label("external_id"),
                    User.name.label("display_name"),
                    User.email.label("email"),
                    User.current_account_id.label("company_subject_id"),
                    *scores,
                )
                .join(UserScore, UserScore.user_id == User.id)
                .where(
                    UserScore.crm_pending.is_(True),
                    User.merged_into_id.is_(None),
                    User.external_id.is_not(None),
                )
            )
        for score in session.execute(query):
            desired = crm_properties.values(prefix, subject, score)
            desired[key_property] = score.external_id
            if subject == "account":
                standard = {"name": score.display_name or score.external_id}
                if score.domain:
                    standard["domain"] = score.domain
                natural, company = score.domain, None
            else:
                standard = {}
                if score.email:
                    standard["email"] = score.email
                if score.display_name:
                    first, _, last = score.display_name.partition(" ")
                    standard["firstname"] = first
                    if last:
                        standard["lastname"] = last
                natural = score.email.lower() if score.email else None
                company = score.company_subject_id
            rows.append(
                _Row(
                    score.subject_id,
                    score.external_id,
                    desired,
                    natural,
                    standard,
                    known.get(score.subject_id),
                    score.computed_at,
                    company_subject_id=company,
                )
            )
    return rows


def _settle(db: Database, tenant_id: int, subject: str, rows: Iterable[_Row], session=None) -> None:
    """These score rows are in the CRM (or need nothing): the push stops reading them until
    scoring writes them again (a row rewritten meanwhile has another computed_at and stays).
    Runs in ``session`` when given (the batch's own transaction), else in a new one."""
    model, key = (
        (AccountScore, AccountScore.account_id)
        if subject == "account"
        else (UserScore, UserScore.user_id)
    )
    by_time: dict[dt.datetime, list[int]] = defaultdict(list)
    for row in rows:
        by_time[row.computed_at].append(row.subject_id)
    if not by_time:
        return
    if session is None:
        with db.tenant_transaction(tenant_id) as own:
            _settle(db, tenant_id, subject, rows, own)
        return
    for computed_at, ids in by_time.items():
        for chunk in batches(ids, 5000):
            session.execute(
                update(model)
                .where(key.in_(chunk), model.computed_at == computed_at)
                .values(crm_pending=False),
                execution_options={"synchronize_session": False},
            )


def _changed(row: _Row) -> dict[str, str]:
    pushed = row.record.pushed if row.record else {}
    return {k: v for k, v in row.desired.items() if pushed.get(k) != v}


def _save_matches(db: Database, tenant_id: int, subject: str, matches: dict[int, str]) -> None:
    if not matches:
        return
    with db.tenant_transaction(tenant_id) as session:
        statement = dialect_insert(session)(CrmRecord.__table__)
        statement = statement.on_conflict_do_update(
            index_elements=["tenant_id", "object_type", "subject_id"],
            set_={"crm_id": statement.excluded.crm_id},
        )
        session.connection().execute(
            statement,
            [
                {
                    "tenant_id": tenant_id,
                    "object_type": subject,
                    "subject_id": sid,
                    "crm_id": crm_id,
                    "pushed": {},
                    "crm_fields": {},
                    "failures": 0,
                }
                for sid, crm_id in matches.items()
            ],
        )


def _record_outcomes(
    db: Database,
    tenant_id: int,
    subject: str,
    sent: dict[int, dict[str, str]],
    outcomes: dict[int, Any],
    now: dt.datetime,
    rows: list[_Row],
) -> tuple[int, int]:
    """Store one batch's results in one transaction with bulk statements: accepted values, new
    CRM ids, errors, and the score rows that no longer wait for the push. Returns (ok,
    failed)."""
    ok = failed = 0
    with db.tenant_transaction(tenant_id) as session:
        existing = {
            sid: (rid, pushed, failures)
            for rid, sid, pushed, failures in session.execute(
                select(
                    CrmRecord.id, CrmRecord.subject_id, CrmRecord.pushed, CrmRecord.failures
                ).where(CrmRecord.object_type == subject, CrmRecord.subject_id.in_(list(sent)))
            )
        }
        updates, inserts = [], []
        for sid, values in sent.items():
            outcome = outcomes[sid]
            rid, pushed, failures = existing.get(sid, (None, {}, 0))
            row: dict[str, Any] = {}
            if outcome.error:
                failed += 1
                row.update(last_error=outcome.error[:2000], failed_at=now, failures=failures + 1)
                if outcome.missing:
                    # Deleted in the CRM: match (or create) again next time.
                    row.update(crm_id=None, pushed={})
                log.warning(
                    "tenant %s: %s %s not written: %s", tenant_id, subject, sid, outcome.error
                )
            else:
                ok += 1
                row.update(
                    pushed={**(pushed or {}), **values},
                    pushed_at=now,
                    last_error=None,
                    failed_at=None,
                    failures=0,
                )
                if outcome.crm_id:
                    row["crm_id"] = outcome.crm_id
            if rid is None:
                inserts.append(
                    {
                        "tenant_id": tenant_id,
                        "object_type": subject,
                        "subject_id": sid,
                        "crm_id": None,
                        "pushed": {},
                        "crm_fields": {},
                        "failures": 0,
                        **row,
                    }
                )
            else:
                updates.append({"id": rid, **row})
        # Rows of one shape per statement (executemany needs the same keys in each).
        by_shape: dict[tuple, list[dict]] = defaultdict(list)
        for row in updates:
            by_shape[tuple(sorted(row))].append(row)
        for shaped in by_shape.values():
            session.execute(update(CrmRecord), shaped)
        if inserts:
            by_shape = defaultdict(list)
            for row in inserts:
                by_shape[tuple(sorted(row))].append(row)
            for shaped in by_shape.values():
                session.execute(CrmRecord.__table__.insert(), shaped)
        landed = [r for r in rows if not outcomes[r.subject_id].error]
        _settle(db, tenant_id, subject, landed, session)
    return ok, failed


class _Bookkeeping:
    """Stores each batch's results on a thread of its own while the next batch is on its way
    to the CRM: in order, at most one batch behind. A crash loses at most that batch's
    bookkeeping: updates are sent again (the same values), created records are found again by
    their key."""

    def __init__(self, db: Database, tenant_id: int, subject: str, now: dt.datetime):
        self.db, self.tenant_id, self.subject, self.now = db, tenant_id, subject, now
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crm-bookkeeping")
        self.stored: list[tuple[str, Future]] = []

    def __enter__(self) -> _Bookkeeping:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True)

    def keep(self, kind: str, pairs: list[tuple[_Row, dict[str, str]]], results) -> None:
        outcomes = {o.key: o for o in results}
        future = self.pool.submit(
            _record_outcomes,
            self.db,
            self.tenant_id,
            self.subject,
            {r.subject_id: v for r, v in pairs},
            {r.subject_id: outcomes[r.key] for r, _ in pairs},
            self.now,
            [r for r, _ in pairs],
        )
        self.stored.append((kind, future))
        if len(self.stored) > 1:
            self.stored[-2][1].result()  # a bookkeeping error stops the push here

    def add_to(self, stats: SubjectReport) -> None:
        for kind, future in self.stored:
            ok, failed = future.result()
            setattr(stats, kind, getattr(stats, kind) + ok)
            stats.failed += failed


def push_changed_traits(
    db: Database,
    tenant_id: int,
    connector: Connector,
    prefix: str,
    now: dt.datetime,
    dry_run: bool = False,
) -> SyncReport:
    """Write every account's and user's changed traits; accounts first, so users can be
    associated with their company."""
    report = SyncReport(dry_run=dry_run)
    create_missing = _tenant_settings(db, tenant_id).get("create_missing", True)
    for subject in SUBJECTS:
        object_type = connector.account_type if subject == "account" else connector.user_type
        stats = report.subjects[subject]
        rows = _load_rows(db, tenant_id, subject, prefix)
        pending: list[tuple[_Row, dict[str, str]]] = []
        unchanged: list[_Row] = []
        for row in rows:
            changed = _changed(row)
            if not changed:
                unchanged.append(row)
                continue
            stats.properties.update(changed.keys())
            pending.append((row, changed))
        stats.unchanged = len(unchanged)
        if not dry_run:
            _settle(db, tenant_id, subject, unchanged)
        stats.to_write = len(pending)
        if not pending:
            continue

        # Matching: stored id, then the app's unique key property, then domain / email.
        unmatched = [(r, c) for r, c in pending if not (r.record and r.record.crm_id)]
        stats.matched_by_id = len(pending) - len(unmatched)
        found: dict[int, str] = {}
        if unmatched:
            by_key = connector.find_by_key(object_type, [r.key for r, _ in unmatched])
            for r, _ in unmatched:
                if r.key in by_key:
                    found[r.subject_id] = by_key[r.key]
            stats.matched_by_key = len(found)
            naturals = [r.natural_key for r, _ in unmatched if r.subject_id not in found]
            naturals = [n for n in naturals if n]
            if naturals:
                by_natural = connector.find_by_natural_key(object_type, naturals)
                for r, _ in unmatched:
                    if r.subject_id not in found and r.natural_key:
                        crm_id = by_natural.get(r.natural_key.lower())
                        if crm_id:
                            found[r.subject_id] = crm_id
                            stats.matched_by_natural_key += 1
        if not dry_run:
            _save_matches(db, tenant_id, subject, found)

        updates: list[tuple[_Row, dict[str, str], str]] = []
        creates: list[tuple[_Row, dict[str, str]]] = []
        skipped: list[_Row] = []
        for row, changed in pending:
            crm_id = (row.record.crm_id if row.record else None) or found.get(row.subject_id)
            if crm_id:
                # A record matched now may hold anything: send every value once.
                values = changed if row.record and row.record.crm_id else dict(row.desired)
                updates.append((row, values, crm_id))
            elif create_missing and (subject == "account" or row.natural_key):
                creates.append((row, dict(row.desired)))
            else:
                stats.skipped += 1
                skipped.append(row)
        stats.would_update, stats.would_create = len(updates), len(creates)
        if dry_run:
            continue
        _settle(db, tenant_id, subject, skipped)

        company_ids = _company_crm_ids(db, tenant_id) if subject == "user" else {}
        with _Bookkeeping(db, tenant_id, subject, now) as books:
            for batch in batches(updates, connector.write_batch(len(updates))):
                writes = [Write(r.key, v, crm_id=c) for r, v, c in batch]
                results = connector.update(object_type, writes)
                books.keep("updated", [(r, v) for r, v, _ in batch], results)
            if subject == "user":
                newly_matched = [
                    (found[r.subject_id], company_ids[r.company_subject_id])
                    for r, _, _ in updates
                    if r.subject_id in found and company_ids.get(r.company_subject_id)
                ]
                if newly_matched:
                    connector.associate_users(newly_matched)
            for batch in batches(creates, connector.write_batch(len(creates))):
                writes = [
                    Write(
                        r.key,
                        {**r.standard, **v},
                        company_crm_id=company_ids.get(r.company_subject_id),
                    )
                    for r, v in batch
                ]
                books.keep("created", batch, connector.create(object_type, writes))
            books.add_to(stats)
    return report


def _company_crm_ids(db: Database, tenant_id: int) -> dict[int, str]:
    with db.tenant_session(tenant_id) as session:
        return dict(
            session.execute(
                select(CrmRecord.subject_id, CrmRecord.crm_id).where(
                    CrmRecord.object_type == "account", CrmRecord.crm_id.is_not(None)
                )
            ).all()
        )


# --- pull ------------------------------------------------------------------------------------


def _moment(value: Any) -> dt.datetime:
    """Epoch milliseconds, an ISO datetime or an ISO date (taken as midnight UTC)."""
    text = str(value)
    if text.isdigit():
        return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _crm_fields(obj: CrmObject, now: dt.datetime) -> dict[str, Any]:
    """The pulled fields the connector returned, in stored form (fields it left out are left
    as they are)."""
    fields: dict[str, Any] = {"pulled_at": now.isoformat()}
    for key in PULL_FIELDS:
        if key not in obj.properties:
            continue
        value = obj.properties[key]
        if value in (None, ""):
            fields[key] = None
        elif key in TIME_FIELDS:
            fields[key] = _moment(value).isoformat()
        elif key == "sales_activities":
            fields[key] = int(float(value))
        else:
            fields[key] = str(value)
    return fields


def apply_crm_values(
    db: Database,
    tenant_id: int,
    subject: str,
    values: dict[str, dict[str, Any]],
    now: dt.datetime,
) -> int:
    """Merge pulled values into the records (``values`` keyed by CRM id); the subjects are
    marked changed so the next scoring pass re-evaluates their segments. Returns how many
    records matched."""
    if not values:
        return 0
    model = Account if subject == "account" else User
    touched = []
    with db.tenant_transaction(tenant_id) as session:
        for record in session.scalars(
            select(CrmRecord).where(
                CrmRecord.object_type == subject, CrmRecord.crm_id.in_(list(values))
            )
        ):
            fields = {**(record.crm_fields or {}), **values[record.crm_id]}
            if fields != record.crm_fields:
                record.crm_fields = fields
                touched.append(record.subject_id)
            record.pulled_at = now
        if touched:
            session.execute(
                update(model).where(model.id.in_(touched)).values(changed_at=now),
                execution_options={"synchronize_session": False},
            )
    return len(touched)


def _cursor(db: Database, tenant_id: int, name: str) -> str | None:
    with db.tenant_session(tenant_id) as session:
        row = session.get(SyncCursor, (tenant_id, name))
        return row.value if row else None


def _set_cursor(db: Database, tenant_id: int, name: str, value: str) -> None:
    with db.tenant_transaction(tenant_id) as session:
        row = session.get(SyncCursor, (tenant_id, name))
        if row is None:
            session.add(SyncCursor(tenant_id=tenant_id, name=name, value=value))
        else:
            row.value = value


def pull(db: Database, tenant_id: int, connector: Connector, now: dt.datetime) -> dict[str, int]:
    """Owners, then the owner, lifecycle stage and sales activity of every record we sync:
    first those never pulled (read by id), then whatever changed since the last pull."""
    counts: dict[str, int] = {}
    owners = connector.owners()
    with db.tenant_transaction(tenant_id) as session:
        known = {o.owner_id: o for o in session.scalars(select(CrmOwner))}
        for owner in owners:
            row = known.pop(owner.owner_id, None)
            if row is None:
                session.add(
                    CrmOwner(
                        tenant_id=tenant_id,
                        owner_id=owner.owner_id,
                        email=owner.email,
                        name=owner.name,
                        archived=owner.archived,
                    )
                )
            else:
                row.email, row.name, row.archived = owner.email, owner.name, owner.archived
        for gone in known.values():
            gone.archived = True
    counts["owners"] = len(owners)
    for subject, object_type in (
        ("account", connector.account_type),
        ("user", connector.user_type),
    ):
        with db.tenant_session(tenant_id) as session:
            never = list(
                session.scalars(
                    select(CrmRecord.crm_id).where(
                        CrmRecord.object_type == subject,
                        CrmRecord.crm_id.is_not(None),
                        CrmRecord.pulled_at.is_(None),
                    )
                )
            )
        pulled = 0
        for batch in batches(never, connector.batch_limit):
            objects = connector.read(object_type, batch, PULL_FIELDS)
            pulled += apply_crm_values(
                db, tenant_id, subject, {o.crm_id: _crm_fields(o, now) for o in objects}, now
            )
        name = f"{subject}.modified_since"
        cursor = _cursor(db, tenant_id, name)
        since = (
            dt.datetime.fromisoformat(cursor)
            if cursor
            else now - dt.timedelta(days=FIRST_PULL_DAYS)
        )
        latest = since
        for page in batches(connector.changed_since(object_type, since, PULL_FIELDS), 500):
            pulled += apply_crm_values(
                db, tenant_id, subject, {o.crm_id: _crm_fields(o, now) for o in page}, now
            )
            latest = max([latest, *[o.modified_at for o in page if o.modified_at]])
            _set_cursor(db, tenant_id, name, latest.isoformat())
        counts[subject] = pulled
    return counts


# --- CS tasks ---------------------------------------------------------------------------------


def _task_text(account: Account, score: AccountScore, defs: Definitions) -> tuple[str, str]:
    name = account.name or account.external_id
    subject = f"Engagement dropped: {name}"
    change = score.trend_change or 0
    previous = score.engagement_score - change
    lines = [
        f"{name}'s engagement score fell from {previous:.0f} to {score.engagement_score:.0f} "
        f"({change:+.0f} points against the previous period).",
        f"Active users: {score.active_users} of {score.total_users}.",
    ]
    if score.last_active_at:
        lines.append(f"Last active: {score.last_active_at:%Y-%m-%d}.")
    stage = str((account.traits or {}).get(defs.pql.stage_trait, "")).lower()
    paid = stage in {v.lower() for v in defs.pql.paid_values}
    checklist = defs.account_checklist_paid if paid else defs.account_checklist_trial
    done = set((score.steps_done or {}).get("done", []))
    missing = [s.label for s in checklist.steps if s.key not in done]
    if missing:
        lines.append("Not done yet: " + "; ".join(missing) + ".")
    else:
        lines.append("Every Activation step is done.")
    return subject, "\n".join(lines)


def create_cs_tasks(
    db: Database,
    tenant_id: int,
    connector: Connector,
    now: dt.datetime,
    cooldown: dt.timedelta | None = None,
) -> int:
    """One CRM task per engagement drop of a paying account, on its company, for its owner
    (the tenant's default CS owner otherwise). A drop lasts until the account stops dropping;
    after a task, none for the same account within the cool-down."""
    defs = current_definitions(db, tenant_id).definitions
    settings = _tenant_settings(db, tenant_id)
    cooldown = cooldown or dt.timedelta(days=int(settings.get("task_cooldown_days", 7)))
    default_owner = settings.get("default_cs_owner_id")
    paid_values = {v.lower() for v in defs.pql.paid_values}
    created = 0
    with db.tenant_transaction(tenant_id) as session:
        open_tasks: dict[int, list[CsTask]] = defaultdict(list)
        for task in session.scalars(select(CsTask)):
            open_tasks[task.account_id].append(task)
        rows = session.execute(
            select(Account, AccountScore, CrmRecord)
            .join(AccountScore, AccountScore.account_id == Account.id)
            .outerjoin(
                CrmRecord,
                (CrmRecord.subject_id == Account.id) & (CrmRecord.object_type == "account"),
            )
        ).all()
        candidates = []
        for account, score, record in rows:
            dropping = score.trend_segment == "Ice Cold"
            tasks = open_tasks.get(account.id, [])
            if not dropping:
                for task in tasks:
                    if task.resolved_at is None:
                        task.resolved_at = now
                continue
            stage = str((account.traits or {}).get(defs.pql.stage_trait, "")).lower()
            if stage not in paid_values or not record or not record.crm_id:
                continue
            if any(t.resolved_at is None for t in tasks):
                continue  # this drop has its task
            if any(now - t.created_at < cooldown for t in tasks):
                continue
            candidates.append((account, score, record))
    for account, score, record in candidates:
        subject, body = _task_text(account, score, defs)
        owner = (record.crm_fields or {}).get("owner_id") or default_owner
        # Claim the drop first (unique per account and day), then create the CRM task: a crash
        # in between leaves a claim without a task id rather than two tasks.
        with db.tenant_transaction(tenant_id) as session:
            claim = CsTask(
                tenant_id=tenant_id,
                account_id=account.id,
                drop_seen_on=now.date(),
                owner_id=owner,
                subject=subject,
                body=body,
                created_at=now,
            )
            session.add(claim)
        crm_id = connector.create_task(
            TaskSpec(
                subject,
                body,
                record.crm_id,
                owner,
                now + dt.timedelta(days=1),
                user_crm_id=_champion(db, tenant_id, account.id),
            )
        )
        with db.tenant_transaction(tenant_id) as session:
            session.execute(
                update(CsTask)
                .where(CsTask.account_id == account.id, CsTask.drop_seen_on == now.date())
                .values(crm_task_id=crm_id)
            )
        created += 1
        log.info("tenant %s: CS task %s for account %s", tenant_id, crm_id, account.id)
    return created


def _champion(db: Database, tenant_id: int, account_id: int) -> str | None:
    """The CRM id of the account's most engaged user in the CRM: whom CS calls first."""
    with db.tenant_session(tenant_id) as session:
        return session.scalar(
            select(CrmRecord.crm_id)
            .join(User, (User.id == CrmRecord.subject_id) & (CrmRecord.object_type == "user"))
            .join(UserScore, UserScore.user_id == User.id)
            .where(User.current_account_id == account_id, CrmRecord.crm_id.is_not(None))
            .order_by(UserScore.engagement_score.desc(), User.id)
            .limit(1)
        )


# --- webhooks -----------------------------------------------------------------------------------


def apply_webhook_changes(db: Database, changes: list, now: dt.datetime) -> int:
    """Apply verified CRM notifications (``webhooks.hubspot.CrmChange``): each event once
    (its id is recorded in the same transaction), a field only by a notification newer than the
    one that last set it. Returns how many were applied."""
    applied = 0
    by_portal: dict[str, list] = defaultdict(list)
    for change in changes:
        by_portal[change.portal].append(change)
    for portal, portal_changes in by_portal.items():
        with db.system_session() as session:
            tenant_id = session.scalar(
                select(Tenant.id).where(
                    Tenant.crm == "hubspot", Tenant.external_id == portal, Tenant.status == "active"
                )
            )
        if tenant_id is None:
            log.info("webhook for unknown or inactive portal %s ignored", portal)
            continue
        with db.tenant_transaction(tenant_id) as session:
            inserted = set(
                session.scalars(
                    dialect_insert(session)(CrmWebhookEvent.__table__)
                    .values(
                        [
                            {"tenant_id": tenant_id, "event_id": c.event_id, "received_at": now}
                            for c in portal_changes
                        ]
                    )
                    .on_conflict_do_nothing()
                    .returning(CrmWebhookEvent.__table__.c.event_id)
                )
            )
            fresh = [c for c in portal_changes if c.event_id in inserted]
            if not fresh:
                continue
            records = {
                (r.object_type, r.crm_id): r
                for r in session.scalars(
                    select(CrmRecord).where(CrmRecord.crm_id.in_({c.crm_id for c in fresh}))
                )
            }
            touched: dict[str, set[int]] = defaultdict(set)
            for change in sorted(fresh, key=lambda c: c.occurred_at):
                record = records.get((change.subject, change.crm_id))
                if record is None:
                    continue
                if change.kind == "deletion":
                    record.crm_id, record.pushed = None, {}
                    applied += 1
                    continue
                key = change.name
                if key not in PULL_FIELDS:
                    continue
                fields = dict(record.crm_fields or {})
                times = dict(fields.get("field_times") or {})
                if times.get(key) and times[key] > change.occurred_at.isoformat():
                    continue  # an older notification delivered late
                fields[key] = change.value or None
                times[key] = change.occurred_at.isoformat()
                fields["field_times"] = times
                record.crm_fields = fields
                touched[change.subject].add(record.subject_id)
                applied += 1
            for subject, ids in touched.items():
                model = Account if subject == "account" else User
                session.execute(
                    update(model).where(model.id.in_(ids)).values(changed_at=now),
                    execution_options={"synchronize_session": False},
                )
    return applied
