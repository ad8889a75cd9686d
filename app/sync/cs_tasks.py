"""CS tasks: one CRM task, assigned to the account's owner, when a paying account's engagement
drops; claimed in the database before it is created so a crash never makes two."""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

from sqlalchemy import select, update

from app.db import Database
from app.models import (
    Account,
    AccountScore,
    CrmRecord,
    CsTask,
    User,
    UserScore,
)
from app.scores.definitions_store import current_definitions
from app.tenants import tenant_settings
from connectors.base import Connector, TaskSpec
from scoring.definitions import Definitions
from scoring.engine import account_checklist, is_paying

log = logging.getLogger(__name__)


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
    checklist = account_checklist(account.traits, defs)
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
    after a task, none for the same account within the cool-down. The record's owner must
    be known (pulled at least once, or told by a webhook), and a drop that only a change of
    the scoring rules made (``AccountScore.drop_excused``) is not an engagement drop."""
    defs = current_definitions(db, tenant_id).definitions
    settings = tenant_settings(db, tenant_id)
    cooldown = cooldown or dt.timedelta(days=int(settings.get("task_cooldown_days", 7)))
    default_owner = settings.get("default_cs_owner_id")
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
            if not is_paying(account.traits, defs) or not record or not record.crm_id:
                continue
            if score.drop_excused:
                continue  # Ice Cold only because the scoring rules changed
            if record.pulled_at is None and "owner_id" not in (record.crm_fields or {}):
                # Its owner is not known yet (a company matched by domain has one in the CRM
                # that the next pull or owner webhook brings): the task waits for it rather
                # than going to the default owner.
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
