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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import bindparam, case, delete, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.bulk import add_account_counts, add_user_counts, dialect_insert, insert_events
from app.db import Database
from app.models import (
    Account,
    AccountEventDay,
    AccountMembership,
    Event,
    IngestWindow,
    RejectedMessage,
    User,
    UserEventDay,
    UserScore,
    UTCDateTime,
)
from app.scores import activity_basis
from app.tracking.messages import Message, Rejection

log = logging.getLogger(__name__)

ROLLUP_TYPES = ("track",)
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
    users = _UserResolver(session, tenant_id)
    user_of = users.resolve_all(unique)
    _apply_aliases(session, tenant_id, users, unique, user_of)
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

    _apply_traits(session, User, "identify", stored, user_of, _sync_user_columns, received_at)
    _apply_traits(session, Account, "group", stored, account_of, _sync_account_columns, received_at)
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


# --- users ---------------------------------------------------------------------------------


@dataclass
class _UserRow:
    id: int
    external_id: str | None
    anonymous_id: str | None
    merged_into_id: int | None
    current_account_id: int | None
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime


class _UserResolver:
    """Finds or creates the users of one request's (userId, anonymousId) pairs.

    New users are inserted in one statement with ON CONFLICT DO NOTHING, in key order, and read
    back: a user created meanwhile by a concurrent request is simply found, never an error.
    """

    def __init__(self, session: Session, tenant_id: int):
        self.session = session
        self.tenant_id = tenant_id
        self.by_external: dict[str, _UserRow] = {}
        self.by_anonymous: dict[str, _UserRow] = {}
        self.by_id: dict[int, _UserRow] = {}

    _COLUMNS = (
        User.id,
        User.external_id,
        User.anonymous_id,
        User.merged_into_id,
        User.current_account_id,
        User.first_seen_at,
        User.last_seen_at,
    )

    def _remember(self, row: _UserRow) -> _UserRow:
        self.by_id[row.id] = row
        if row.external_id:
            self.by_external[row.external_id] = row
        if row.anonymous_id:
            self.by_anonymous[row.anonymous_id] = row
        return row

    def load(self, external_ids: Iterable[str | None], anonymous_ids: Iterable[str | None]) -> None:
        ext = {e for e in external_ids if e} - self.by_external.keys()
        anon = {a for a in anonymous_ids if a} - self.by_anonymous.keys()
        conditions = []
        if ext:
            conditions.append(User.external_id.in_(ext))
        if anon:
            conditions.append(User.anonymous_id.in_(anon))
        if conditions:
            for row in self.session.execute(select(*self._COLUMNS).where(or_(*conditions))):
                self._remember(_UserRow(*row))

    def _follow(self, row: _UserRow) -> _UserRow:
        hops = 0
        while row.merged_into_id is not None and hops < 10:
            target = self.by_id.get(row.merged_into_id)
            if target is None:
                found = self.session.execute(
                    select(*self._COLUMNS).where(User.id == row.merged_into_id)
                ).first()
                if found is None:
                    break
                target = self._remember(_UserRow(*found))
            row = target
            hops += 1
        return row

    def _create_missing(self, wanted: list[tuple[str | None, str | None, dt.datetime]]) -> None:
        """Insert users not found; a pair whose anonymousId was taken meanwhile is created
        without it on the second pass."""
        for keep_anonymous in (True, False):
            rows = {}
            for external_id, anonymous_id, seen_at in wanted:
                if external_id and external_id in self.by_external:
                    continue
                if not external_id and anonymous_id in self.by_anonymous:
                    continue
                key = external_id or f"anon:{anonymous_id}"
                anonymous = anonymous_id if keep_anonymous or not external_id else None
                if anonymous and anonymous in self.by_anonymous:
                    anonymous = None
                previous = rows.get(key)
                if previous is None or seen_at < previous["first_seen_at"]:
                    rows[key] = {
                        "tenant_id": self.tenant_id,
                        "external_id": external_id,
                        "anonymous_id": anonymous,
                        "traits": {},
                        "trait_times": {},
                        "first_seen_at": seen_at,
                        "last_seen_at": seen_at,
                        "changed_at": seen_at,
                    }
            if not rows:
                return
            insert = dialect_insert(self.session)
            self.session.connection().execute(
                insert(User.__table__).on_conflict_do_nothing(), [rows[k] for k in sorted(rows)]
            )
            self.load(
                [r["external_id"] for r in rows.values()],
                [r["anonymous_id"] for r in rows.values() if not r["external_id"]],
            )

    def resolve_all(self, messages: list[Message]) -> dict[str, int]:
        """The user id of every message."""
        self.load([m.user_id for m in messages], [m.anonymous_id for m in messages])
        wanted = []
        for m in messages:
            if m.user_id:
                anon = self.by_anonymous.get(m.anonymous_id) if m.anonymous_id else None
                known = self.by_external.get(m.user_id)
                unclaimed = anon is not None and anon.external_id is None
                if known is None and unclaimed and anon.merged_into_id is None:
                    # Signed up after browsing anonymously: the anonymous user gets the userId.
                    self.session.execute(
                        update(User).where(User.id == anon.id).values(external_id=m.user_id)
                    )
                    anon.external_id = m.user_id
                    self.by_external[m.user_id] = anon
                elif known is not None and unclaimed and anon.merged_into_id is None:
                    # Signed in after browsing anonymously: one person, one user.
                    target = self._follow(known)
                    merge_users(self.session, self.tenant_id, anon.id, target.id)
                    anon.merged_into_id = target.id
                elif known is None:
                    wanted.append((m.user_id, m.anonymous_id, m.timestamp))
            elif m.anonymous_id not in self.by_anonymous:
                wanted.append((None, m.anonymous_id, m.timestamp))
        self._create_missing(wanted)
        resolved = {}
        for m in messages:
            row = self.by_external[m.user_id] if m.user_id else self.by_anonymous[m.anonymous_id]
            resolved[m.message_id] = self._follow(row).id
        return resolved


def _apply_aliases(
    session: Session,
    tenant_id: int,
    users: _UserResolver,
    messages: list[Message],
    user_of: dict[str, int],
) -> None:
    aliases = [m for m in messages if m.type == "alias"]
    if not aliases:
        return
    users.load([m.previous_id for m in aliases], [m.previous_id for m in aliases])
    remap: dict[int, int] = {}
    for m in sorted(aliases, key=lambda m: m.timestamp):
        survivor = user_of[m.message_id]
        previous = users.by_external.get(m.previous_id) or users.by_anonymous.get(m.previous_id)
        if previous is None:
            continue  # nothing known under the old id: later messages resolve to the survivor
        previous = users._follow(previous)
        if previous.id == survivor:
            continue
        merge_users(session, tenant_id, previous.id, survivor)
        previous.merged_into_id = survivor
        remap[previous.id] = survivor
    if remap:
        for message_id, user_id in list(user_of.items()):
            while user_id in remap:
                user_id = remap[user_id]
            user_of[message_id] = user_id


def merge_users(session: Session, tenant_id: int, source_id: int, target_id: int) -> None:
    """Move everything of ``source_id`` onto ``target_id`` and leave a pointer behind."""
    source = session.get(User, source_id, with_for_update=True)
    target = session.get(User, target_id, with_for_update=True)
    traits, times, _ = merge_trait_maps(
        source.traits or {}, source.trait_times or {}, target.traits or {}, target.trait_times or {}
    )
    target.traits, target.trait_times = traits, times
    _sync_user_columns(target)
    target.first_seen_at = min(target.first_seen_at, source.first_seen_at)
    target.last_seen_at = max(target.last_seen_at, source.last_seen_at)
    target.current_account_id = target.current_account_id or source.current_account_id
    source.merged_into_id = target_id
    # The unique ids move with the identity: later messages by either id find the survivor.
    if target.anonymous_id is None and source.anonymous_id is not None:
        anonymous_id, source.anonymous_id = source.anonymous_id, None
        session.flush()
        target.anonymous_id = anonymous_id
    session.flush()

    insert = dialect_insert(session)
    members = session.scalars(
        select(AccountMembership.account_id).where(AccountMembership.user_id == source_id)
    ).all()
    if members:
        session.execute(
            insert(AccountMembership)
            .values(
                [{"tenant_id": tenant_id, "account_id": a, "user_id": target_id} for a in members]
            )
            .on_conflict_do_nothing()
        )
        session.execute(delete(AccountMembership).where(AccountMembership.user_id == source_id))
    session.execute(update(Event).where(Event.user_id == source_id).values(user_id=target_id))

    user_days = session.execute(
        select(UserEventDay.event, UserEventDay.day, UserEventDay.count).where(
            UserEventDay.user_id == source_id
        )
    ).all()
    add_user_counts(session, tenant_id, {(target_id, e, d): c for e, d, c in user_days})
    session.execute(delete(UserEventDay).where(UserEventDay.user_id == source_id))
    account_days = session.execute(
        select(
            AccountEventDay.account_id,
            AccountEventDay.event,
            AccountEventDay.day,
            AccountEventDay.count,
        ).where(AccountEventDay.user_id == source_id)
    ).all()
    add_account_counts(session, tenant_id, {(a, e, d, target_id): c for a, e, d, c in account_days})
    session.execute(delete(AccountEventDay).where(AccountEventDay.user_id == source_id))
    # The source is no user of its own any more: no score of its own either.
    session.execute(delete(UserScore).where(UserScore.user_id == source_id))
    # Their past changed (counts moved, two users became one): scoring rebuilds their basis.
    activity_basis.forget(
        session, tenant_id, [source_id, target_id], {a for a, _, _, _ in account_days}
    )


# --- traits --------------------------------------------------------------------------------


def merge_trait_maps(
    traits: dict[str, Any],
    times: dict[str, str],
    incoming: dict[str, Any],
    incoming_times: dict[str, str],
) -> tuple[dict[str, Any], dict[str, str], bool]:
    """Per trait, the value set at the later time wins (ties: the incoming value)."""
    merged, merged_times, changed = dict(traits), dict(times), False
    for key, value in incoming.items():
        at = incoming_times[key]
        if key not in merged_times or at >= merged_times[key]:
            if merged.get(key) != value or merged_times.get(key) != at:
                changed = True
            merged[key] = value
            merged_times[key] = at
    return merged, merged_times, changed


def _stamp(message: Message) -> str:
    # UTC ISO-8601 with a fixed format, so that string order is time order.
    return message.timestamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _incoming_traits(messages: list[Message]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    times: dict[str, str] = {}
    for m in sorted(messages, key=lambda m: m.timestamp):
        for key, value in m.traits.items():
            values[key] = value
            times[key] = _stamp(m)
    return values, times


def _sync_user_columns(user: User) -> None:
    traits = user.traits or {}
    email = traits.get("email")
    user.email = email.strip().lower()[:320] if isinstance(email, str) and email.strip() else None
    name = traits.get("name")
    if not isinstance(name, str) or not name.strip():
        parts = [traits.get("firstName") or traits.get("first_name"), traits.get("lastName")]
        name = " ".join(p for p in parts if isinstance(p, str) and p.strip())
    user.name = name.strip()[:255] if isinstance(name, str) and name.strip() else None


def domain_of(value: Any) -> str | None:
    """``https://www.Acme.com/about`` → ``acme.com``: what CRM matching by domain compares."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower()
    if "@" in text and "/" not in text:
        text = text.rsplit("@", 1)[1]
    host = urlsplit(text if "//" in text else "//" + text).hostname or ""
    host = host.removeprefix("www.")
    return host[:255] or None


def _sync_account_columns(account: Account) -> None:
    traits = account.traits or {}
    name = traits.get("name")
    account.name = name.strip()[:255] if isinstance(name, str) and name.strip() else account.name
    for key in ("domain", "website"):
        domain = domain_of(traits.get(key))
        if domain:
            account.domain = domain
            break


def _apply_traits(
    session: Session,
    model,
    message_type: str,
    messages: list[Message],
    owner_of: dict[str, int],
    sync_columns,
    now: dt.datetime,
) -> None:
    """Merge the traits of ``message_type`` messages into their users or accounts, newest value
    per trait winning. Rows are locked in id order (FOR UPDATE) so concurrent merges serialise."""
    by_owner: dict[int, list[Message]] = defaultdict(list)
    for m in messages:
        if m.type == message_type and m.traits:
            by_owner[owner_of[m.message_id]].append(m)
    if not by_owner:
        return
    rows = session.scalars(
        select(model).where(model.id.in_(by_owner)).order_by(model.id).with_for_update()
    )
    for row in rows:
        values, times = _incoming_traits(by_owner[row.id])
        traits, trait_times, changed = merge_trait_maps(
            row.traits or {}, row.trait_times or {}, values, times
        )
        if changed:
            row.traits, row.trait_times = traits, trait_times
            row.changed_at = now
            sync_columns(row)


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
    users: _UserResolver,
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
    users: _UserResolver,
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
    users: _UserResolver,
) -> None:
    """Widen first/last seen to the events' times.

    They are only rewritten when they move by ``LAST_SEEN_RESOLUTION`` or more, so an active user
    costs one row write an hour instead of one per request (a hot row under load).
    """
    user_span: dict[int, tuple[dt.datetime, dt.datetime]] = {}
    account_span: dict[int, tuple[dt.datetime, dt.datetime]] = {}
    for m in messages:
        for spans, key in (
            (user_span, user_of[m.message_id]),
            (account_span, message_account.get(m.message_id)),
        ):
            if key:
                first, last = spans.get(key, (m.timestamp, m.timestamp))
                spans[key] = (min(first, m.timestamp), max(last, m.timestamp))
    stored_users = {uid: (row.first_seen_at, row.last_seen_at) for uid, row in users.by_id.items()}
    stored_accounts = {}
    if account_span:
        stored_accounts = {
            aid: (first, last)
            for aid, first, last in session.execute(
                select(Account.id, Account.first_seen_at, Account.last_seen_at).where(
                    Account.id.in_(account_span)
                )
            )
        }
    for model, spans, stored in (
        (User, user_span, stored_users),
        (Account, account_span, stored_accounts),
    ):
        changes = []
        for rid, (first, last) in sorted(spans.items()):
            if rid not in stored:
                continue
            stored_first, stored_last = stored[rid]
            if (
                first <= stored_first - LAST_SEEN_RESOLUTION
                or last >= stored_last + LAST_SEEN_RESOLUTION
            ):
                changes.append(
                    {
                        "rid": rid,
                        "first": min(first, stored_first),
                        "last": max(last, stored_last),
                    }
                )
        if changes:
            table = model.__table__
            first_at = bindparam("first", type_=UTCDateTime())
            last_at = bindparam("last", type_=UTCDateTime())
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
                ),
                changes,
            )


INGEST_WINDOW_SECONDS = 10


def admit(db: Database, key_id: int, messages: int, limit: int, now: dt.datetime) -> float | None:
    """Count ``messages`` against the key's current 10-second window (one upsert, shared by
    every web process). Returns None when they fit, else the seconds until the window ends
    (the request is refused and not counted)."""
    if limit <= 0:
        return None
    moment = now.timestamp()
    window = int(moment // INGEST_WINDOW_SECONDS) * INGEST_WINDOW_SECONDS
    with db.system_transaction() as session:
        table = IngestWindow.__table__
        statement = dialect_insert(session)(table).values(
            key_id=key_id, window_start=window, messages=messages
        )
        statement = statement.on_conflict_do_update(
            index_elements=["key_id", "window_start"],
            set_={"messages": table.c.messages + messages},
        ).returning(table.c.messages)
        total = session.execute(statement).scalar_one()
        if total <= limit:
            return None
        session.execute(
            table.update()
            .where(table.c.key_id == key_id, table.c.window_start == window)
            .values(messages=table.c.messages - messages)
        )
    return max(1.0, window + INGEST_WINDOW_SECONDS - moment)


def forget_ingest_windows(db: Database, now: dt.datetime) -> int:
    """Drop the windows that ended (the worker's hourly clean-up)."""
    current = int(now.timestamp() // INGEST_WINDOW_SECONDS) * INGEST_WINDOW_SECONDS
    with db.system_transaction() as session:
        result = session.execute(
            IngestWindow.__table__.delete().where(IngestWindow.window_start < current)
        )
        return result.rowcount or 0
