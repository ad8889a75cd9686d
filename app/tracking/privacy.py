"""Privacy deletion: forget a person (a product user) on request, everywhere the app keeps them.

Asked through the admin API (by user id or email) or by HubSpot's privacy deletion of a
contact (webhook ``contact.privacyDeletion``). Deleted: the user and every identity merged
into it, their raw events, daily rollups (theirs and their share of their accounts'), scores
and score history, activity basis, CRM link, trigger deliveries about them, and rejected
messages that carry their id or email. Their accounts are rescored from what is left (their
basis is dropped and rebuilt). Also: rejected messages that name the person even when no user
was ever stored for them, and the person's email or name among their accounts' traits (a
``group`` call may carry a contact's email). Emails match whatever their case, on every
database. The record in the CRM is the customer's and stays (HubSpot's own privacy deletion
removes it there): the result names the CRM records the app had written to, so the caller can
clear the app's own properties on them (``app.sync.lifecycle.clear_app_properties``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass

from sqlalchemy import String, cast, delete, func, or_, select, update

from app.db import Database
from app.models import (
    Account,
    AccountMembership,
    CrmRecord,
    Delivery,
    Event,
    RejectedMessage,
    ScoreHistory,
    User,
)
from app.scores import activity_basis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Forgotten:
    users: int
    events: int
    accounts_rescored: int
    rejected_messages: int
    account_traits_removed: int = 0
    # The CRM records (crm id, the app's properties written to it) that were the person's.
    crm_records: tuple[tuple[str, tuple[str, ...]], ...] = ()


def _forget_rejected(session, markers: set[str]) -> int:
    """Rejected messages whose excerpt (the message's JSON) holds any marker (ids, emails) as
    a whole value, whatever its case."""
    deleted = 0
    for marker in sorted(markers):
        quoted = json.dumps(marker).lower()  # as it appears in the JSON: "ada@acme.example"
        deleted += session.execute(
            delete(RejectedMessage).where(
                func.lower(RejectedMessage.payload_excerpt).contains(quoted, autoescape=True)
            ),
            execution_options={"synchronize_session": False},
        ).rowcount
    return deleted


def _forget_in_account_traits(session, emails: set[str], names: set[str], now: dt.datetime) -> int:
    """Remove account traits whose value is the person's email (any case) or name."""
    emails = {e.lower() for e in emails}
    removed = 0
    for marker in sorted(emails | names):
        rows = session.scalars(
            select(Account).where(
                func.lower(cast(Account.traits, String)).contains(marker.lower(), autoescape=True)
            )
        ).all()
        for account in rows:
            kept = {
                k: v
                for k, v in (account.traits or {}).items()
                if not (isinstance(v, str) and (v.strip().lower() in emails or v.strip() in names))
            }
            if len(kept) != len(account.traits or {}):
                removed += len(account.traits) - len(kept)
                account.traits = kept
                account.changed_at = now
    return removed


def forget_user(
    db: Database,
    tenant_id: int,
    now: dt.datetime,
    external_id: str | None = None,
    email: str | None = None,
    crm_id: str | None = None,
) -> Forgotten:
    with db.tenant_transaction(tenant_id) as session:
        conditions = []
        if external_id:
            conditions.append(User.external_id == external_id)
        if email:
            conditions.append(func.lower(User.email) == email.strip().lower())
        if crm_id:
            conditions.append(
                User.id.in_(
                    select(CrmRecord.subject_id).where(
                        CrmRecord.object_type == "user", CrmRecord.crm_id == crm_id
                    )
                )
            )
        if not conditions:
            raise ValueError("name the person: a user id, an email or a CRM id")
        ids = set(session.scalars(select(User.id).where(or_(*conditions))))
        # Identities merged into them (aliases, anonymous ids) are the same person.
        frontier = set(ids)
        while frontier:
            frontier = (
                set(session.scalars(select(User.id).where(User.merged_into_id.in_(frontier)))) - ids
            )
            ids |= frontier
        asked = {v.strip() for v in (external_id, email) if v and v.strip()}
        if not ids:
            # Never stored as a user, but maybe among the rejected messages.
            return Forgotten(0, 0, 0, _forget_rejected(session, asked))
        known = session.execute(
            select(User.external_id, User.anonymous_id, User.email, User.name).where(
                User.id.in_(ids)
            )
        ).all()
        crm_records = tuple(
            (crm_id, tuple(sorted(k for k in (pushed or {}) if not k.startswith("__"))))
            for crm_id, pushed in session.execute(
                select(CrmRecord.crm_id, CrmRecord.pushed).where(
                    CrmRecord.object_type == "user",
                    CrmRecord.subject_id.in_(ids),
                    CrmRecord.crm_id.is_not(None),
                )
            )
        )
        accounts = set(
            session.scalars(
                select(AccountMembership.account_id).where(AccountMembership.user_id.in_(ids))
            )
        )
        events = session.execute(
            delete(Event).where(Event.user_id.in_(ids)),
            execution_options={"synchronize_session": False},
        ).rowcount
        for statement in (
            delete(ScoreHistory).where(
                ScoreHistory.subject == "u", ScoreHistory.subject_id.in_(ids)
            ),
            delete(CrmRecord).where(CrmRecord.object_type == "user", CrmRecord.subject_id.in_(ids)),
            delete(Delivery).where(Delivery.subject == "user", Delivery.subject_id.in_(ids)),
        ):
            session.execute(statement, execution_options={"synchronize_session": False})
        markers = {v for row in known for v in row[:3] if v} | asked
        rejected = _forget_rejected(session, markers)
        emails = {row.email for row in known if row.email} | ({email.strip()} if email else set())
        names = {row.name.strip() for row in known if row.name and row.name.strip()}
        traits_removed = _forget_in_account_traits(session, emails, names, now)
        activity_basis.forget(session, tenant_id, ids, accounts)
        # Rollups, memberships and scores go with the user rows (ON DELETE CASCADE).
        session.execute(
            update(User).where(User.id.in_(ids)).values(merged_into_id=None),
            execution_options={"synchronize_session": False},
        )
        session.execute(
            delete(User).where(User.id.in_(ids)), execution_options={"synchronize_session": False}
        )
        if accounts:
            session.execute(
                update(Account).where(Account.id.in_(accounts)).values(changed_at=now),
                execution_options={"synchronize_session": False},
            )
    log.info(
        "tenant %s: privacy deletion of %s user records (%s events), %s accounts to rescore",
        tenant_id,
        len(ids),
        events,
        len(accounts),
    )
    return Forgotten(len(ids), events or 0, len(accounts), rejected, traits_removed, crm_records)
