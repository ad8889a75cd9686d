"""Apply CRM change notifications (owner, stage, deletions) that an inbound edge verified,
parsed and resolved to its tenant."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy import select, update

from app.bulk import dialect_insert
from app.db import Database
from app.models import Account, CrmRecord, CrmWebhookEvent, User
from connectors.base import PULL_FIELDS, CrmChange


def apply_webhook_changes(
    db: Database, tenant_id: int, changes: list[CrmChange], now: dt.datetime
) -> int:
    """Apply one tenant's verified CRM notifications: each event once (its id is recorded in
    the same transaction), a field only by a notification newer than the one that last set it.
    Returns how many were applied."""
    if not changes:
        return 0
    applied = 0
    with db.tenant_transaction(tenant_id) as session:
        inserted = set(
            session.scalars(
                dialect_insert(session)(CrmWebhookEvent.__table__)
                .values(
                    [
                        {"tenant_id": tenant_id, "event_id": c.event_id, "received_at": now}
                        for c in changes
                    ]
                )
                .on_conflict_do_nothing()
                .returning(CrmWebhookEvent.__table__.c.event_id)
            )
        )
        fresh = [c for c in changes if c.event_id in inserted]
        if not fresh:
            return 0
        wanted = {c.crm_id for c in fresh} | {m for c in fresh for m in c.merged_from}
        records = {
            (r.object_type, r.crm_id): r
            for r in session.scalars(select(CrmRecord).where(CrmRecord.crm_id.in_(wanted)))
        }
        touched: dict[str, set[int]] = defaultdict(set)
        for change in sorted(fresh, key=lambda c: c.occurred_at):
            if change.kind == "merge":
                applied += _merge(records, change)
                continue
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


def _merge(records: dict, change: CrmChange) -> int:
    """Records merged away now live on as the surviving one: the first of ours that pointed at
    any of them takes the survivor's id (unless one of ours already has it); the others are
    unlinked and matched again on the next push (so they never point at a merged-away id)."""
    survivor = records.get((change.subject, change.crm_id))
    moved = 0
    for old_id in change.merged_from:
        record = records.pop((change.subject, old_id), None)
        if record is None:
            continue
        if survivor is None:
            record.crm_id = change.crm_id
            survivor = records[(change.subject, change.crm_id)] = record
        else:
            record.crm_id = None
        record.pushed = {}  # what the survivor holds is not known: push everything once
        moved += 1
    return moved
