"""Push changed traits to the CRM.

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
from sqlalchemy.orm import aliased

from app.bulk import dialect_insert
from app.db import Database
from app.models import (
    Account,
    AccountScore,
    CrmRecord,
    User,
    UserScore,
)
from app.sync import properties
from app.tenants import tenant_settings
from connectors.base import Connector, Write, batches

log = logging.getLogger(__name__)


SUBJECTS = ("account", "user")


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
    associated: int = 0  # contacts associated with their company in this sync
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


@dataclass(frozen=True)
class _Known:
    """What we know of a record in the CRM."""

    crm_id: str | None
    pushed: dict[str, str]


def _load_rows(db: Database, tenant_id: int, subject: str, prefix: str) -> list[_Row]:
    """The score rows written since the push last looked, with what the CRM holds of them.
    Plain column rows, not ORM objects: this runs over every pending subject."""
    key_property = properties.key_property(prefix, subject)
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
                    AccountScore.fit_score.label("account_fit_score"),
                    AccountScore.fit_band.label("account_fit_band"),
                    AccountScore.fit_reason.label("account_fit_reason"),
                    *scores,
                )
                .join(UserScore, UserScore.user_id == User.id)
                .outerjoin(AccountScore, AccountScore.account_id == User.current_account_id)
                .where(
                    UserScore.crm_pending.is_(True),
                    User.merged_into_id.is_(None),
                    User.external_id.is_not(None),
                )
            )
        for score in session.execute(query):
            desired = properties.values(prefix, subject, score)
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
                # By primary key: (tenant_id, id).
                updates.append({"tenant_id": tenant_id, "id": rid, **row})
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
    create_missing = tenant_settings(db, tenant_id).get("create_missing", True)
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
            for batch in batches(creates, connector.write_batch(len(creates))):
                writes = [
                    Write(
                        r.key,
                        {**r.standard, **v},
                        company_crm_id=company_ids.get(r.company_subject_id),
                    )
                    for r, v in batch
                ]
                # A contact created with its company is associated with it: remembered so the
                # convergence below does not ask again.
                kept = [
                    (r, {**v, ASSOCIATED: company_ids[r.company_subject_id]})
                    if company_ids.get(r.company_subject_id)
                    else (r, v)
                    for r, v in batch
                ]
                books.keep("created", kept, connector.create(object_type, writes))
            books.add_to(stats)
    if not dry_run:
        # Also when nothing else changed: a pair missed earlier is caught up now.
        report.subjects["user"].associated = _converge_associations(db, tenant_id, connector)
    return report


# Kept in a user's CrmRecord.pushed: the company CRM id the contact was last associated with.
# Keys of pushed that start with "__" are bookkeeping, never CRM properties.
ASSOCIATED = "__company"


def _converge_associations(db: Database, tenant_id: int, connector: Connector) -> int:
    """Associations converge like values: every synced contact whose account is in the CRM
    ends associated with it, also when the company was matched only after the contact was
    created (a create whose answer was lost, say). Only pairs not yet associated cost a call."""
    company = aliased(CrmRecord)
    with db.tenant_session(tenant_id) as session:
        rows = session.execute(
            select(CrmRecord.id, CrmRecord.crm_id, CrmRecord.pushed, company.crm_id)
            .join(User, User.id == CrmRecord.subject_id)
            .join(
                company,
                (company.object_type == "account")
                & (company.subject_id == User.current_account_id),
            )
            .where(
                CrmRecord.object_type == "user",
                CrmRecord.crm_id.is_not(None),
                company.crm_id.is_not(None),
            )
        ).all()
    missing = [
        (rid, contact, firm)
        for rid, contact, pushed, firm in rows
        if (pushed or {}).get(ASSOCIATED) != firm
    ]
    if not missing:
        return 0
    connector.associate_users([(contact, firm) for _, contact, firm in missing])
    with db.tenant_transaction(tenant_id) as session:
        for rid, _, firm in missing:
            record = session.get(CrmRecord, rid)
            record.pushed = {**(record.pushed or {}), ASSOCIATED: firm}
    log.info("tenant %s: %s contacts associated with their company", tenant_id, len(missing))
    return len(missing)


def _company_crm_ids(db: Database, tenant_id: int) -> dict[int, str]:
    with db.tenant_session(tenant_id) as session:
        return dict(
            session.execute(
                select(CrmRecord.subject_id, CrmRecord.crm_id).where(
                    CrmRecord.object_type == "account", CrmRecord.crm_id.is_not(None)
                )
            ).all()
        )
