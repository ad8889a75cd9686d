"""A local stand-in for HubSpot: enough of its v3 API for everything the app does, with HubSpot's
manners (batches of at most 100, a rolling per-portal request limit answered with 429 and the
X-HubSpot-RateLimit-* headers, 207 for batch inputs that name missing records, 400 for a batch
with one invalid property value, 409 for a property that already exists, expiring access tokens).

The demo runs the app against it so a newcomer sees the whole loop without a HubSpot account;
the tests and the sync benchmark use it because ``hubspot-api-client`` speaks urllib3, which HTTP
mocking libraries for ``requests`` do not see. It keeps everything in memory.

Test hooks under ``/_sandbox/`` inject faults (the next N answers, records that fail) and show
what happened; ``GET /`` is a page listing companies, contacts and tasks with the app's
properties, for the demo.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import html
import itertools
import json
import re
import secrets
import threading
import time
import urllib.request
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, redirect, request
from markupsafe import escape

from sandbox.server import LoopbackServer

OBJECT_TYPES = ("companies", "contacts", "tasks", "notes")
BATCH_LIMIT = 100
SEARCH_LIMIT = 200
SEARCH_TOTAL_CAP = 10_000
ACCESS_TOKEN_SECONDS = 1800
# HubSpot's own default properties the app reads or writes, per object type.
BUILTIN_PROPERTIES = {
    "companies": {
        "name": "string",
        "domain": "string",
        "hubspot_owner_id": "enumeration",
        "lifecyclestage": "enumeration",
        "notes_last_contacted": "datetime",
        "notes_last_updated": "datetime",
        "num_contacted_notes": "number",
        "hs_last_sales_activity_timestamp": "datetime",
        "hs_lastmodifieddate": "datetime",
        "createdate": "datetime",
        "hs_object_id": "number",
        "industry": "enumeration",
        "annualrevenue": "number",
        "country": "string",
        "numberofemployees": "number",
    },
    "contacts": {
        "email": "string",
        "firstname": "string",
        "lastname": "string",
        "hubspot_owner_id": "enumeration",
        "lifecyclestage": "enumeration",
        "notes_last_contacted": "datetime",
        "hs_lastmodifieddate": "datetime",
        "lastmodifieddate": "datetime",
        "createdate": "datetime",
        "hs_object_id": "number",
    },
    "notes": {
        "hs_note_body": "string",
        "hs_timestamp": "datetime",
        "hubspot_owner_id": "enumeration",
        "hs_lastmodifieddate": "datetime",
        "createdate": "datetime",
        "hs_object_id": "number",
    },
    "tasks": {
        "hs_task_subject": "string",
        "hs_task_body": "string",
        "hs_task_status": "enumeration",
        "hs_task_priority": "enumeration",
        "hs_timestamp": "datetime",
        "hubspot_owner_id": "enumeration",
        "hs_lastmodifieddate": "datetime",
        "createdate": "datetime",
        "hs_object_id": "number",
    },
}
OBJECT_TYPE_IDS = {"0-1": "contacts", "0-2": "companies", "0-27": "tasks", "0-46": "notes"}

API_VERSION = "2026-03"
# Paths of retired versions (v1 OAuth, CRM v3/v4...) and of any dated version.
LEGACY_PATH = re.compile(r"^/(oauth/v1|crm/v\d+|crm/[a-z]+/v\d+|properties/v\d|owners/v\d)/?")
DATED_PATH = re.compile(
    r"^/(crm/[a-z]+|oauth|webhooks-journal/[a-z-]+|appinstalls)/\d{4}-\d{2}(/|$)"
)
REQUIRED_SCOPES = (
    "oauth",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.schemas.companies.write",
    "crm.schemas.contacts.write",
    "crm.objects.owners.read",
    "settings.users.read",
)

# The app registration the sandbox knows (a real app's come from HubSpot's developer portal).
CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"


def app_env(url: str) -> dict[str, str]:
    """The service's environment for a sandbox at ``url``: the app's credentials and where
    HubSpot's API and consent screen are."""
    return {
        "HUBSPOT_CLIENT_ID": CLIENT_ID,
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_BASE_URL": url,
        "HUBSPOT_AUTHORIZE_URL": f"{url}/oauth/authorize",
    }


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, message: str, category: str = "VALIDATION_ERROR", **extra) -> Response:
    body = {"status": "error", "message": message, "category": category, **extra}
    response = jsonify(body)
    response.status_code = status
    return response


def _user(user_id: int, email: str, super_admin: bool) -> dict:
    return {"id": str(user_id), "email": email, "roleIds": [], "superAdmin": super_admin}


@dataclass
class Portal:
    hub_id: int
    objects: dict[str, dict[str, dict]] = field(default_factory=lambda: defaultdict(dict))
    properties: dict[str, dict[str, dict]] = field(default_factory=lambda: defaultdict(dict))
    groups: dict[str, dict[str, dict]] = field(default_factory=lambda: defaultdict(dict))
    # (from type, from id, to type, to id)
    associations: set[tuple[str, str, str, str]] = field(default_factory=set)
    owners: list[dict] = field(default_factory=list)
    # The portal's users (Settings → Users), by user id: the Users API's PublicUser.
    users: dict[int, dict] = field(default_factory=dict)
    calls: deque = field(default_factory=deque)
    search_calls: deque = field(default_factory=deque)


@dataclass
class Faults:
    # Statuses to answer the next requests with, in order (e.g. [502, 429]), before handling.
    next_statuses: list[int] = field(default_factory=list)
    # Values of any property that make that input invalid (a whole-batch 400, as HubSpot does).
    invalid_values: set[str] = field(default_factory=set)
    # Per portal: statuses for its next requests (429 answered with Retry-After), and delays
    # (seconds) before answering its next requests (a slow API, or a timeout when longer than
    # the client waits).
    portal_statuses: dict[int, list[int]] = field(default_factory=dict)
    portal_delays: dict[int, list[float]] = field(default_factory=dict)
    # Answers for the next refresh-token grants: (status, error, description, status name),
    # e.g. a transient 503 before the grant is honoured.
    token_failures: list[tuple[int, str, str, str]] = field(default_factory=list)


class Sandbox:
    """The sandbox's state; one per server."""

    def __init__(
        self,
        requests_per_window: int = 110,
        window_seconds: float = 10.0,
        searches_per_second: int = 5,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        clock=time.monotonic,
        wall_clock=lambda: dt.datetime.now(dt.UTC),
        api_version: str = API_VERSION,
    ):
        # The date version whose paths the sandbox serves; every other version's (and the
        # retired /crm/v3, /crm/v4, /oauth/v1 paths) answer as sunset endpoints.
        self.api_version = api_version
        self.requests_seen: list[tuple[str, str]] = []  # (method, path), in order
        self.requests_per_window = requests_per_window
        self.window_seconds = window_seconds
        self.searches_per_second = searches_per_second
        self.client_id, self.client_secret = client_id, client_secret
        self.clock, self.wall_clock = clock, wall_clock
        self.lock = threading.RLock()
        self.portals: dict[int, Portal] = {}
        self.codes: dict[str, tuple[int, str]] = {}
        self.access_tokens: dict[str, tuple[int, float]] = {}
        self.refresh_tokens: dict[str, int] = {}
        self.faults = Faults()
        # The app's webhooks journal: APP_LIFECYCLE_EVENT entries (APP_INSTALL, APP_UNINSTALL).
        self.journal: list[dict] = []
        self.app_tokens: dict[str, float] = {}  # client-credentials tokens and their expiry
        self.ids = itertools.count(1001)
        self.stats: dict[str, int] = defaultdict(int)
        self.webhook_target: str | None = None

    # --- portals and tokens --------------------------------------------------------------

    def portal(self, hub_id: int) -> Portal:
        with self.lock:
            if hub_id not in self.portals:
                portal = Portal(hub_id)
                portal.owners = [
                    {
                        "id": str(100 + n),
                        "email": f"{name.lower()}@portal{hub_id}.example",
                        "firstName": name,
                        "lastName": "Owner",
                        "userId": 9000 + n,
                        "archived": False,
                        "createdAt": _iso(self.wall_clock()),
                        "updatedAt": _iso(self.wall_clock()),
                    }
                    for n, name in enumerate(["Sam", "Casey", "Robin"], start=1)
                ]
                # User 1 installed the app: a Super Admin, as whoever installs usually is.
                portal.users[1] = _user(1, f"admin@portal{hub_id}.example", super_admin=True)
                self.portals[hub_id] = portal
            return self.portals[hub_id]

    def add_user(self, hub_id: int, user_id: int, super_admin: bool = False) -> None:
        """Another user of the portal (a sales rep, say) who can complete an app's consent."""
        with self.lock:
            self.portal(hub_id).users[user_id] = _user(
                user_id, f"user{user_id}@portal{hub_id}.example", super_admin
            )

    def issue_code(self, hub_id: int, redirect_uri: str, user_id: int = 1) -> str:
        code = secrets.token_urlsafe(16)
        with self.lock:
            self.portal(hub_id)
            self.codes[code] = (hub_id, redirect_uri, user_id)
        return code

    def issue_tokens(self, hub_id: int, user_id: int = 1) -> dict:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        with self.lock:
            self.access_tokens[access] = (hub_id, self.clock() + ACCESS_TOKEN_SECONDS)
            self.refresh_tokens[refresh] = hub_id
        return {
            "token_type": "bearer",
            "token_use": "access_token",
            "hub_id": hub_id,
            "user_id": user_id,
            "scopes": list(REQUIRED_SCOPES),
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": ACCESS_TOKEN_SECONDS,
        }

    def expire_access_tokens(self, hub_id: int | None = None) -> None:
        with self.lock:
            for token, (owner, _) in list(self.access_tokens.items()):
                if hub_id is None or owner == hub_id:
                    self.access_tokens[token] = (owner, self.clock() - 1)

    def uninstall(self, hub_id: int) -> None:
        """The app is uninstalled from the portal (by its admin, or by the app itself): its
        tokens stop working and the journal records the lifecycle event."""
        self.revoke_refresh_tokens(hub_id)
        with self.lock:
            self.stats["uninstalls"] += 1
            self.journal.append(self._lifecycle_entry(hub_id, "APP_UNINSTALL"))

    def _lifecycle_entry(self, hub_id: int, event: str) -> dict:
        return {
            "offset": str(uuid.uuid4()),
            "subscriptionType": "APP_LIFECYCLE_EVENT",
            "eventTypeId": event,
            "portalId": hub_id,
            "appId": 1,
            "occurredAt": int(self.wall_clock().timestamp() * 1000),
        }

    def revoke_refresh_tokens(self, hub_id: int | None = None) -> None:
        """The portal's admin uninstalled the app (or HubSpot revoked it): its refresh tokens
        stop working, and its access tokens with them."""
        with self.lock:
            for token, owner in list(self.refresh_tokens.items()):
                if hub_id is None or owner == hub_id:
                    del self.refresh_tokens[token]
            if hub_id is not None:
                for token, (owner, _) in list(self.access_tokens.items()):
                    if owner == hub_id:
                        del self.access_tokens[token]

    def create_object(self, hub_id: int, object_type: str, properties: dict) -> dict:
        with self.lock:
            return self._create(self.portal(hub_id), object_type, properties)

    def _create(self, portal: Portal, object_type: str, properties: dict) -> dict:
        now = _iso(self.wall_clock())
        object_id = str(next(self.ids))
        values = {k: None if v is None else str(v) for k, v in properties.items()}
        values.update(hs_object_id=object_id, createdate=now, hs_lastmodifieddate=now)
        if object_type == "contacts":
            values["lastmodifieddate"] = now
        record = {
            "id": object_id,
            "properties": values,
            "createdAt": now,
            "updatedAt": now,
            "archived": False,
        }
        portal.objects[object_type][object_id] = record
        return record

    def change_property(self, hub_id: int, object_type: str, object_id: str, name: str, value):
        """A change made by someone in HubSpot: updates the record and, when a webhook target is
        set, delivers a signed propertyChange notification as HubSpot would."""
        with self.lock:
            record = self.portal(hub_id).objects[object_type][object_id]
            self._write(record, {name: value})
        if self.webhook_target:
            kind = {"companies": "company", "contacts": "contact"}[object_type]
            event = {
                "eventId": next(self.ids),
                "subscriptionId": 1,
                "portalId": hub_id,
                "appId": 1,
                "occurredAt": int(self.wall_clock().timestamp() * 1000),
                "subscriptionType": f"{kind}.propertyChange",
                "attemptNumber": 0,
                "objectId": int(object_id),
                "propertyName": name,
                "propertyValue": "" if value is None else str(value),
                "changeSource": "CRM_UI",
            }
            self.deliver_webhook([event])

    def deliver_webhook(self, events: list[dict]) -> int:
        body = json.dumps(events)
        timestamp = str(int(self.wall_clock().timestamp() * 1000))
        source = f"POST{self.webhook_target}{body}{timestamp}"
        signature = base64.b64encode(
            hmac.new(self.client_secret.encode(), source.encode(), hashlib.sha256).digest()
        ).decode()
        outgoing = urllib.request.Request(
            self.webhook_target,
            data=body.encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-HubSpot-Signature-v3": signature,
                "X-HubSpot-Request-Timestamp": timestamp,
            },
        )
        with urllib.request.urlopen(outgoing, timeout=10) as answer:
            return answer.status

    def _write(self, record: dict, properties: dict) -> None:
        now = _iso(self.wall_clock())
        for key, value in properties.items():
            record["properties"][key] = None if value is None else str(value)
        record["properties"]["hs_lastmodifieddate"] = now
        if "lastmodifieddate" in record["properties"]:
            record["properties"]["lastmodifieddate"] = now
        record["updatedAt"] = now


def create_sandbox(sandbox: Sandbox | None = None) -> Flask:
    """The sandbox's Flask app; ``app.sandbox`` is its state."""
    app = Flask(__name__)
    V = (sandbox or Sandbox()).api_version if sandbox else API_VERSION
    app.sandbox = sandbox = sandbox or Sandbox()

    def authorised() -> tuple[Portal | None, Response | None]:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        with sandbox.lock:
            entry = sandbox.access_tokens.get(token or "")
            if entry is None:
                return None, _error(
                    401, "Authentication credentials not found.", "INVALID_AUTHENTICATION"
                )
            hub_id, expires = entry
            if expires < sandbox.clock():
                return None, _error(
                    401, "The OAuth token used to make this call expired.", "EXPIRED_AUTHENTICATION"
                )
            return sandbox.portal(hub_id), None

    def rate_limited(portal: Portal, search: bool) -> Response | None:
        """HubSpot's rolling per-portal 10-second window, and the search API's per-second one,
        which searches count against instead (they are exempt from the 10-second limit)."""
        now = sandbox.clock()
        with sandbox.lock:
            if search:
                searches = portal.search_calls
                while searches and searches[0] <= now - 1.0:
                    searches.popleft()
                if len(searches) >= sandbox.searches_per_second:
                    sandbox.stats["429"] += 1
                    return _error(
                        429,
                        "You have reached your secondly limit.",
                        "RATE_LIMITS",
                        errorType="RATE_LIMIT",
                        policyName="SECONDLY",
                    )
                searches.append(now)
                return None
            calls = portal.calls
            while calls and calls[0] <= now - sandbox.window_seconds:
                calls.popleft()
            if len(calls) >= sandbox.requests_per_window:
                sandbox.stats["429"] += 1
                response = _error(
                    429,
                    "You have reached your ten_secondly_rolling limit.",
                    "RATE_LIMITS",
                    errorType="RATE_LIMIT",
                    policyName="TEN_SECONDLY_ROLLING",
                )
                response.headers.update(limit_headers(portal, 0))
                return response
            calls.append(now)
        return None

    def limit_headers(portal: Portal, remaining: int | None = None) -> dict[str, str]:
        if remaining is None:
            remaining = max(0, sandbox.requests_per_window - len(portal.calls))
        return {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(sandbox.window_seconds * 1000)),
            "X-HubSpot-RateLimit-Max": str(sandbox.requests_per_window),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
        }

    @app.before_request
    def sunset():
        """Retired API versions answer as HubSpot's sunset endpoints do; every path is kept."""
        sandbox.requests_seen.append((request.method, request.path))
        if LEGACY_PATH.match(request.path) or (
            DATED_PATH.match(request.path) and f"/{V}/" not in request.path + "/"
        ):
            sandbox.stats["legacy_calls"] += 1
            return _error(
                410,
                f"{request.path} belongs to a retired API version; use the {V} API.",
                "API_SUNSET",
            )
        return None

    @app.before_request
    def gate():
        if request.path.startswith(("/_sandbox", "/_journal", "/oauth", "/webhooks-journal")):
            return None  # no portal token: the journal is read with the app's own token
        if request.path == "/":
            return None
        sandbox.stats["requests"] += 1
        with sandbox.lock:
            forced = sandbox.faults.next_statuses.pop(0) if sandbox.faults.next_statuses else None
        if forced is not None:
            sandbox.stats[f"forced_{forced}"] += 1
            return _error(forced, f"Injected {forced}", "SANDBOX_FAULT")
        portal, failure = authorised()
        if failure is not None:
            return failure
        with sandbox.lock:
            statuses = sandbox.faults.portal_statuses.get(portal.hub_id) or []
            status = statuses.pop(0) if statuses else None
            delays = sandbox.faults.portal_delays.get(portal.hub_id) or []
            delay = delays.pop(0) if delays else 0.0
        if delay:
            time.sleep(delay)
        if status is not None:
            sandbox.stats[f"forced_{status}"] += 1
            answer = _error(status, f"Injected {status}", "SANDBOX_FAULT")
            if status == 429:
                answer.headers["Retry-After"] = "1"
            return answer
        limited = rate_limited(portal, request.path.endswith("/search"))
        if limited is not None:
            return limited
        request.portal = portal
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        portal = getattr(request, "portal", None)
        if portal is not None and response.status_code != 429:
            response.headers.update(limit_headers(portal))
        return response

    # --- OAuth -----------------------------------------------------------------------------

    @app.get("/oauth/authorize")
    def authorize():
        """Stands in for HubSpot's consent screen. The admin picks the account to install into
        (``hub_id``, what the account picker adds to this URL): with none chosen, the page
        lists the sandbox's portals to choose from (the first install goes to 1234567); then it
        approves at once and sends the browser back with a code."""
        if request.args.get("client_id") != sandbox.client_id:
            return _error(400, "Unknown client_id")
        redirect_uri = request.args.get("redirect_uri", "")
        chosen = request.args.get("hub_id", "")
        if not chosen.isdigit() and sandbox.portals:
            return _account_picker(sandbox.portals)
        hub_id = int(chosen or "1234567")
        # Who approves the consent (a test's choice; HubSpot knows its signed-in user).
        user_id = int(request.args.get("user_id", "1"))
        code = sandbox.issue_code(hub_id, redirect_uri, user_id)
        query = {"code": code}
        if request.args.get("state"):
            query["state"] = request.args["state"]
        return redirect(f"{redirect_uri}?{urlencode(query)}")

    def oauth_error(status: int, error: str, description: str, legacy_status: str):
        """RFC 6749's error body, with HubSpot's own status and message beside it."""
        body = {
            "error": error,
            "error_description": description,
            "status": legacy_status,
            "message": description,
        }
        return jsonify(body), status

    def client_authenticated(form) -> bool:
        return (form.get("client_id"), form.get("client_secret")) == (
            sandbox.client_id,
            sandbox.client_secret,
        )

    @app.post(f"/oauth/{V}/token")
    def token():
        form = request.form
        if not client_authenticated(form):
            return oauth_error(401, "invalid_client", "Invalid client credentials", "BAD_CLIENT_ID")
        grant = form.get("grant_type")
        with sandbox.lock:
            if grant == "client_credentials":
                token = secrets.token_urlsafe(24)
                sandbox.app_tokens[token] = sandbox.clock() + ACCESS_TOKEN_SECONDS
                return jsonify(
                    {
                        "access_token": token,
                        "expires_in": ACCESS_TOKEN_SECONDS,
                        "token_type": "bearer",
                        "token_use": "client_credentials",
                        "scopes": (form.get("scope") or "").split(),
                    }
                )
            if grant == "authorization_code":
                entry = sandbox.codes.pop(form.get("code", ""), None)
                if entry is None or entry[1] != form.get("redirect_uri"):
                    return oauth_error(
                        400, "invalid_grant", "Invalid or used authorization code", "BAD_AUTH_CODE"
                    )
                sandbox.journal.append(sandbox._lifecycle_entry(entry[0], "APP_INSTALL"))
                return jsonify(sandbox.issue_tokens(entry[0], entry[2]))
            if grant == "refresh_token":
                failure = (
                    sandbox.faults.token_failures.pop(0) if sandbox.faults.token_failures else None
                )
                if failure is not None:
                    return oauth_error(*failure)
                hub_id = sandbox.refresh_tokens.get(form.get("refresh_token", ""))
                if hub_id is None:
                    return oauth_error(
                        400,
                        "invalid_grant",
                        "missing or unknown refresh token",
                        "BAD_REFRESH_TOKEN",
                    )
                sandbox.stats["refreshes"] += 1
                answer = sandbox.issue_tokens(hub_id)
                # HubSpot keeps the refresh token: hand back the same one.
                sandbox.refresh_tokens.pop(answer["refresh_token"])
                answer["refresh_token"] = form["refresh_token"]
                return jsonify(answer)
        return oauth_error(
            400, "unsupported_grant_type", f"unsupported grant_type {grant!r}", "BAD_GRANT_TYPE"
        )

    @app.post(f"/oauth/{V}/token/introspect")
    def introspect():
        form = request.form
        if not client_authenticated(form):
            return oauth_error(401, "invalid_client", "Invalid client credentials", "BAD_CLIENT_ID")
        token = form.get("token", "")
        with sandbox.lock:
            access = sandbox.access_tokens.get(token)
            refresh_hub = sandbox.refresh_tokens.get(token)
        if access is not None and access[1] >= sandbox.clock():
            hub_id, kind = access[0], "access_token"
            expires_in = int(access[1] - sandbox.clock())
        elif refresh_hub is not None:
            hub_id, kind, expires_in = refresh_hub, "refresh_token", None
        else:
            return jsonify({"active": False})
        answer = {
            "active": True,
            "token_use": kind,
            "hub_id": hub_id,
            "user_id": 1,
            "app_id": 1,
            "client_id": sandbox.client_id,
            "scopes": list(REQUIRED_SCOPES),
            "token_type": "bearer",
        }
        if expires_in is not None:
            answer["expires_in"] = expires_in
        return jsonify(answer)

    @app.post(f"/oauth/{V}/token/revoke")
    def revoke():
        form = request.form
        if not client_authenticated(form):
            return oauth_error(401, "invalid_client", "Invalid client credentials", "BAD_CLIENT_ID")
        token = form.get("token", "")
        with sandbox.lock:
            hub_id = sandbox.refresh_tokens.pop(token, None)
            if hub_id is not None:
                sandbox.stats["revocations"] += 1
                for access, (owner, _) in list(sandbox.access_tokens.items()):
                    if owner == hub_id:
                        del sandbox.access_tokens[access]
        # RFC 7009: an unknown token is not an error.
        return Response(status=200)

    # --- properties ------------------------------------------------------------------------

    def object_type(name: str) -> str | None:
        name = OBJECT_TYPE_IDS.get(name, name)
        return name if name in OBJECT_TYPES else None

    @app.post(f"/crm/properties/{V}/<kind>/groups")
    def create_group(kind: str):
        kind = object_type(kind)
        body = request.get_json(silent=True) or {}
        if kind is None or not body.get("name"):
            return _error(400, "Invalid object type or missing group name")
        with sandbox.lock:
            groups = request.portal.groups[kind]
            if body["name"] in groups:
                return _error(409, f"A property group named {body['name']} already exists.")
            groups[body["name"]] = {"name": body["name"], "label": body.get("label", "")}
        return jsonify(groups[body["name"]]), 201

    @app.post(f"/crm/properties/{V}/<kind>")
    def create_property(kind: str):
        kind = object_type(kind)
        body = request.get_json(silent=True) or {}
        required = ("name", "label", "type", "fieldType", "groupName")
        missing = [k for k in required if not body.get(k)]
        if kind is None or missing:
            return _error(400, f"Missing {', '.join(missing) or 'object type'}")
        with sandbox.lock:
            portal = request.portal
            if body["groupName"] not in portal.groups[kind]:
                return _error(400, f"group {body['groupName']} does not exist")
            if body["name"] in portal.properties[kind] or body["name"] in BUILTIN_PROPERTIES[kind]:
                return _error(
                    409, f"Property named '{body['name']}' already exists.", "OBJECT_ALREADY_EXISTS"
                )
            portal.properties[kind][body["name"]] = dict(body)
        return jsonify(body), 201

    @app.patch(f"/crm/properties/{V}/<kind>/<name>")
    def update_property(kind: str, name: str):
        kind = object_type(kind)
        body = request.get_json(silent=True) or {}
        with sandbox.lock:
            stored = request.portal.properties[kind].get(name) if kind else None
            if stored is None:
                return _error(404, f"Property {name} does not exist", "OBJECT_NOT_FOUND")
            stored.update({k: v for k, v in body.items() if k != "name"})
        return jsonify(stored)

    @app.post(f"/crm/properties/{V}/<kind>/batch/archive")
    def archive_properties(kind: str):
        """BatchInputPropertyName: the properties go, and their values on every record."""
        kind = object_type(kind)
        body = request.get_json(silent=True) or {}
        inputs = body.get("inputs")
        if kind is None or not isinstance(inputs, list) or len(inputs) > 100:
            return _error(400, "Invalid object type, or inputs missing or over 100")
        names = [item.get("name") for item in inputs if isinstance(item, dict)]
        if len(names) != len(inputs) or not all(isinstance(n, str) and n for n in names):
            return _error(400, "Every input needs a property name")
        with sandbox.lock:
            portal = request.portal
            builtin = [n for n in names if n in BUILTIN_PROPERTIES[kind]]
            if builtin:
                return _error(400, f"HubSpot-defined properties cannot be archived: {builtin}")
            for name in names:
                portal.properties[kind].pop(name, None)
                for record in portal.objects[kind].values():
                    record["properties"].pop(name, None)
        return Response(status=204)

    @app.delete(f"/crm/properties/{V}/<kind>/groups/<name>")
    def delete_group(kind: str, name: str):
        kind = object_type(kind)
        with sandbox.lock:
            portal = request.portal
            if kind is None or name not in portal.groups[kind]:
                return _error(404, f"Property group {name} does not exist", "OBJECT_NOT_FOUND")
            members = [p for p in portal.properties[kind].values() if p.get("groupName") == name]
            if members:
                return _error(400, f"Property group {name} still has {len(members)} properties")
            del portal.groups[kind][name]
        return Response(status=204)

    @app.get(f"/crm/properties/{V}/<kind>")
    def list_properties(kind: str):
        kind = object_type(kind)
        if kind is None:
            return _error(400, "Invalid object type")
        with sandbox.lock:
            custom = list(request.portal.properties[kind].values())
        builtin = [{"name": n, "type": t} for n, t in BUILTIN_PROPERTIES[kind].items()]
        return jsonify({"results": builtin + custom})

    # --- objects ---------------------------------------------------------------------------

    def known_property(portal: Portal, kind: str, name: str) -> bool:
        return name in BUILTIN_PROPERTIES[kind] or name in portal.properties[kind]

    def check_inputs(portal: Portal, kind: str, inputs: list[dict]) -> Response | None:
        """HubSpot validates the whole batch: one bad input rejects all of it."""
        if not isinstance(inputs, list) or not inputs:
            return _error(400, "inputs must be a non-empty list")
        if len(inputs) > BATCH_LIMIT:
            return _error(400, f"Batch size {len(inputs)} exceeds the limit of {BATCH_LIMIT}")
        errors = []
        for position, item in enumerate(inputs):
            for name, value in (item.get("properties") or {}).items():
                if not known_property(portal, kind, name):
                    errors.append(f'Property "{name}" does not exist (input {position})')
                elif value is not None and str(value) in sandbox.faults.invalid_values:
                    errors.append(f"{value!r} is not a valid value for {name} (input {position})")
        if errors:
            return _error(400, "Property values were not valid: " + "; ".join(errors))
        return None

    def shown(record: dict, wanted: list[str] | None) -> dict:
        props = record["properties"]
        names = wanted or ["createdate", "hs_lastmodifieddate", "hs_object_id"]
        return {
            "id": record["id"],
            "properties": {n: props.get(n) for n in names if n in props or wanted},
            "createdAt": record["createdAt"],
            "updatedAt": record["updatedAt"],
            "archived": False,
        }

    def batch_answer(results: list[dict], errors: list[dict]) -> tuple[Response, int]:
        now = _iso(sandbox.wall_clock())
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": now,
            "completedAt": now,
        }
        if errors:
            body["errors"] = errors
            body["numErrors"] = len(errors)
            return jsonify(body), 207
        return jsonify(body), 200

    @app.post(f"/crm/objects/{V}/<kind>/batch/create")
    def batch_create(kind: str):
        kind = object_type(kind)
        inputs = (request.get_json(silent=True) or {}).get("inputs")
        problem = check_inputs(request.portal, kind, inputs) if kind else _error(400, "type")
        if problem:
            return problem
        with sandbox.lock:
            created = []
            for item in inputs:
                record = sandbox._create(request.portal, kind, item.get("properties") or {})
                for association in item.get("associations") or []:
                    to_id = str((association.get("to") or {}).get("id"))
                    to_type = "companies" if kind == "contacts" else "contacts"
                    request.portal.associations.add((kind, record["id"], to_type, to_id))
                created.append(shown(record, list((item.get("properties") or {}).keys())))
            sandbox.stats[f"{kind}_created"] += len(created)
        return jsonify({"status": "COMPLETE", "results": created}), 201

    @app.post(f"/crm/objects/{V}/<kind>/batch/update")
    def batch_update(kind: str):
        kind = object_type(kind)
        inputs = (request.get_json(silent=True) or {}).get("inputs")
        problem = check_inputs(request.portal, kind, inputs) if kind else _error(400, "type")
        if problem:
            return problem
        results, errors = [], []
        with sandbox.lock:
            records = request.portal.objects[kind]
            for item in inputs:
                record = records.get(str(item.get("id")))
                if record is None:
                    errors.append(
                        {
                            "status": "error",
                            "category": "OBJECT_NOT_FOUND",
                            "message": f"Could not get some {kind} objects, they may be deleted "
                            "or not exist. Check that ids are valid.",
                            "context": {"ids": [str(item.get("id"))]},
                        }
                    )
                    continue
                sandbox._write(record, item.get("properties") or {})
                results.append(shown(record, list((item.get("properties") or {}).keys())))
            sandbox.stats[f"{kind}_updated"] += len(results)
        return batch_answer(results, errors)

    @app.post(f"/crm/objects/{V}/<kind>/batch/read")
    def batch_read(kind: str):
        kind = object_type(kind)
        body = request.get_json(silent=True) or {}
        inputs = body.get("inputs")
        if kind is None or not isinstance(inputs, list):
            return _error(400, "inputs must be a list")
        if len(inputs) > BATCH_LIMIT:
            return _error(400, f"Batch size {len(inputs)} exceeds the limit of {BATCH_LIMIT}")
        id_property = body.get("idProperty")
        wanted = body.get("properties") or []
        results, errors = [], []
        with sandbox.lock:
            records = request.portal.objects[kind]
            if id_property:
                if id_property not in ("email",) and not request.portal.properties[kind].get(
                    id_property, {}
                ).get("hasUniqueValue"):
                    return _error(400, f"{id_property} is not a unique identifier property")
                index = {
                    r["properties"].get(id_property): r
                    for r in records.values()
                    if r["properties"].get(id_property)
                }
            for item in inputs:
                key = str(item.get("id"))
                record = index.get(key) if id_property else records.get(key)
                if record is None:
                    errors.append(
                        {
                            "status": "error",
                            "category": "OBJECT_NOT_FOUND",
                            "message": "Could not get some objects",
                            "context": {"ids": [key]},
                        }
                    )
                else:
                    results.append(
                        shown(record, [*wanted, *([id_property] if id_property else [])])
                    )
        return batch_answer(results, errors)

    @app.get(f"/crm/objects/{V}/<kind>")
    def list_objects(kind: str):
        kind = object_type(kind)
        if kind is None:
            return _error(400, "Invalid object type")
        limit = min(int(request.args.get("limit", 10)), 100)
        after = int(request.args.get("after") or 0)
        wanted = [p for p in request.args.getlist("properties") for p in p.split(",") if p]
        with sandbox.lock:
            records = sorted(request.portal.objects[kind].values(), key=lambda r: int(r["id"]))
        page = [r for r in records if int(r["id"]) > after][:limit]
        body: dict[str, Any] = {"results": [shown(r, wanted) for r in page]}
        if len(page) == limit and int(page[-1]["id"]) < int(records[-1]["id"]):
            body["paging"] = {"next": {"after": page[-1]["id"]}}
        return jsonify(body)

    @app.get(f"/crm/objects/{V}/<kind>/<object_id>")
    def get_object(kind: str, object_id: str):
        kind = object_type(kind)
        wanted = [p for p in request.args.getlist("properties") for p in p.split(",") if p]
        with sandbox.lock:
            record = request.portal.objects[kind].get(object_id) if kind else None
        if record is None:
            return _error(404, "Object not found", "OBJECT_NOT_FOUND")
        return jsonify(shown(record, wanted))

    @app.post(f"/crm/objects/{V}/<kind>")
    def create_one(kind: str):
        kind = object_type(kind)
        body = request.get_json(silent=True) or {}
        problem = check_inputs(request.portal, kind, [body]) if kind else _error(400, "type")
        if problem:
            return problem
        with sandbox.lock:
            record = sandbox._create(request.portal, kind, body.get("properties") or {})
            for association in body.get("associations") or []:
                to_id = str((association.get("to") or {}).get("id"))
                types = association.get("types") or [{}]
                to_type = {192: "companies", 204: "contacts", 190: "companies"}.get(
                    types[0].get("associationTypeId"), "companies"
                )
                request.portal.associations.add((kind, record["id"], to_type, to_id))
            sandbox.stats[f"{kind}_created"] += 1
        return jsonify(shown(record, list((body.get("properties") or {}).keys()))), 201

    @app.post(f"/crm/objects/{V}/<kind>/search")
    def search(kind: str):
        kind = object_type(kind)
        body = request.get_json(silent=True) or {}
        limit = int(body.get("limit") or 10)
        after = int(body.get("after") or 0)
        if kind is None or limit > SEARCH_LIMIT:
            return _error(400, f"limit must be at most {SEARCH_LIMIT}")
        if after + limit > SEARCH_TOTAL_CAP:
            return _error(400, f"Search results are capped at {SEARCH_TOTAL_CAP}")
        with sandbox.lock:
            records = list(request.portal.objects[kind].values())
        groups = body.get("filterGroups") or []
        if groups:
            records = [r for r in records if any(matches(r, g.get("filters", [])) for g in groups)]
        for sort in reversed(body.get("sorts") or [{"propertyName": "hs_object_id"}]):
            name = sort.get("propertyName") if isinstance(sort, dict) else str(sort)
            records.sort(
                key=lambda r, n=name: sort_key(r["properties"].get(n)),
                reverse=isinstance(sort, dict) and sort.get("direction") == "DESCENDING",
            )
        page = records[after : after + limit]
        answer: dict[str, Any] = {
            "total": len(records),
            "results": [shown(r, body.get("properties")) for r in page],
        }
        if after + limit < len(records):
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return jsonify(answer)

    def sort_key(value):
        if value is None:
            return (1, "")
        try:
            return (0, float(value))
        except ValueError:
            return (0, value)

    def matches(record: dict, filters: list[dict]) -> bool:
        props = record["properties"]
        for f in filters:
            name, op = f.get("propertyName"), f.get("operator", "EQ")
            value = props.get(name) if name != "id" else record["id"]
            if op == "HAS_PROPERTY":
                ok = value not in (None, "")
            elif op == "NOT_HAS_PROPERTY":
                ok = value in (None, "")
            elif op == "IN":
                ok = value is not None and value.lower() in {str(v).lower() for v in f["values"]}
            elif op == "EQ":
                ok = value is not None and value.lower() == str(f.get("value")).lower()
            elif op in ("GT", "GTE", "LT", "LTE"):
                if value is None:
                    ok = False
                else:
                    left, right = comparable(value), comparable(f.get("value"))
                    ok = {
                        "GT": left > right,
                        "GTE": left >= right,
                        "LT": left < right,
                        "LTE": left <= right,
                    }[op]
            else:
                ok = False
            if not ok:
                return False
        return True

    def comparable(value) -> float:
        text = str(value)
        try:
            return float(text)
        except ValueError:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            return moment.timestamp() * 1000

    # --- associations and owners ----------------------------------------------------------

    @app.post(f"/crm/associations/{V}/<from_kind>/<to_kind>/batch/associate/default")
    def associate_default(from_kind: str, to_kind: str):
        inputs = (request.get_json(silent=True) or {}).get("inputs") or []
        if len(inputs) > BATCH_LIMIT:
            return _error(400, f"Batch size {len(inputs)} exceeds the limit of {BATCH_LIMIT}")
        from_kind, to_kind = object_type(from_kind), object_type(to_kind)
        with sandbox.lock:
            for item in inputs:
                request.portal.associations.add(
                    (from_kind, str(item["from"]["id"]), to_kind, str(item["to"]["id"]))
                )
        return batch_answer([], [])

    @app.get(f"/crm/owners/{V}")
    def owners():
        limit = min(int(request.args.get("limit", 100)), 500)
        after = int(request.args.get("after") or 0)
        page = request.portal.owners[after : after + limit]
        body: dict[str, Any] = {"results": page}
        if after + limit < len(request.portal.owners):
            body["paging"] = {"next": {"after": str(after + limit)}}
        return jsonify(body)

    @app.get(f"/settings/users/{V}/<user_id>")
    def user(user_id: str):
        """The Users API's one user (scope settings.users.read), by id."""
        found = request.portal.users.get(int(user_id)) if user_id.isdigit() else None
        if found is None:
            return _error(404, f"No user with id {user_id} in this account", "OBJECT_NOT_FOUND")
        return jsonify(found)

    # --- test hooks and the page -----------------------------------------------------------

    # --- the webhooks journal (local: one portal's entries) ---------------------------------

    def journal_fetch(entry: dict) -> dict:
        """HubSpot's answer names a short-lived URL that holds the entry."""
        return {
            "currentOffset": entry["offset"],
            "expiresAt": _iso(sandbox.wall_clock() + dt.timedelta(minutes=5)),
            "url": f"{request.host_url.rstrip('/')}/_journal/entries/{entry['offset']}",
        }

    def journal_of(portal_arg: str | None) -> tuple[list[dict] | None, Response | None]:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        expires = sandbox.app_tokens.get(token)
        if expires is None or expires < sandbox.clock():
            return None, _error(401, "client credentials token required", "INVALID_AUTHENTICATION")
        with sandbox.lock:
            entries = [
                e for e in sandbox.journal if portal_arg is None or str(e["portalId"]) == portal_arg
            ]
        return entries, None

    @app.get(f"/webhooks-journal/journal-local/{V}/earliest")
    def journal_earliest():
        entries, failure = journal_of(request.args.get("installPortalId"))
        if failure is not None:
            return failure
        if not entries:
            return Response(status=204)
        return jsonify(journal_fetch(entries[0]))

    @app.get(f"/webhooks-journal/journal-local/{V}/batch/<offset>/next/<int:count>")
    def journal_next(offset: str, count: int):
        entries, failure = journal_of(request.args.get("installPortalId"))
        if failure is not None:
            return failure
        offsets = [e["offset"] for e in entries]
        if offset not in offsets:
            return _error(404, f"offset {offset} has expired or does not exist", "NOT_FOUND")
        after = entries[offsets.index(offset) + 1 :][: max(1, count)]
        now = _iso(sandbox.wall_clock())
        return jsonify(
            {
                "status": "COMPLETE",
                "results": [journal_fetch(e) for e in after],
                "startedAt": now,
                "completedAt": now,
            }
        )

    @app.get("/_journal/entries/<offset>")
    def journal_entry(offset: str):
        with sandbox.lock:
            found = [e for e in sandbox.journal if e["offset"] == offset]
        if not found:
            return _error(404, "no such journal entry", "NOT_FOUND")
        return jsonify({k: v for k, v in found[0].items() if k != "offset"})

    # --- app installs ----------------------------------------------------------------------

    @app.delete(f"/appinstalls/{V}/external-install")
    def external_uninstall():
        """The app uninstalls itself from the portal its token belongs to."""
        hub_id = request.portal.hub_id
        sandbox.uninstall(hub_id)
        return Response(status=204)

    @app.post("/_sandbox/faults")
    def set_faults():
        body = request.get_json(silent=True) or {}
        with sandbox.lock:
            sandbox.faults.next_statuses = list(body.get("next_statuses", []))
            sandbox.faults.invalid_values = set(body.get("invalid_values", []))
        return jsonify({"ok": True})

    @app.post("/_sandbox/change")
    def change():
        """Someone edits a record in HubSpot (assigns an owner, moves the stage): the change is
        made and, when a webhook target is set, notified like HubSpot does."""
        body = request.get_json(silent=True) or {}
        try:
            sandbox.change_property(
                int(body["hub_id"]),
                body["object_type"],
                str(body["object_id"]),
                body["property"],
                body.get("value"),
            )
        except (KeyError, ValueError) as exc:
            return _error(400, f"bad change: {exc}")
        return jsonify({"ok": True})

    @app.get("/_sandbox/stats")
    def stats():
        return jsonify(dict(sandbox.stats))

    @app.get("/_sandbox/portals/<int:hub_id>")
    def portal_records(hub_id: int):
        """Every record of a portal with all its properties (benchmarks compare portals)."""
        with sandbox.lock:
            portal = sandbox.portals.get(hub_id)
            if portal is None:
                return _error(404, f"no portal {hub_id}")
            return jsonify(
                {"objects": {kind: dict(records) for kind, records in portal.objects.items()}}
            )

    @app.get("/")
    def page():
        rows = []
        with sandbox.lock:
            portals = list(sandbox.portals.values())
            for portal in portals:
                rows.append(f"<h2>Portal {portal.hub_id}</h2>")
                for kind in OBJECT_TYPES:
                    records = list(portal.objects[kind].values())
                    rows.append(f"<h3>{kind} ({len(records)})</h3><table border=1>")
                    for record in records[:50]:
                        props = {k: v for k, v in record["properties"].items() if v}
                        cells = "".join(
                            f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                            for k, v in sorted(props.items())
                        )
                        rows.append(
                            f"<tr><td>{record['id']}</td><td><table>{cells}</table></td></tr>"
                        )
                    rows.append("</table>")
        return Response(
            "<!doctype html><title>HubSpot sandbox</title><h1>HubSpot sandbox</h1>" + "".join(rows),
            mimetype="text/html",
        )

    return app


class SandboxServer(LoopbackServer):
    """The sandbox on a loopback port in a background thread (tests, demo, benchmark)."""

    def __init__(self, sandbox: Sandbox | None = None, port: int = 0, quiet: bool = True):
        self.app = create_sandbox(sandbox)
        self.sandbox: Sandbox = self.app.sandbox
        super().__init__(self.app, port, quiet)


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.hubspot --port 8025 [--webhook-target URL]``"""
    import argparse

    parser = argparse.ArgumentParser(description="A local HubSpot-compatible sandbox.")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--requests-per-10s", type=int, default=110)
    parser.add_argument("--webhook-target", default=None, help="where to send change webhooks")
    args = parser.parse_args(argv)
    sandbox = Sandbox(requests_per_window=args.requests_per_10s)
    sandbox.webhook_target = args.webhook_target
    server = SandboxServer(sandbox, port=args.port, quiet=True)
    print(f"HubSpot sandbox on {server.url} (records at {server.url}/)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.server.serve_forever()


if __name__ == "__main__":
    main()


def _account_picker(portals) -> str:
    """HubSpot's "choose an account" step: one link per portal, this URL with its hub_id."""
    links = "".join(
        f'<li><a href="{escape(request.full_path)}&amp;hub_id={hub}">Portal {hub}</a></li>'
        for hub in sorted(portals)
    )
    return (
        f"<!doctype html><title>Choose an account</title><h1>Choose an account</h1><ul>{links}</ul>"
    )
