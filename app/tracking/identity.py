"""Who a message is about: users resolved by id, anonymous id and email (sign-ups claim the
anonymous user, sign-ins and ``alias`` merge), and traits merged per trait with the newest
message winning whatever order messages arrive in."""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from app.bulk import add_account_counts, add_user_counts, dialect_insert
from app.models import (
    Account,
    AccountEventDay,
    AccountMembership,
    Event,
    User,
    UserEventDay,
    UserScore,
)
from app.scores import activity_basis
from app.tracking.messages import Message

log = logging.getLogger(__name__)


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
    last_active_at: dt.datetime | None = None


class UserResolver:
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
        User.last_active_at,
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


def apply_aliases(
    session: Session,
    tenant_id: int,
    users: UserResolver,
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
    sync_user_columns(target)
    target.first_seen_at = min(target.first_seen_at, source.first_seen_at)
    target.last_seen_at = max(target.last_seen_at, source.last_seen_at)
    actives = [t for t in (target.last_active_at, source.last_active_at) if t is not None]
    target.last_active_at = max(actives) if actives else None
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


def sync_user_columns(user: User) -> None:
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
    try:
        host = urlsplit(text if "//" in text else "//" + text).hostname or ""
    except ValueError:  # not a URL at all ("http://[::1", say): no domain to match on
        return None
    host = host.removeprefix("www.")
    return host[:255] or None


def sync_account_columns(account: Account) -> None:
    traits = account.traits or {}
    name = traits.get("name")
    account.name = name.strip()[:255] if isinstance(name, str) and name.strip() else account.name
    for key in ("domain", "website"):
        domain = domain_of(traits.get(key))
        if domain:
            account.domain = domain
            break


def apply_traits(
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
