"""Driving the HubSpot app against the local HubSpot sandbox: the admin's install, a sample
account's events, signed webhooks, a dropping account."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import urlsplit

import urllib3
from sqlalchemy import select

from app.models import Account, AccountScore, CrmRecord
from tests.helpers.tracking import post
from webhooks.hubspot import signature_v3

HUB = 777
NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
PUBLIC_URL = "http://pql.test"


def install(client, hub_id: int = HUB):
    started = client.get("/hubspot/install")
    assert started.status_code == 302
    # The admin picks the portal on HubSpot's consent screen.
    chosen = f"{started.headers['Location']}&hub_id={hub_id}"
    consent = urllib3.PoolManager().request("GET", chosen, redirect=False)
    assert consent.status == 302
    back = urlsplit(consent.headers["Location"])
    return client.get(f"{back.path}?{back.query}")


def at(days_ago: float) -> str:
    return (NOW - dt.timedelta(days=days_ago)).isoformat()


def send(client, key, messages):
    for n, m in enumerate(messages):
        m.setdefault("messageId", f"m-{n}-{id(m)}")
        m.setdefault("timestamp", at(1))
    response = post(client, "batch", {"batch": messages}, key)
    assert response.status_code == 200, response.get_data(as_text=True)


def acme(client, key, plan="trial"):
    send(
        client,
        key,
        [
            {
                "type": "group",
                "userId": "ada",
                "groupId": "acme",
                "traits": {"name": "Acme", "website": "https://acme.example", "plan": plan},
            },
            {"type": "identify", "userId": "ada", "traits": {"email": "ada@acme.example"}},
            {"type": "identify", "userId": "bob", "traits": {"email": "bob@acme.example"}},
            {"type": "group", "userId": "bob", "groupId": "acme", "traits": {}},
            *[
                {
                    "type": "track",
                    "userId": "ada",
                    "event": "Report Created",
                    "context": {"groupId": "acme"},
                }
                for _ in range(3)
            ],
            {
                "type": "track",
                "userId": "bob",
                "event": "Logged In",
                "context": {"groupId": "acme"},
            },
        ],
    )


def portal(sandbox):
    return sandbox.sandbox.portals[HUB]


def requests_made(sandbox) -> int:
    return sandbox.sandbox.stats["requests"]


def webhook(client, events, secret="sandbox-secret", timestamp=None):
    body = json.dumps(events).encode()
    timestamp = timestamp or str(int(NOW.timestamp() * 1000))
    signature = signature_v3(secret, "POST", f"{PUBLIC_URL}/hubspot/webhooks", body, timestamp)
    return client.post(
        "/hubspot/webhooks",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-HubSpot-Signature-v3": signature,
            "X-HubSpot-Request-Timestamp": timestamp,
        },
    )


def owner_change(company_id, owner, event_id=1, minutes_ago=1):
    return {
        "eventId": event_id,
        "subscriptionId": 1,
        "portalId": HUB,
        "appId": 1,
        "occurredAt": int((NOW - dt.timedelta(minutes=minutes_ago)).timestamp() * 1000),
        "subscriptionType": "company.propertyChange",
        "attemptNumber": 0,
        "objectId": int(company_id),
        "propertyName": "hubspot_owner_id",
        "propertyValue": owner,
        "changeSource": "CRM_UI",
    }


def account_owner(db, tenant_id):
    with db.tenant_session(tenant_id) as session:
        record = session.scalars(select(CrmRecord).where(CrmRecord.object_type == "account")).one()
        return (record.crm_fields or {}).get("owner_id")


def dropping(db, tenant_id, plan="paid"):
    with db.tenant_transaction(tenant_id) as session:
        account = session.scalars(select(Account)).one()
        account.traits = {**account.traits, "plan": plan}
        score = session.scalars(select(AccountScore)).one()
        score.trend_segment, score.trend_change, score.engagement_score = "Ice Cold", -30.0, 40.0
        score.crm_pending = True
