"""Pull owners, and each synced record's owner, lifecycle stage and sales activity, back from the
CRM (for segments, task routing and lead types)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select, update

from app.db import Database
from app.models import (
    Account,
    CrmOwner,
    CrmRecord,
    SyncCursor,
    User,
)
from app.scores.definitions_store import current_definitions
from connectors.base import FIRMOGRAPHIC_FIELDS, PULL_FIELDS, Connector, CrmObject, batches
from scoring.fit import crm_fields_used

log = logging.getLogger(__name__)

# Pulled into crm_fields (connectors.base.PULL_FIELDS) for segments, task routing, lead types.
TIME_FIELDS = {"last_contacted_at", "last_sales_activity_at"}
FIRST_PULL_DAYS = 3650


def _moment(value: Any) -> dt.datetime:
    """Epoch milliseconds, an ISO datetime or an ISO date (taken as midnight UTC)."""
    text = str(value)
    if text.isdigit():
        return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _crm_fields(obj: CrmObject, wanted: tuple[str, ...] = PULL_FIELDS) -> dict[str, Any]:
    """The pulled fields the connector returned, in stored form (fields it left out are left
    as they are). When they were pulled is the record's ``pulled_at`` column, not a field: a
    pull that brings nothing new changes nothing."""
    fields: dict[str, Any] = {}
    for key in wanted:
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
            stored = {k: v for k, v in (record.crm_fields or {}).items() if k != "pulled_at"}
            fields = {**stored, **values[record.crm_id]}
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
    # The firmographic fields the tenant's fit rules read, for accounts; when that set grows,
    # every account is read once more for them.
    firmographics = sorted(
        crm_fields_used(current_definitions(db, tenant_id).definitions.fit)
        & set(FIRMOGRAPHIC_FIELDS)
    )
    had = _cursor(db, tenant_id, "account.firmographics")
    grew = bool(set(firmographics) - set((had or "").split(",")) - {""})
    for subject, object_type in (
        ("account", connector.account_type),
        ("user", connector.user_type),
    ):
        wanted = PULL_FIELDS + tuple(firmographics) if subject == "account" else PULL_FIELDS
        with db.tenant_session(tenant_id) as session:
            query = select(CrmRecord.crm_id).where(
                CrmRecord.object_type == subject, CrmRecord.crm_id.is_not(None)
            )
            if not (subject == "account" and grew):
                query = query.where(CrmRecord.pulled_at.is_(None))
            never = list(session.scalars(query))
        pulled = 0
        for batch in batches(never, connector.batch_limit):
            objects = connector.read(object_type, batch, wanted)
            pulled += apply_crm_values(
                db, tenant_id, subject, {o.crm_id: _crm_fields(o, wanted) for o in objects}, now
            )
        if subject == "account" and grew:
            _set_cursor(db, tenant_id, "account.firmographics", ",".join(firmographics))
        name = f"{subject}.modified_since"
        cursor = _cursor(db, tenant_id, name)
        since = (
            dt.datetime.fromisoformat(cursor)
            if cursor
            else now - dt.timedelta(days=FIRST_PULL_DAYS)
        )
        latest = since
        for page in batches(connector.changed_since(object_type, since, wanted), 500):
            pulled += apply_crm_values(
                db, tenant_id, subject, {o.crm_id: _crm_fields(o, wanted) for o in page}, now
            )
            latest = max([latest, *[o.modified_at for o in page if o.modified_at]])
            _set_cursor(db, tenant_id, name, latest.isoformat())
        counts[subject] = pulled
    return counts
