"""Privacy deletion: forget a person (a product user) on request, everywhere the app keeps them.

Asked through the admin API (by user id or email) or by HubSpot's privacy deletion of a
contact (webhook ``contact.privacyDeletion``). Deleted: the user and every identity merged
into it, their raw events, daily rollups (theirs and their share of their accounts'), scores
and score history, activity basis, CRM link, trigger deliveries about them, and rejected
messages that carry their id or email. Their accounts are rescored from what is left (their
basis is dropped and rebuilt). The record in the CRM is the customer's and stays (HubSpot's
own privacy deletion removes it there).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select, update

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
        if not ids:
            return Forgotten(0, 0, 0, 0)
        known = session.execute(
            select(User.external_id, User.anonymous_id, User.email).where(User.id.in_(ids))
        ).all()
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
        markers = {v for row in known for v in row if v}
        rejected = 0
        for marker in markers:
            rejected += session.execute(
                delete(RejectedMessage).where(
                    RejectedMessage.payload_excerpt.contains(marker, autoescape=True)
                ),
                execution_options={"synchronize_session": False},
            ).rowcount
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
    return Forgotten(len(ids), events or 0, len(accounts), rejected)
