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
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.db import Database
from app.models import (
    Account,
    AccountEventDay,
    AccountMembership,
    Event,
    RejectedMessage,
    User,
    UserEventDay,
    UTCDateTime,
)
from webhooks.segment import Message, Rejection

log = logging.getLogger(__name__)

ROLLUP_TYPES = ("track",)
INSERT_CHUNK = 500
MAX_ATTEMPTS = 4


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    touched_user_ids: set[int] = field(default_factory=set)
    touched_account_ids: set[int] = field(default_factory=set)


def dialect_insert(session: Session):
    """Dialect branch: ON CONFLICT lives in each dialect's own ``insert``."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


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

    fresh = _drop_known_messages(session, messages)
    result.duplicates = len(messages) - len(fresh)
    if not fresh:
        return result

    users = _UserResolver(session, tenant_id)
    users.preload([m.user_id for m in fresh], [m.anonymous_id for m in fresh])
    user_of = {m.message_id: users.resolve(m.user_id, m.anonymous_id, m.timestamp) for m in fresh}
    _apply_aliases(session, tenant_id, users, fresh, user_of)
    _apply_user_traits(session, fresh, user_of)

    account_of, account_ids = _resolve_accounts(session, tenant_id, fresh)
    _apply_account_traits(session, fresh, account_of)
    message_account = _attach_accounts(session, tenant_id, fresh, user_of, account_of, users)

    stored_ids = _insert_events(session, tenant_id, fresh, user_of, message_account, received_at)
    stored = [m for m in fresh if m.message_id in stored_ids]
    result.stored = len(stored)
    result.duplicates += len(fresh) - len(stored)

    _add_rollups(session, tenant_id, stored, user_of, message_account)
    result.touched_user_ids = {user_of[m.message_id] for m in stored}
    result.touched_account_ids = {
        a for a in (message_account.get(m.message_id) for m in stored) if a
    } | set(account_ids.values())
    _touch(session, tenant_id, stored, user_of, message_account, received_at)
    return result


# --- rejections and duplicates ---------------------------------------------------------------


def _record_rejections(
    session: Session, tenant_id: int, rejections: list[Rejection], received_at: dt.datetime
) -> None:
    if not rejections:
        return
    session.execute(
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


def _drop_known_messages(session: Session, messages: list[Message]) -> list[Message]:
    """Messages not stored before, first occurrence only."""
    seen: set[str] = set()
    unique = []
    for m in messages:
        if m.message_id not in seen:
            seen.add(m.message_id)
            unique.append(m)
    known = set(session.scalars(select(Event.message_id).where(Event.message_id.in_(seen))))
    return [m for m in unique if m.message_id not in known]


# --- users ---------------------------------------------------------------------------------


@dataclass
class _UserRow:
    id: int
    external_id: str | None
    anonymous_id: str | None
    merged_into_id: int | None
    current_account_id: int | None


class _UserResolver:
    """Finds or creates the user of each (userId, anonymousId) pair of one request."""

    def __init__(self, session: Session, tenant_id: int):
        self.session = session
        self.tenant_id = tenant_id
        self.by_external: dict[str, _UserRow] = {}
        self.by_anonymous: dict[str, _UserRow] = {}
        self.by_id: dict[int, _UserRow] = {}
        self._loaded_external: set[str] = set()
        self._loaded_anonymous: set[str] = set()

    def _remember(self, row: _UserRow) -> _UserRow:
        self.by_id[row.id] = row
        if row.external_id:
            self.by_external[row.external_id] = row
        if row.anonymous_id:
            self.by_anonymous[row.anonymous_id] = row
        return row

    def preload(self, external_ids: Iterable[str], anonymous_ids: Iterable[str]) -> None:
        ext = {e for e in external_ids if e} - self._loaded_external
        anon = {a for a in anonymous_ids if a} - self._loaded_anonymous
        if not ext and not anon:
            return
        query = select(
            User.id,
            User.external_id,
            User.anonymous_id,
            User.merged_into_id,
            User.current_account_id,
        )
        conditions = []
        if ext:
            conditions.append(User.external_id.in_(ext))
        if anon:
            conditions.append(User.anonymous_id.in_(anon))
        for row in self.session.execute(query.where(or_(*conditions))):
            self._remember(_UserRow(*row))
        self._loaded_external |= ext
        self._loaded_anonymous |= anon

    def _follow(self, row: _UserRow) -> _UserRow:
        hops = 0
        while row.merged_into_id is not None and hops < 10:
            target = self.by_id.get(row.merged_into_id)
            if target is None:
                found = self.session.execute(
                    select(
                        User.id,
                        User.external_id,
                        User.anonymous_id,
                        User.merged_into_id,
                        User.current_account_id,
                    ).where(User.id == row.merged_into_id)
                ).first()
                if found is None:
                    break
                target = self._remember(_UserRow(*found))
            row = target
            hops += 1
        return row

    def _create(
        self, external_id: str | None, anonymous_id: str | None, seen_at: dt.datetime
    ) -> _UserRow:
        user = User(
            tenant_id=self.tenant_id,
            external_id=external_id,
            anonymous_id=anonymous_id,
            first_seen_at=seen_at,
            last_seen_at=seen_at,
            changed_at=seen_at,
        )
        self.session.add(user)
        self.session.flush()
        return self._remember(_UserRow(user.id, external_id, anonymous_id, None, None))

    def resolve(
        self, external_id: str | None, anonymous_id: str | None, seen_at: dt.datetime
    ) -> int:
        self.preload([external_id] if external_id else [], [anonymous_id] if anonymous_id else [])
        if external_id:
            anon = self.by_anonymous.get(anonymous_id) if anonymous_id else None
            row = self.by_external.get(external_id)
            if row is not None:
                row = self._follow(row)
                if anon is not None and anon.external_id is None and anon.merged_into_id is None:
                    # Signed in after browsing anonymously: one person, one user.
                    merge_users(self.session, self.tenant_id, anon.id, row.id)
                    anon.merged_into_id = row.id
                return row.id
            if anon is not None and anon.external_id is None and anon.merged_into_id is None:
                self.session.execute(
                    update(User).where(User.id == anon.id).values(external_id=external_id)
                )
                anon.external_id = external_id
                self.by_external[external_id] = anon
                return anon.id
            return self._create(external_id, anonymous_id if anon is None else None, seen_at).id
        row = self.by_anonymous.get(anonymous_id)
        if row is not None:
            return self._follow(row).id
        return self._create(None, anonymous_id, seen_at).id


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
    users.preload([m.previous_id for m in aliases], [m.previous_id for m in aliases])
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
    _upsert_counts(
        session,
        UserEventDay,
        [
            {"tenant_id": tenant_id, "user_id": target_id, "event": e, "day": d, "count": c}
            for e, d, c in user_days
        ],
        ["user_id", "event", "day"],
    )
    session.execute(delete(UserEventDay).where(UserEventDay.user_id == source_id))
    account_days = session.execute(
        select(
            AccountEventDay.account_id,
            AccountEventDay.event,
            AccountEventDay.day,
            AccountEventDay.count,
        ).where(AccountEventDay.user_id == source_id)
    ).all()
    _upsert_counts(
        session,
        AccountEventDay,
        [
            {
                "tenant_id": tenant_id,
                "account_id": a,
                "user_id": target_id,
                "event": e,
                "day": d,
                "count": c,
            }
            for a, e, d, c in account_days
        ],
        ["account_id", "event", "day", "user_id"],
    )
    session.execute(delete(AccountEventDay).where(AccountEventDay.user_id == source_id))


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


def _apply_user_traits(session: Session, messages: list[Message], user_of: dict[str, int]) -> None:
    by_user: dict[int, list[Message]] = defaultdict(list)
    for m in messages:
        if m.type == "identify" and m.traits:
            by_user[user_of[m.message_id]].append(m)
    if not by_user:
        return
    rows = session.scalars(
        select(User).where(User.id.in_(by_user)).order_by(User.id).with_for_update()
    )
    for user in rows:
        values, times = _incoming_traits(by_user[user.id])
        traits, trait_times, changed = merge_trait_maps(
            user.traits or {}, user.trait_times or {}, values, times
        )
        if changed:
            user.traits, user.trait_times = traits, trait_times
            _sync_user_columns(user)


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
        first_seen = {}
        for m in messages:
            if m.group_id in missing:
                first_seen[m.group_id] = min(first_seen.get(m.group_id, m.timestamp), m.timestamp)
        for group_id in missing:
            account = Account(
                tenant_id=tenant_id,
                external_id=group_id,
                first_seen_at=first_seen[group_id],
                last_seen_at=first_seen[group_id],
            )
            session.add(account)
        session.flush()
        ids.update(
            session.execute(
                select(Account.external_id, Account.id).where(Account.external_id.in_(missing))
            ).all()
        )
    account_of = {m.message_id: ids[m.group_id] for m in messages if m.group_id}
    return account_of, ids


def _apply_account_traits(
    session: Session, messages: list[Message], account_of: dict[str, int]
) -> None:
    by_account: dict[int, list[Message]] = defaultdict(list)
    for m in messages:
        if m.type == "group" and m.traits:
            by_account[account_of[m.message_id]].append(m)
    if not by_account:
        return
    rows = session.scalars(
        select(Account).where(Account.id.in_(by_account)).order_by(Account.id).with_for_update()
    )
    for account in rows:
        values, times = _incoming_traits(by_account[account.id])
        traits, trait_times, changed = merge_trait_maps(
            account.traits or {}, account.trait_times or {}, values, times
        )
        if changed:
            account.traits, account.trait_times = traits, trait_times
            _sync_account_columns(account)


def _attach_accounts(
    session: Session,
    tenant_id: int,
    messages: list[Message],
    user_of: dict[str, int],
    account_of: dict[str, int],
    users: _UserResolver,
) -> dict[str, int]:
    """Memberships from group calls and group-carrying events; the account of every event."""
    pairs: set[tuple[int, int]] = set()
    latest_group: dict[int, tuple[dt.datetime, int]] = {}
    for m in messages:
        account_id = account_of.get(m.message_id)
        if account_id is None:
            continue
        user_id = user_of[m.message_id]
        pairs.add((account_id, user_id))
        if user_id not in latest_group or m.timestamp >= latest_group[user_id][0]:
            latest_group[user_id] = (m.timestamp, account_id)
    if pairs:
        insert = dialect_insert(session)
        session.execute(
            insert(AccountMembership)
            .values(
                [{"tenant_id": tenant_id, "account_id": a, "user_id": u} for a, u in sorted(pairs)]
            )
            .on_conflict_do_nothing()
        )

    current: dict[int, int | None] = {
        uid: row.current_account_id for uid, row in users.by_id.items()
    }
    changes = []
    for user_id, (_, account_id) in sorted(latest_group.items()):
        if current.get(user_id) != account_id:
            changes.append({"uid": user_id, "aid": account_id})
            current[user_id] = account_id
    if changes:
        table = User.__table__
        session.connection().execute(
            table.update()
            .where(table.c.id == bindparam("uid"), table.c.tenant_id == tenant_id)
            .values(current_account_id=bindparam("aid")),
            changes,
        )

    message_account: dict[str, int] = {}
    for m in messages:
        if m.type in ("alias", "identify"):
            continue
        account_id = account_of.get(m.message_id) or current.get(user_of[m.message_id])
        if account_id:
            message_account[m.message_id] = account_id
    return message_account


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
    insert = dialect_insert(session)
    rows = [
        {
            "tenant_id": tenant_id,
            "message_id": m.message_id,
            "type": m.type,
            "name": m.name[:255] if m.name else None,
            "user_id": user_of[m.message_id],
            "account_id": message_account.get(m.message_id),
            "timestamp": m.timestamp,
            "received_at": received_at,
            "payload": m.payload,
        }
        for m in messages
    ]
    stored: set[str] = set()
    for start in range(0, len(rows), INSERT_CHUNK):
        statement = (
            insert(Event)
            .values(rows[start : start + INSERT_CHUNK])
            .on_conflict_do_nothing(index_elements=["tenant_id", "message_id"])
            .returning(Event.message_id)
        )
        stored.update(session.execute(statement).scalars())
    return stored


def _upsert_counts(session: Session, model, rows: list[dict], keys: list[str]) -> None:
    if not rows:
        return
    insert = dialect_insert(session)
    rows = sorted(rows, key=lambda r: tuple(r[k] for k in keys))
    for start in range(0, len(rows), INSERT_CHUNK):
        statement = insert(model).values(rows[start : start + INSERT_CHUNK])
        statement = statement.on_conflict_do_update(
            index_elements=keys, set_={"count": model.count + statement.excluded.count}
        )
        session.execute(statement)


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
    _upsert_counts(
        session,
        UserEventDay,
        [
            {"tenant_id": tenant_id, "user_id": u, "event": e, "day": d, "count": c}
            for (u, e, d), c in user_counts.items()
        ],
        ["user_id", "event", "day"],
    )
    _upsert_counts(
        session,
        AccountEventDay,
        [
            {
                "tenant_id": tenant_id,
                "account_id": a,
                "event": e,
                "day": d,
                "user_id": u,
                "count": c,
            }
            for (a, e, d, u), c in account_counts.items()
        ],
        ["account_id", "event", "day", "user_id"],
    )


def _touch(
    session: Session,
    tenant_id: int,
    messages: list[Message],
    user_of: dict[str, int],
    message_account: dict[str, int],
    now: dt.datetime,
) -> None:
    """Widen first/last seen to the events' times (never narrowing) and mark the rows changed
    for incremental scoring."""
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
    for model, spans in ((User, user_span), (Account, account_span)):
        if not spans:
            continue
        table = model.__table__
        first = bindparam("first", type_=UTCDateTime())
        last = bindparam("last", type_=UTCDateTime())
        session.connection().execute(
            table.update()
            .where(table.c.id == bindparam("rid"), table.c.tenant_id == tenant_id)
            .values(
                changed_at=now,
                first_seen_at=case(
                    (table.c.first_seen_at > first, first), else_=table.c.first_seen_at
                ),
                last_seen_at=case((table.c.last_seen_at < last, last), else_=table.c.last_seen_at),
            ),
            [
                {"rid": rid, "first": first_at, "last": last_at}
                for rid, (first_at, last_at) in sorted(spans.items())
            ],
        )
