"""Realistic product events, shaped exactly like segment-analytics-python sends them.

Used by the demo and the benchmarks. Deterministic for a given ``random.Random`` and ``now``.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

# (event, relative frequency): logging in is common, inviting a teammate rare.
PRODUCT_EVENTS = (
    ("Logged In", 30),
    ("Report Created", 12),
    ("Dashboard Viewed", 25),
    ("Dashboard Shared", 4),
    ("Teammate Invited", 2),
    ("Integration Connected", 1),
    ("Export Downloaded", 5),
)

_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


@dataclass(frozen=True)
class SampleAccount:
    group_id: str
    name: str
    domain: str
    employees: int
    plan: str
    user_ids: tuple[str, ...]
    # Busy a week ago, nearly silent since: its engagement drops (a CS task when it pays).
    fading: bool = False


DEMO_ACCOUNTS = (
    SampleAccount("acct-acme", "Acme Analytics", "acme.example", 120, "trial", ("ada", "grace")),
    SampleAccount(
        "acct-globex", "Globex", "globex.example", 2400, "trial", ("hank", "marge", "lisa")
    ),
    SampleAccount("acct-initech", "Initech", "initech.example", 18, "paid", ("peter",)),
    SampleAccount(
        "acct-umbrella", "Umbrella", "umbrella.example", 300, "paid", ("alice", "carl"), True
    ),
)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _context(rng: random.Random, group_id: str | None = None) -> dict:
    context = {
        "library": {"name": "analytics-python", "version": "2.3.4"},
        "ip": f"203.0.113.{rng.randint(1, 254)}",
        "userAgent": _USER_AGENT,
    }
    if group_id:
        context["groupId"] = group_id
    return context


def _message_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def identify(rng: random.Random, user_id: str, domain: str, at: dt.datetime) -> dict:
    return {
        "type": "identify",
        "userId": user_id,
        "traits": {
            "email": f"{user_id}@{domain}",
            "name": user_id.capitalize(),
            "role": rng.choice(["admin", "member", "member"]),
        },
        "context": _context(rng),
        "timestamp": _iso(at),
        "messageId": _message_id(rng),
        "integrations": {},
        "anonymousId": None,
    }


def group(rng: random.Random, account: SampleAccount, user_id: str, at: dt.datetime) -> dict:
    return {
        "type": "group",
        "userId": user_id,
        "groupId": account.group_id,
        "traits": {
            "name": account.name,
            "website": f"https://www.{account.domain}",
            "employees": account.employees,
            "plan": account.plan,
        },
        "context": _context(rng),
        "timestamp": _iso(at),
        "messageId": _message_id(rng),
        "integrations": {},
        "anonymousId": None,
    }


def track(
    rng: random.Random, user_id: str, group_id: str | None, event: str, at: dt.datetime
) -> dict:
    return {
        "type": "track",
        "userId": user_id,
        "event": event,
        "properties": {
            "path": f"/app/{event.lower().replace(' ', '-')}",
            "durationMs": rng.randint(50, 5000),
            "source": rng.choice(["web", "web", "api"]),
        },
        "context": _context(rng, group_id),
        "timestamp": _iso(at),
        "messageId": _message_id(rng),
        "integrations": {},
        "anonymousId": None,
    }


def random_event(rng: random.Random) -> str:
    names, weights = zip(*PRODUCT_EVENTS, strict=True)
    return rng.choices(names, weights=weights)[0]


def demo_messages(rng: random.Random, now: dt.datetime, days: int = 14) -> list[dict]:
    """Identify and group every demo user, then a fortnight of usage, oldest first."""
    messages: list[dict] = []
    start = now - dt.timedelta(days=days)
    for account in DEMO_ACCOUNTS:
        for user_id in account.user_ids:
            messages.append(identify(rng, user_id, account.domain, start))
            messages.append(group(rng, account, user_id, start))
    events = []
    for account in DEMO_ACCOUNTS:
        activity = {"trial": 6, "paid": 3}[account.plan] * (2 if account.employees < 1000 else 1)
        for user_id in account.user_ids:
            if account.fading:
                # Two busy weeks' worth in the first week, one login in the last.
                for _ in range(activity * days):
                    at = start + dt.timedelta(seconds=rng.uniform(60, (days - 7) * 86400))
                    events.append(track(rng, user_id, account.group_id, random_event(rng), at))
                at = now - dt.timedelta(days=3, seconds=rng.uniform(0, 3600))
                events.append(track(rng, user_id, account.group_id, "Logged In", at))
                continue
            for _ in range(activity * days // 2):
                at = start + dt.timedelta(seconds=rng.uniform(60, days * 86400 - 60))
                events.append(track(rng, user_id, account.group_id, random_event(rng), at))
    events.sort(key=lambda m: m["timestamp"])
    return messages + events


def load_batches(
    rng: random.Random, now: dt.datetime, accounts: int, users_per_account: int, batch_size: int
) -> Iterator[list[dict]]:
    """Endless batches of live track events over many accounts and users (benchmark load):
    stamped within the last seconds, as an SDK flushing its queue sends them."""
    while True:
        batch = []
        for _ in range(batch_size):
            account = rng.randrange(accounts)
            user = f"user-{account}-{rng.randrange(users_per_account)}"
            at = now - dt.timedelta(seconds=rng.uniform(0, 10))
            batch.append(track(rng, user, f"acct-{account}", random_event(rng), at))
        yield batch
