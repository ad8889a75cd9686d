"""Product events as a Segment SDK sends them, for a tenant scored at ``NOW``: a sample trial
account (Acme) and builders for track and group calls."""

from __future__ import annotations

import datetime as dt

from tests.helpers.tracking import post

NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def at(days_ago: float) -> str:
    return (NOW - dt.timedelta(days=days_ago)).isoformat()


def ev(user, event, group, days_ago=1, n=1):
    return [
        {
            "type": "track",
            "userId": user,
            "event": event,
            "context": {"groupId": group},
            "timestamp": at(days_ago),
        }
        for _ in range(n)
    ]


def group(user, group_id, days_ago=20, **traits):
    return {
        "type": "group",
        "userId": user,
        "groupId": group_id,
        "traits": traits,
        "timestamp": at(days_ago),
    }


def send(client, key, messages):
    for start in range(0, len(messages), 100):
        chunk = messages[start : start + 100]
        # messageIds: generated from content + timestamp, so vary by position to keep them unique
        for i, m in enumerate(chunk):
            m.setdefault(
                "messageId", f"{m['type']}-{m.get('userId')}-{m.get('event')}-{start + i}-{id(m)}"
            )
        assert post(client, "batch", {"batch": chunk}, key).status_code == 200


def acme_trial(client, key):
    """Acme: a mid-size trial that did 3 of the 5 default trial steps."""
    send(
        client,
        key,
        [
            group("ada", "acme", plan="trial", employees=120, name="Acme"),
            group("bob", "acme"),
            *ev("ada", "Report Created", "acme", n=2),
            *ev("ada", "Teammate Invited", "acme", n=3),
            *ev("bob", "Dashboard Shared", "acme"),
            *ev("bob", "Logged In", "acme", n=4),
        ],
    )
