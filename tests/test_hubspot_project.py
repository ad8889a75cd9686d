"""The HubSpot project (hubspot/) and the Python side agree: scopes, redirect path, webhook
target and subscriptions, the card's backend URL and the fetch URLs HubSpot permits."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

from connectors.hubspot.client import FIELD_OF_PROPERTY, SCOPES
from webhooks.hubspot import HANDLED

PROJECT = Path(__file__).resolve().parent.parent / "hubspot"
APP = PROJECT / "src/app"


def _meta(path: str) -> dict:
    return json.loads((APP / path).read_text())["config"]


def test_the_project_is_on_developer_platform_2026_03():
    assert json.loads((PROJECT / "hsproject.json").read_text())["platformVersion"] == "2026.03"
    assert _meta("app-hsmeta.json")["distribution"] == "marketplace"
    assert _meta("app-hsmeta.json")["auth"]["type"] == "oauth"


def test_required_scopes_are_exactly_the_ones_the_install_asks_for():
    auth = _meta("app-hsmeta.json")["auth"]
    assert sorted(auth["requiredScopes"]) == sorted(SCOPES)
    assert not set(auth["optionalScopes"]) & set(SCOPES)


def test_the_redirect_url_is_the_install_callback(app):
    [redirect] = _meta("app-hsmeta.json")["auth"]["redirectUrls"]
    assert urlsplit(redirect).path == "/hubspot/oauth-callback"
    assert "/hubspot/oauth-callback" in {r.rule for r in app.url_map.iter_rules()}


def test_subscribed_webhooks_are_exactly_the_handled_ones_at_the_handled_url(app):
    config = _meta("webhooks/webhooks-hsmeta.json")
    assert urlsplit(config["settings"]["targetUrl"]).path == "/hubspot/webhooks"
    assert "/hubspot/webhooks" in {r.rule for r in app.url_map.iter_rules()}
    subscriptions = [
        s for group in config["subscriptions"].values() for s in group if s.get("active")
    ]
    assert {s["subscriptionType"] for s in subscriptions} == HANDLED
    watched = {s["propertyName"] for s in subscriptions if s.get("propertyName")}
    assert watched <= set(FIELD_OF_PROPERTY)
    assert {"hubspot_owner_id", "lifecyclestage"} <= watched


def test_the_card_fetches_from_the_one_backend_hubspot_permits(app):
    app_config = _meta("app-hsmeta.json")
    [permitted] = app_config["permittedUrls"]["fetch"]
    [redirect] = app_config["auth"]["redirectUrls"]
    target = _meta("webhooks/webhooks-hsmeta.json")["settings"]["targetUrl"]
    origin = f"{urlsplit(permitted).scheme}://{urlsplit(permitted).netloc}"
    assert permitted == origin and redirect.startswith(origin) and target.startswith(origin)
    usage = (APP / "cards/usage.ts").read_text()
    assert re.search(r"BACKEND_URL = '([^']+)'", usage).group(1) == origin
    assert "/hubspot/app-card" in usage
    assert "/hubspot/app-card" in {r.rule for r in app.url_map.iter_rules()}


def test_the_card_is_on_companies_and_contacts_and_its_entry_point_exists():
    card = _meta("cards/product-usage-hsmeta.json")
    assert set(card["objectTypes"]) == {"companies", "contacts"}
    assert (APP / card["entrypoint"].removeprefix("/app/")).is_file()
