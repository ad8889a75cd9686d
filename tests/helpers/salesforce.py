"""Driving the Salesforce app against the Salesforce sandbox mounted under ``responses``."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

LOGIN = "https://login.sandbox-sf.test"
INSTANCE = "https://acme.my.sandbox-sf.test"
MY_DOMAIN = "https://acme.my.salesforce.com"  # an org's own login host


def install(client, org_server, environment="production", org=None, user=None, my_domain=None):
    """The admin's browser: our install URL → Salesforce's consent → our callback."""
    extra = f"&my_domain={my_domain}" if my_domain else ""
    started = client.get(f"/salesforce/install?environment={environment}{extra}")
    assert started.status_code == 302
    consent = urlsplit(started.headers["Location"])
    query = parse_qs(consent.query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    org = org or org_server.org()
    code = org_server.grant_code(
        org, query["code_challenge"][0], query["redirect_uri"][0], user=user
    )
    back = urlsplit(query["redirect_uri"][0])
    return client.get(f"{back.path}?code={code}&state={query['state'][0]}"), org
