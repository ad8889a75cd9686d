"""openapi.yaml describes every HTTP endpoint (checked against the app's routes), and every
endpoint, fuzzed from it with schemathesis, answers without a server error; hand-made bad input
(oversized, malformed, wrongly encoded, deeply nested) gets a 4xx with a body that says why."""

from __future__ import annotations

import base64
import gzip
import json
import re
import time

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.core import NOT_SET

from app.tenants import create_tenant, issue_write_key
from tests.helpers.apps import config_for, empty_all_tables
from tests.helpers.openapi import SPEC
from webhooks.hubspot import signature_v3

PUBLIC_URL = "http://pql.test"
# Uninstalling would revoke the keys the other cases use; it has its own tests.
NOT_FUZZED = {("POST", "/api/v1/crm/uninstall"), ("POST", "/app/uninstall")}
EXAMPLES = 40


def _flask_to_openapi(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", re.sub(r"<any\([^)]*\):", "<", rule))


def test_every_route_is_described_and_every_description_is_a_route(app):
    spec = yaml.safe_load(SPEC.read_text())
    described = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete", "options")
    }
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        methods = rule.methods - {"HEAD", "OPTIONS"} or {"OPTIONS"}
        for method in methods:
            routed.add((method, _flask_to_openapi(rule.rule)))
    assert routed - described == set(), "routes missing from openapi.yaml"
    assert described - routed == set(), "openapi.yaml describes routes that do not exist"


# --- fuzzing --------------------------------------------------------------------------------

SCHEMA = schemathesis.openapi.from_path(SPEC)
OPERATIONS = [
    op
    for op in (result.ok() for result in SCHEMA.get_all_operations())
    if (op.method.upper(), op.path) not in NOT_FUZZED
]


@pytest.fixture(scope="module")
def fuzzed(migrated_url):
    """One app and tenant for all fuzzed operations, with a write key, an admin key and an
    admin-page session."""
    from app import create_app

    app = create_app(config_for(migrated_url, PUBLIC_URL=PUBLIC_URL, LOG_LEVEL="CRITICAL"))
    db = app.extensions["pql"].db
    tenant = create_tenant(db, "Fuzzed")
    write = issue_write_key(db, tenant.id).secret
    admin = issue_write_key(db, tenant.id, scope="admin").secret
    # No cookie jar: a fuzzed logout must not end the session the later cases use, so the
    # session cookie goes with every request. (The operations run in openapi.yaml's order: the
    # key-rotating page comes after every endpoint that needs the keys.)
    client = app.test_client(use_cookies=False)
    csrf = "fuzz-csrf-token"
    cookie = app.session_interface.get_signing_serializer(app).dumps(
        {
            "tenant_id": tenant.id,
            "actor": "fuzz",
            "csrf": csrf,
            "signed_in_at": app.extensions["pql"].clock().isoformat(),
        }
    )
    client.session_cookie = f"{app.config['SESSION_COOKIE_NAME']}={cookie}"
    yield app, client, write, admin, csrf
    empty_all_tables(app)
    db.dispose()


def _send(env, case):
    app, client, write, admin, csrf = env
    path = case.formatted_path
    headers = {k: v for k, v in (case.headers or {}).items() if isinstance(v, str)}
    kwargs = {"query_string": case.query or {}, "headers": headers}
    body = case.body
    media = case.media_type or ""
    if path.startswith("/v1/"):
        headers["Authorization"] = "Basic " + base64.b64encode(f"{write}:".encode()).decode()
    elif path.startswith("/api/v1/"):
        headers["Authorization"] = f"Bearer {admin}"
    elif path.startswith("/app/"):
        headers["Cookie"] = client.session_cookie
    if media.startswith("application/x-www-form-urlencoded"):
        form = dict(body) if isinstance(body, dict) else {}
        form["csrf"] = csrf  # reach the handler behind the CSRF check
        kwargs["data"] = {k: str(v) for k, v in form.items()}
    elif body is not None and body is not NOT_SET:
        kwargs["data"] = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if path.startswith(("/hubspot/webhooks", "/hubspot/app-card")):
        # Signed as HubSpot signs, so the parsing behind the check is fuzzed too.
        stamp = str(int(time.time() * 1000))
        query = client.get("/", query_string=case.query or {}).request.query_string.decode()
        uri = PUBLIC_URL + path + (f"?{query}" if query else "")
        raw = kwargs.get("data", b"") if isinstance(kwargs.get("data"), bytes) else b""
        headers["X-HubSpot-Request-Timestamp"] = stamp
        headers["X-HubSpot-Signature-v3"] = signature_v3(
            app.extensions["pql"].settings.hubspot_client_secret, case.method, uri, raw, stamp
        )
    return client.open(path, method=case.method, **kwargs)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method.upper()} {op.path}")
def test_fuzzed_requests_never_meet_a_server_error(fuzzed, operation):
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = _send(fuzzed, case)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} → {response.status_code}: "
            f"{response.get_data(as_text=True)[:300]}"
        )

    run()


# --- hand-made bad input ----------------------------------------------------------------------


def _deep(depth: int) -> bytes:
    return b'{"document": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    "path, method, body, headers, status, says",
    [
        ("/v1/batch", "POST", b"{" * 10, {}, 400, "not valid JSON"),
        ("/v1/batch", "POST", b"\xff\xfe\x00{", {}, 400, "JSON"),
        ("/v1/batch", "POST", b'{"batch": ' + b"[" * 20000 + b"]" * 20000 + b"}", {}, 400, "JSON"),
        ("/v1/batch", "POST", b"x" * 600_000, {}, 413, "exceeds"),
        ("/v1/batch", "POST", b"not gzip", {"Content-Encoding": "gzip"}, 400, "gzip"),
        (
            "/v1/batch",
            "POST",
            gzip.compress(b"{" + b" " * 2_000_000 + b"}"),
            {"Content-Encoding": "gzip"},
            413,
            "exceeds",
        ),
        ("/v1/batch", "POST", b"{}", {"Content-Encoding": "br"}, 415, "encoding"),
        # A batch-level context copied into 2,500 empty messages (5.8 s of CPU before).
        (
            "/v1/batch",
            "POST",
            json.dumps({"context": {"x": "y" * 180_000}, "batch": [{}] * 2500}).encode(),
            {},
            413,
            "would exceed",
        ),
        (
            "/v1/batch",
            "POST",
            json.dumps({"context": {"x": "y" * 3_000}, "batch": [{}] * 2500}).encode(),
            {},
            413,
            "send smaller batches",
        ),
        ("/api/v1/definitions", "PUT", _deep(50_000), {}, 400, "nested too deeply"),
        ("/api/v1/definitions", "PUT", b"\xff\xfe", {}, 400, "not valid JSON"),
        ("/api/v1/definitions", "PUT", b'{"document": "\xe9t\xe9"}', {}, 400, "UTF-8"),
        ("/api/v1/definitions", "PUT", b"[1, 2]", {}, 400, "JSON object"),
        (
            "/api/v1/definitions",
            "PUT",
            b'{"document": {"score_bands": {"engaged": "high"}}}',
            {},
            422,
            "definitions are not valid",
        ),
        ("/api/v1/scoring/run", "POST", b'{"full": "yes"}', {}, 400, "full must be"),
        (
            "/api/v1/definitions",
            "PUT",
            b'{"document": {"key_features": ["a\\u0000"]}}',
            {},
            400,
            "NUL character",
        ),
        ("/api/v1/accounts/a%00b", "GET", b"", {}, 400, "NUL character"),
    ],
)
def test_bad_input_gets_a_4xx_that_names_the_problem(
    fuzzed, path, method, body, headers, status, says
):
    _, client, write, admin, _ = fuzzed
    auth = (
        "Basic " + base64.b64encode(f"{write}:".encode()).decode()
        if path.startswith("/v1/")
        else f"Bearer {admin}"
    )
    response = client.open(
        path,
        method=method,
        data=body,
        headers={"Authorization": auth, "Content-Type": "application/json", **headers},
    )
    text = response.get_data(as_text=True)
    assert response.status_code == status, text[:300]
    assert says.lower() in text.lower(), text[:300]
    assert response.get_json()["code"]
