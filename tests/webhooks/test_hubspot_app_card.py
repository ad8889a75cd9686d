"""The app card's backend: HubSpot-signed fetches (v3, with its URI decoding) for one company or
contact, answered with what the card shows."""

from __future__ import annotations

import datetime as dt

import pytest

from app.scores.scoring_pass import recompute
from app.sync.lifecycle import sync_tenant
from tests.helpers.hubspot import HUB, NOW, PUBLIC_URL, acme, portal
from webhooks.hubspot import signature_v3, signed_uri


@pytest.fixture
def app(hubspot_app):
    return hubspot_app


def fetch(client, query: str, secret: str = "sandbox-secret", signature: str | None = None, at=NOW):
    timestamp = str(int(at.timestamp() * 1000))
    uri = f"{PUBLIC_URL}/hubspot/app-card?{query}"
    signature = signature or signature_v3(secret, "GET", uri, b"", timestamp)
    return client.get(
        f"/hubspot/app-card?{query}",
        headers={"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": timestamp},
    )


def synced_company(app, client, db, installed, sandbox) -> str:
    tenant_id, key = installed
    acme(client, key)
    recompute(db, tenant_id, NOW)
    sync_tenant(app.extensions["pql"], tenant_id)
    [company_id] = portal(sandbox).objects["companies"]
    return company_id


def test_the_card_shows_activation_engagement_pql_lead_type_and_features(
    app, client, db, installed, sandbox
):
    company_id = synced_company(app, client, db, installed, sandbox)
    answer = fetch(client, f"objectTypeId=0-2&objectId={company_id}&portalId={HUB}&userId=1")
    assert answer.status_code == 200, answer.get_json()
    card = answer.get_json()
    assert card["status"] == "synced" and card["name"] == "Acme"
    assert 0 <= card["activation"]["rate"] <= 100
    assert card["engagement"]["segment"] in ("Most engaged", "Engaged", "Passive", "Least engaged")
    assert set(card["pql"]) == {"isPql", "kind", "reason", "at"} and card["pql"]["reason"]
    assert card["leadType"] and card["chanceToConvert"] is not None
    assert "Report Created" in card["features"]["used"]
    assert card["features"]["notUsed"]
    assert card["adminUrl"] == f"{PUBLIC_URL}/app/"


def test_a_record_the_app_has_not_synced_is_not_synced_yet(app, client, installed):
    card = fetch(client, f"objectTypeId=0-1&objectId=987654&portalId={HUB}").get_json()
    assert card == {"status": "not_synced", "subject": "user", "adminUrl": f"{PUBLIC_URL}/app/"}


def test_unsigned_or_forged_fetches_are_refused(app, client, installed):
    query = f"objectTypeId=0-2&objectId=1&portalId={HUB}"
    assert fetch(client, query, secret="not-the-secret").status_code == 401
    assert fetch(client, query, signature="ünïcode").status_code == 401
    assert fetch(client, query, at=NOW - dt.timedelta(minutes=6)).status_code == 401
    assert client.get(f"/hubspot/app-card?{query}").status_code == 401


def test_bad_parameters_and_an_unknown_portal_are_named(app, client, installed):
    assert fetch(client, f"objectTypeId=0-9&objectId=1&portalId={HUB}").status_code == 400
    missing = fetch(client, "objectTypeId=0-2&objectId=1&portalId=4040")
    assert missing.status_code == 404 and missing.get_json()["code"] == "not_installed"


def test_the_signed_uri_decodes_hubspots_listed_escapes_only():
    assert signed_uri("https://x.test/p?a=1%3A2%2F3%3F4%40%21%24%27%28%29%2A%2C%3B") == (
        "https://x.test/p?a=1:2/3?4@!$'()*,;"
    )
    assert signed_uri("https://x.test/p?q=a%20b%26c%3d") == "https://x.test/p?q=a%20b%26c%3d"


def test_a_request_signed_over_the_decoded_uri_is_accepted(app, client, installed):
    """HubSpot signs ``email=a@b`` where the request carries ``email=a%40b``."""
    timestamp = str(int(NOW.timestamp() * 1000))
    query = f"objectTypeId=0-1&objectId=5&portalId={HUB}&userEmail=ada%40acme.example"
    decoded = f"{PUBLIC_URL}/hubspot/app-card?{query.replace('%40', '@')}"
    signature = signature_v3("sandbox-secret", "GET", decoded, b"", timestamp)
    answer = client.get(
        f"/hubspot/app-card?{query}",
        headers={"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": timestamp},
    )
    assert answer.status_code == 200
