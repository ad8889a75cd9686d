"""Store validated messages: events once per messageId, users, accounts, memberships, rollups.

One request is one transaction: the caller answers 200 only after it commits. The work is done
per request in a fixed number of statements (not per message), and rows are always written in
id order so concurrent requests touching the same users and accounts cannot deadlock.

Identity rules:
* A message with a ``userId`` belongs to the user with that id. If that user does not exist yet
  but the message's ``anonymousId`` names an anonymous user, that user is claimed (the usual
  sign-up flow); otherwise a user is created.
* ``alias`` merges the user known as ``previousId`` into the ``userId`` user: traits (newest
  wins), memberships, events and rollups move; the old user remains as a pointer so later
  messages with its ids land on the survivor.
* A track/page/screen with ``context.groupId`` (or ``properties.groupId``) counts for that
  account and makes the user a member; without one it counts for the account of the user's
  latest group call (``current_account_id``), if any.
* Traits merge per trait; the value from the newest message wins, whatever order messages arrive.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import bindparam, case, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.bulk import add_account_counts, add_user_counts, dialect_insert, insert_events
from app.db import Database
from app.models import (
    Account,
    AccountMembership,
    RejectedMessage,
    User,
    UTCDateTime,
)
from app.tracking.identity import (
    UserResolver,
    apply_aliases,
    apply_traits,
    sync_account_columns,
    sync_user_columns,
)
from app.tracking.messages import Message, Rejection

log = logging.getLogger(__name__)

ROLLUP_TYPES = ("track",)
# What makes a user or account active (last active, active users): DOMAIN.md "Event".
ACTIVITY_TYPES = ("track", "page", "screen")
LAST_SEEN_RESOLUTION = dt.timedelta(hours=1)
MAX_ATTEMPTS = 4


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    touched_user_ids: set[int] = field(default_factory=set)
    touched_account_ids: set[int] = field(default_factory=set)


def _is_retryable(exc: Exception) -> bool:
    """A unique-key race (two requests creating the same user) or a lock conflict."""
    if isinstance(exc, IntegrityError):
        return True
    if isinstance(exc, OperationalError):
        code = getattr(exc.orig, "sqlstate", None) or ""
        return code in ("40P01", "40001", "55P03") or "locked" in str(exc.orig).lower()
    return False


def ingest(
    db: Database,
    tenant_id: int,
    messages: list[Message],
    rejections: list[Rejection],
    received_at: dt.datetime,
) -> IngestResult:
    """Store one request's messages in one transaction, retrying races a few times."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with db.tenant_transaction(tenant_id) as session:
                return _ingest(session, tenant_id, messages, rejections, received_at)
        except (IntegrityError, OperationalError) as exc:
            if attempt == MAX_ATTEMPTS or not _is_retryable(exc):
                raise
            log.info("tenant %s: ingest attempt %s conflicted, retrying", tenant_id, attempt)
            time.sleep(0.01 * attempt)
    raise AssertionError("unreachable")


def _ingest(
    session: Session,
    tenant_id: int,
    messages: list[Message],
    rejections: list[Rejection],
    received_at: dt.datetime,
) -> IngestResult:
    result = IngestResult(rejected=len(rejections))
    _record_rejections(session, tenant_id, rejections, received_at)

    unique = _unique_by_message_id(messages)
    users = UserResolver(session, tenant_id)
    user_of = users.resolve_all(unique)
    apply_aliases(session, tenant_id, users, unique, user_of)
    account_of, _ = _resolve_accounts(session, tenant_id, unique)
    message_account = _event_accounts(unique, user_of, account_of, users)

    # The insert decides what is new (ON CONFLICT DO NOTHING); everything that counts or
    # overwrites below applies to new messages only, so a retried request changes nothing.
    stored_ids = _insert_events(session, tenant_id, unique, user_of, message_account, received_at)
    stored = [m for m in unique if m.message_id in stored_ids]
    result.stored = len(stored)
    result.duplicates = len(messages) - len(stored)
    if not stored:
        return result

    apply_traits(session, User, "identify", stored, user_of, sync_user_columns, received_at)
    apply_traits(session, Account, "group", stored, account_of, sync_account_columns, received_at)
    _record_memberships(session, tenant_id, stored, user_of, account_of, users)
    _add_rollups(session, tenant_id, stored, user_of, message_account)
    _touch(session, tenant_id, stored, user_of, message_account, users)
    result.touched_user_ids = {user_of[m.message_id] for m in stored}
    result.touched_account_ids = {
        message_account[m.message_id] for m in stored if m.message_id in message_account
    }
    return result


# --- rejections and duplicates ---------------------------------------------------------------


def _record_rejections(
    session: Session, tenant_id: int, rejections: list[Rejection], received_at: dt.datetime
) -> None:
    if not rejections:
        return
    session.connection().execute(
        RejectedMessage.__table__.insert(),
        [
            {
                "tenant_id": tenant_id,
                "received_at": received_at,
                "message_id": r.message_id,
                "errors": r.errors,
                "payload_excerpt": r.excerpt,
            }
            for r in rejections
        ],
    )


def _unique_by_message_id(messages: list[Message]) -> list[Message]:
    """First occurrence of each messageId within the request."""
    seen: set[str] = set()
    unique = []
    for m in messages:
        if m.message_id not in seen:
            seen.add(m.message_id)
            unique.append(m)
    return unique


# --- accounts ------------------------------------------------------------------------------


def _resolve_accounts(
    session: Session, tenant_id: int, messages: list[Message]
) -> tuple[dict[str, int], dict[str, int]]:
    """Account id per message (where it names one) and per group id, creating missing ones."""
    group_ids = sorted({m.group_id for m in messages if m.group_id})
    if not group_ids:
        return {}, {}
    ids = dict(
        session.execute(
            select(Account.external_id, Account.id).where(Account.external_id.in_(group_ids))
        ).all()
    )
    missing = [g for g in group_ids if g not in ids]
    if missing:
        first_seen: dict[str, dt.datetime] = {}
        for m in messages:
            if m.group_id in ids:
                continue
            if m.group_id and (
                m.group_id not in first_seen or m.timestamp < first_seen[m.group_id]
            ):
                first_seen[m.group_id] = m.timestamp
        insert = dialect_insert(session)
        session.connection().execute(
            insert(Account.__table__).on_conflict_do_nothing(),
            [
                {
                    "tenant_id": tenant_id,
                    "external_id": g,
                    "traits": {},
                    "trait_times": {},
                    "first_seen_at": first_seen[g],
                    "last_seen_at": first_seen[g],
                    "changed_at": first_seen[g],
                }
                for g in missing
            ],
        )
        ids.update(
            session.execute(
                select(Account.external_id, Account.id).where(Account.external_id.in_(missing))
            ).all()
        )
    account_of = {m.message_id: ids[m.group_id] for m in messages if m.group_id}
    return account_of, ids


def _latest_group(
    messages: list[Message], user_of: dict[str, int], account_of: dict[str, int]
) -> dict[int, int]:
    """Per user, the account named by their newest message that names one."""
    latest: dict[int, tuple[dt.datetime, int]] = {}
    for m in messages:
        account_id = account_of.get(m.message_id)
        if account_id is None:
            continue
        user_id = user_of[m.message_id]
        if user_id not in latest or m.timestamp >= latest[user_id][0]:
            latest[user_id] = (m.timestamp, account_id)
    return {user_id: account_id for user_id, (_, account_id) in latest.items()}


def _event_accounts(
    messages: list[Message],
    user_of: dict[str, int],
    account_of: dict[str, int],
    users: UserResolver,
) -> dict[str, int]:
    """The account each event counts for: the one it names, else the user's current one."""
    current = {uid: row.current_account_id for uid, row in users.by_id.items()}
    current.update(_latest_group(messages, user_of, account_of))
    message_account: dict[str, int] = {}
    for m in messages:
        if m.type in ("alias", "identify"):
            continue
        account_id = account_of.get(m.message_id) or current.get(user_of[m.message_id])
        if account_id:
            message_account[m.message_id] = account_id
    return message_account


def _record_memberships(
    session: Session,
    tenant_id: int,
    messages: list[Message],
    user_of: dict[str, int],
    account_of: dict[str, int],
    users: UserResolver,
) -> None:
    """Memberships from group calls and group-carrying events, and each user's current account.

    Called with newly stored messages only, so a retried old group call cannot move a user's
    current account back."""
    stored_current = {uid: row.current_account_id for uid, row in users.by_id.items()}
    # A user's current account is one they are a member of already: no insert needed.
    pairs = {
        (account_of[m.message_id], user_of[m.message_id])
        for m in messages
        if m.message_id in account_of
        and stored_current.get(user_of[m.message_id]) != account_of[m.message_id]
    }
    if pairs:
        session.connection().execute(
            dialect_insert(session)(AccountMembership.__table__).on_conflict_do_nothing(),
            [{"tenant_id": tenant_id, "account_id": a, "user_id": u} for a, u in sorted(pairs)],
        )
    changes = [
        {"uid": user_id, "aid": account_id}
        for user_id, account_id in sorted(_latest_group(messages, user_of, account_of).items())
        if stored_current.get(user_id) != account_id
    ]
    if changes:
        table = User.__table__
        session.connection().execute(
            table.update()
            .where(table.c.id == bindparam("uid"), table.c.tenant_id == tenant_id)
            .values(current_account_id=bindparam("aid")),
            changes,
        )


# --- events and rollups --------------------------------------------------------------------


def _insert_events(
    session: Session,
    tenant_id: int,
    messages: list[Message],
    user_of: dict[str, int],
    message_account: dict[str, int],
    received_at: dt.datetime,
) -> set[str]:
    """Insert events; a message stored concurrently by another request is skipped."""
    rows = [
        {
            "message_id": m.message_id,
            "type": m.type,
            "name": m.name[:255] if m.name else None,
            "user_id": user_of[m.message_id],
            "account_id": message_account.get(m.message_id),
            "timestamp": m.timestamp,
            "payload": m.payload,
        }
        for m in messages
    ]
    return insert_events(session, tenant_id, rows, received_at)


def _add_rollups(
    session: Session,
    tenant_id: int,
    messages: list[Message],
    user_of: dict[str, int],
    message_account: dict[str, int],
) -> None:
    user_counts: dict[tuple[int, str, dt.date], int] = defaultdict(int)
    account_counts: dict[tuple[int, str, dt.date, int], int] = defaultdict(int)
    for m in messages:
        if m.type not in ROLLUP_TYPES or not m.name:
            continue
        day = m.timestamp.astimezone(dt.UTC).date()
        user_id = user_of[m.message_id]
        name = m.name[:255]
        user_counts[(user_id, name, day)] += 1
        account_id = message_account.get(m.message_id)
        if account_id:
            account_counts[(account_id, name, day, user_id)] += 1
    add_user_counts(session, tenant_id, user_counts)
    add_account_counts(session, tenant_id, account_counts)


def _touch(
    session: Session,
    tenant_id: int,
    messages: list[Message],
    user_of: dict[str, int],
    message_account: dict[str, int],
    users: UserResolver,
) -> None:
    """Widen first/last seen to the messages' times, and last active to the activity's (only
    ``track``, ``page`` and ``screen``: an ``identify`` or ``group`` call describes someone,
    it does not make them active).

    They are only rewritten when they move by ``LAST_SEEN_RESOLUTION`` or more, so an active user
    costs one row write an hour instead of one per request (a hot row under load).
    """
    user_span: dict[int, tuple[dt.datetime, dt.datetime, dt.datetime | None]] = {}
    account_span: dict[int, tuple[dt.datetime, dt.datetime, dt.datetime | None]] = {}
    for m in messages:
        active = m.timestamp if m.type in ACTIVITY_TYPES else None
        for spans, key in (
            (user_span, user_of[m.message_id]),
            (account_span, message_account.get(m.message_id)),
        ):
            if key:
                first, last, last_active = spans.get(key, (m.timestamp, m.timestamp, None))
                if active is not None and (last_active is None or active > last_active):
                    last_active = active
                spans[key] = (min(first, m.timestamp), max(last, m.timestamp), last_active)
    stored_users = {
        uid: (row.first_seen_at, row.last_seen_at, row.last_active_at)
        for uid, row in users.by_id.items()
    }
    stored_accounts = {}
    if account_span:
        stored_accounts = {
            aid: (first, last, last_active)
            for aid, first, last, last_active in session.execute(
                select(
                    Account.id, Account.first_seen_at, Account.last_seen_at, Account.last_active_at
                ).where(Account.id.in_(account_span))
            )
        }
    never = dt.datetime.min.replace(tzinfo=dt.UTC)
    for model, spans, stored in (
        (User, user_span, stored_users),
        (Account, account_span, stored_accounts),
    ):
        changes = []
        for rid, (first, last, last_active) in sorted(spans.items()):
            if rid not in stored:
                continue
            stored_first, stored_last, stored_active = stored[rid]
            moved_active = last_active is not None and (
                stored_active is None or last_active >= stored_active + LAST_SEEN_RESOLUTION
            )
            if (
                first <= stored_first - LAST_SEEN_RESOLUTION
                or last >= stored_last + LAST_SEEN_RESOLUTION
                or moved_active
            ):
                changes.append(
                    {
                        "rid": rid,
                        "first": min(first, stored_first),
                        "last": max(last, stored_last),
                        "active": max(last_active or never, stored_active or never),
                    }
                )
        if changes:
            table = model.__table__
            first_at = bindparam("first", type_=UTCDateTime())
            last_at = bindparam("last", type_=UTCDateTime())
            active_at = bindparam("active", type_=UTCDateTime())
            # Guarded in SQL too: a concurrent request may have moved the row since we read it.
            session.connection().execute(
                table.update()
                .where(table.c.id == bindparam("rid"), table.c.tenant_id == tenant_id)
                .values(
                    first_seen_at=case(
                        (table.c.first_seen_at > first_at, first_at),
                        else_=table.c.first_seen_at,
                    ),
                    last_seen_at=case(
                        (table.c.last_seen_at < last_at, last_at), else_=table.c.last_seen_at
                    ),
                    last_active_at=case(
                        (active_at == never, table.c.last_active_at),
                        (table.c.last_active_at.is_(None), active_at),
                        (table.c.last_active_at < active_at, active_at),
                        else_=table.c.last_active_at,
                    ),
                ),
                changes,
            )
