"""The CS handoff: when a trial or free account becomes paying, one note on its CRM record with
what it used and did not use, who engaged and what each did, and what is left to onboard.

Each account's stage is remembered (``Handoff``); the note is written on the change from trial
to paid seen after the install (accounts already paying when first seen get none). The change
is claimed before the note is sent: a crash in between leaves a missing note, never two.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

from sqlalchemy import func, select

from app.db import Database
from app.models import (
    Account,
    AccountEventDay,
    AccountMembership,
    AccountScore,
    CrmRecord,
    Handoff,
    User,
    UserEventDay,
    UserScore,
)
from app.scores.definitions_store import current_definitions
from connectors.base import Connector
from scoring.definitions import Definitions
from scoring.engine import account_stage

log = logging.getLogger(__name__)

TITLE = "Handoff to Customer Success"


def handoff_text(db: Database, tenant_id: int, account_id: int, defs: Definitions) -> str:
    with db.tenant_session(tenant_id) as session:
        account, score = session.execute(
            select(Account, AccountScore)
            .join(AccountScore, AccountScore.account_id == Account.id)
            .where(Account.id == account_id)
        ).one()
        used = dict(
            session.execute(
                select(AccountEventDay.event, func.sum(AccountEventDay.count))
                .where(AccountEventDay.account_id == account_id)
                .group_by(AccountEventDay.event)
            ).all()
        )
        people = session.execute(
            select(User.id, User.name, User.email, UserScore.engagement_score)
            .join(AccountMembership, AccountMembership.user_id == User.id)
            .join(UserScore, UserScore.user_id == User.id)
            .where(AccountMembership.account_id == account_id)
            .order_by(UserScore.engagement_score.desc())
            .limit(10)
        ).all()
        did: dict[int, list[tuple[str, int]]] = defaultdict(list)
        if people:
            for uid, event, count in session.execute(
                select(UserEventDay.user_id, UserEventDay.event, func.sum(UserEventDay.count))
                .where(UserEventDay.user_id.in_([p.id for p in people]))
                .group_by(UserEventDay.user_id, UserEventDay.event)
                .order_by(func.sum(UserEventDay.count).desc())
            ):
                did[uid].append((event, int(count)))
    name = account.name or account.external_id
    lines = [f"{name} is now a paying customer. What the trial showed:"]
    features_used = [f for f in defs.key_features if used.get(f)]
    features_unused = [f for f in defs.key_features if not used.get(f)]
    if features_used:
        lines.append("Used: " + ", ".join(f"{f} ({int(used[f])}x)" for f in features_used) + ".")
    if features_unused:
        lines.append("Not used yet: " + ", ".join(features_unused) + ".")
    if people:
        lines.append("Who engaged:")
        for person in people:
            label = person.name or person.email or f"user {person.id}"
            top = ", ".join(f"{event} {count}x" for event, count in did[person.id][:4])
            lines.append(
                f"- {label} (engagement {person.engagement_score:.0f}): {top or 'no activity'}"
            )
    done = set((score.steps_done or {}).get("done", []))
    left = [s.label for s in defs.account_checklist_paid.steps if s.key not in done]
    if left:
        lines.append("Left to onboard: " + "; ".join(left) + ".")
    else:
        lines.append("Every onboarding step is done.")
    lines.append(
        f"Activation {score.activation_rate:.0f}%, engagement {score.engagement_score:.0f} "
        f"({score.engagement_segment}), {score.active_users} of {score.total_users} users active."
    )
    return "\n".join(lines)


def write_handoffs(db: Database, tenant_id: int, connector: Connector, now: dt.datetime) -> int:
    """Record every synced account's stage; write the handoff note for those that went from
    trial to paid. Returns how many notes were written."""
    defs = current_definitions(db, tenant_id).definitions
    due: list[tuple[int, str, str | None]] = []
    with db.tenant_transaction(tenant_id) as session:
        known = {h.account_id: h for h in session.scalars(select(Handoff))}
        for account_id, traits, crm_id, fields in session.execute(
            select(Account.id, Account.traits, CrmRecord.crm_id, CrmRecord.crm_fields)
            .join(AccountScore, AccountScore.account_id == Account.id)
            .join(
                CrmRecord,
                (CrmRecord.subject_id == Account.id) & (CrmRecord.object_type == "account"),
            )
            .where(CrmRecord.crm_id.is_not(None))
        ):
            stage = account_stage(traits, defs)
            row = known.get(account_id)
            if row is None:
                session.add(Handoff(tenant_id=tenant_id, account_id=account_id, stage=stage))
                continue
            if row.stage == "trial" and stage == "paid" and row.written_at is None:
                row.written_at = now  # claimed: the note follows
                due.append((account_id, crm_id, (fields or {}).get("owner_id")))
            row.stage = stage
    written = 0
    for account_id, crm_id, owner in due:
        note_id = connector.create_note(
            crm_id, TITLE, handoff_text(db, tenant_id, account_id, defs), owner
        )
        with db.tenant_transaction(tenant_id) as session:
            session.get(Handoff, (tenant_id, account_id)).note_id = note_id
        written += 1
        log.info("tenant %s: handoff note %s for account %s", tenant_id, note_id, account_id)
    return written
