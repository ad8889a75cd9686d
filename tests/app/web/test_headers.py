"""Security headers on the service's answers."""

from __future__ import annotations

import secrets

import pytest

from tests.helpers.hubspot import install


@pytest.fixture
def app(hubspot_app):
    return hubspot_app


def test_every_answer_forbids_sniffing_framing_and_cross_site_referrers(client):
    for path in ("/healthz", "/app/login", "/v1/batch"):
        answer = client.get(path)
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Referrer-Policy"] == "same-origin"
    assert "frame-ancestors 'none'" in client.get("/app/login").headers["Content-Security-Policy"]


def test_pages_with_keys_or_tenant_data_are_not_stored(client, sandbox):
    page = install(client)
    assert "wk_" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    assert client.get("/app/").headers["Cache-Control"] == "no-store"
    assert "no-store" not in client.get("/healthz").headers.get("Cache-Control", "")


def test_hsts_only_in_production(client, make_app):
    assert "Strict-Transport-Security" not in client.get("/healthz").headers
    from app.security import new_encryption_key

    production = make_app(
        APP_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(32),
        TOKEN_ENCRYPTION_KEYS=new_encryption_key(),
        PUBLIC_URL="https://pql.example.com",
    )
    answer = production.test_client().get("/healthz")
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
