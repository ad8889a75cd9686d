"""Salesforce: the connector (through ``simple-salesforce``) and the OAuth web-server flow.

Accounts are Accounts; users are Contacts, or Leads where the product user's company is not in
Salesforce (yet). Ids tell the two apart (Contact ids start with 003, Lead ids with 00Q), so a
user's stored id routes each write. The app's properties are custom fields named
``<catalogue name>__c``, created through the Metadata API and opened to the integration user by
a permission set (without it Salesforce hides them from the API).

Writes: sObject Collections (200 records per call) for normal volumes, one Bulk API 2.0 job per
object above ``bulk_threshold`` records. Creates are upserts on the app's external-id field,
so a retried request never creates a record twice. Every response's ``Sforce-Limit-Info``
header updates the org's daily API usage; syncing stops (``CrmPaused``) while the usage is
inside the reserve kept for the customer's other integrations.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import heapq
import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlparse

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceOperationError,
    SalesforceRefusedRequest,
)
from simple_salesforce.format import quote_soql_value
from zeep.exceptions import Fault

from connectors.base import (
    PULL_FIELDS,
    Caller,
    CrmError,
    CrmObject,
    CrmPaused,
    Failure,
    Outcome,
    Owner,
    PropertySpec,
    TaskSpec,
    Write,
    batches,
)

log = logging.getLogger(__name__)

API_VERSION = "62.0"
COLLECTION_LIMIT = 200  # records per sObject Collections call
IN_CHUNK = 200  # values per SOQL IN (...) clause at most
# SOQL travels in the query URL: the values of one query stay within this many characters so
# the URL (encoded) stays well inside Salesforce's 16 KB limit.
QUERY_VALUE_CHARS = 6000
BULK_JOB_LIMIT = 50_000  # records per Bulk API 2.0 job this connector builds
TIMEOUT = (5.0, 60.0)
SCOPES = ("api", "refresh_token", "offline_access")
PERMISSION_SET = "PQL_Engine"
ID_PREFIXES = {"001": "Account", "003": "Contact", "00Q": "Lead", "005": "User"}
NOT_PROVIDED = "[not provided]"  # Salesforce's own filler for a required name nobody gave
# Salesforce fields of the engine's pull fields (connectors.base.PULL_FIELDS), per object.
PULLED_FIELDS = {
    "Account": {
        "owner_id": "OwnerId",
        "lifecycle_stage": "Type",
        "last_sales_activity_at": "LastActivityDate",
    },
    "Contact": {"owner_id": "OwnerId", "last_sales_activity_at": "LastActivityDate"},
    "Lead": {
        "owner_id": "OwnerId",
        "lifecycle_stage": "Status",
        "last_sales_activity_at": "LastActivityDate",
    },
}
STANDARD_FIELDS = {
    "Account": {"name": "Name", "domain": "Website"},
    "Contact": {"email": "Email", "firstname": "FirstName", "lastname": "LastName"},
    "Lead": {"email": "Email", "firstname": "FirstName", "lastname": "LastName"},
}
# Record-level errors that mean "this record is gone": forget its id and match again.
GONE = {"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY", "INVALID_ID_FIELD", "NOT_FOUND"}
LOGIN_HOSTS = {
    "production": "https://login.salesforce.com",
    "sandbox": "https://test.salesforce.com",
}


def field_name(name: str) -> str:
    """A catalogue name as a custom field's API name (Salesforce allows 40 characters before
    ``__c``, letters, digits and single underscores, starting with a letter)."""
    if len(name) > 40 or "__" in name or not name[:1].isalpha() or name.endswith("_"):
        raise ValueError(f"{name!r} cannot be a Salesforce custom field name")
    return f"{name}__c"


def object_of(crm_id: str) -> str:
    kind = ID_PREFIXES.get(crm_id[:3])
    if kind is None:
        raise CrmError(f"{crm_id} is not an Account, Contact, Lead or User id", 400)
    return kind


def value_chunks(values: Sequence[str], limit: int = IN_CHUNK) -> Iterator[list[str]]:
    """``values`` in groups of at most ``limit`` whose quoted length stays under
    QUERY_VALUE_CHARS."""
    chunk: list[str] = []
    size = 0
    for value in values:
        cost = len(value) + 24  # quotes, separator, and a LIKE clause's words
        if chunk and (len(chunk) == limit or size + cost > QUERY_VALUE_CHARS):
            yield chunk
            chunk, size = [], 0
        chunk.append(value)
        size += cost
    if chunk:
        yield chunk


def _soql_list(values: Sequence[str]) -> str:
    return "(" + ", ".join(quote_soql_value(v) for v in values) + ")"


def _soql_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":  # +0000 → +00:00
        text = text[:-2] + ":" + text[-2:]
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def host_of(website: str | None) -> str | None:
    """The bare host of a Website value ("https://www.Acme.com/about" → "acme.com")."""
    if not website:
        return None
    text = website.strip().lower()
    if "://" not in text:
        text = "http://" + text
    host = urlparse(text).hostname or ""
    return host.removeprefix("www.") or None


def _error_code(error: dict[str, Any]) -> str:
    return str(error.get("statusCode") or error.get("errorCode") or "UNKNOWN")


def _error_text(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{_error_code(e)}: {e.get('message', '')}" for e in errors) or "failed"


def _duplicate_of(errors: list[dict[str, Any]]) -> str | None:
    """The record a duplicate rule matched, when Salesforce names it."""
    for error in errors:
        result = error.get("duplicateResult") or {}
        for match in result.get("matchResults") or []:
            for record in match.get("matchRecords") or []:
                found = (record.get("record") or {}).get("Id")
                if found:
                    return str(found)
    return None


# --- errors and the daily API limit -------------------------------------------------------------


def classify(exc: Exception) -> Failure | None:
    if isinstance(exc, requests.Timeout | requests.ConnectionError):
        return Failure(None, f"no answer: {exc.__class__.__name__}")
    if isinstance(exc, Fault):  # the Metadata API (SOAP)
        code = str(exc.code or "")
        if "INVALID_SESSION_ID" in code or "INVALID_SESSION_ID" in str(exc.message):
            return Failure(401, str(exc.message), "INVALID_SESSION_ID", expired_token=True)
        return Failure(400, f"the Metadata API refused: {exc.message}", code or "METADATA")
    if isinstance(exc, SalesforceOperationError) and not isinstance(exc, SalesforceError):
        return Failure(400, str(exc), "BULK_JOB_FAILED")
    if not isinstance(exc, SalesforceError):
        return None
    content = exc.content
    first = content[0] if isinstance(content, list) and content else content
    code = _error_code(first) if isinstance(first, dict) else None
    message = first.get("message", str(exc)) if isinstance(first, dict) else str(content)
    if isinstance(exc, SalesforceExpiredSession):
        return Failure(401, message, code, expired_token=True)
    if code == "INVALID_FIELD":
        return Failure(exc.status, hidden_fields_message(message), code)
    if isinstance(exc, SalesforceRefusedRequest) and code == "REQUEST_LIMIT_EXCEEDED":
        if "concurrent" in message.lower():
            # Too many long requests at once in the org: a short wait, like a 429.
            return Failure(429, message, code, retry_after=5.0)
        return Failure(
            403,
            f"the org's daily API request limit is spent ({message})",
            code,
            quota_exhausted=True,
        )
    return Failure(exc.status, message, code)


def hidden_fields_message(detail: str) -> str:
    return (
        f"Salesforce hides the app's fields from the integration user ({detail}); the "
        f"permission set {PERMISSION_SET} is granted again on the next sync"
    )


class FieldsNotVisible(CrmError):
    """Salesforce does not show the app's fields to the integration user: the permission set
    is missing or not assigned. The next schema check repairs it."""


@dataclass
class DailyLimit:
    """The org's API request usage as the last response reported it (``Sforce-Limit-Info``),
    and the part of the daily allowance kept for the customer's other integrations. Serves as
    the connector's rate budget: ``acquire`` refuses once usage reaches the reserve."""

    reserve_fraction: float = 0.2
    pause_seconds: float = 3600.0
    used: int | None = None
    total: int | None = None

    def observe(self, header: str | None) -> None:
        usage = Salesforce.parse_api_usage(header).get("api-usage") if header else None
        if usage is not None:
            self.used, self.total = usage.used, usage.total

    @property
    def ceiling(self) -> int | None:
        if self.total is None:
            return None
        return int(self.total * (1 - self.reserve_fraction))

    def reason(self) -> str:
        return (
            f"Salesforce daily API requests: {self.used:,} of {self.total:,} used; "
            f"{self.reserve_fraction:.0%} of the allowance is kept for the org's other "
            f"integrations, so syncing waits until usage is below {self.ceiling:,}"
        )

    def acquire(self) -> None:
        if self.ceiling is not None and self.used is not None and self.used >= self.ceiling:
            raise CrmPaused(self.reason(), self.pause_seconds, "API_RESERVE")

    def pause(self, seconds: float) -> None:
        return None  # no shared per-second window to hold: the caller waits itself


# --- OAuth 2.0 web-server flow with PKCE -------------------------------------------------------


@dataclass(frozen=True)
class SalesforceTokens:
    access_token: str
    refresh_token: str
    instance_url: str
    org_id: str
    user_id: str
    # Salesforce does not say when an access token expires (the org's session timeout
    # decides): refreshed after this long, or at once when a call answers 401.
    expires_in: int = 3600


def pkce_pair() -> tuple[str, str]:
    """A code verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(
    login_url: str, client_id: str, redirect_uri: str, state: str, challenge: str
) -> str:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(SCOPES),
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "prompt": "login consent",
    }
    return f"{login_url.rstrip('/')}/services/oauth2/authorize?{urlencode(query)}"


def _token_grant(
    login_url: str, form: dict[str, str], keep_refresh: str = "", verify: str | bool = True
) -> SalesforceTokens:
    url = f"{login_url.rstrip('/')}/services/oauth2/token"
    try:
        response = requests.post(url, data=form, timeout=TIMEOUT, verify=verify)
    except requests.RequestException as exc:
        raise CrmError(f"Salesforce token endpoint unreachable: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        detail = body.get("error_description") or body.get("error") or response.text[:200]
        raise CrmError(f"Salesforce refused the token request: {detail}", response.status_code)
    missing = [k for k in ("access_token", "instance_url", "id") if not body.get(k)]
    if missing:
        raise CrmError(f"Salesforce's token answer lacks {', '.join(missing)}", 502)
    # The identity URL ends in /id/<org id>/<user id>.
    parts = urlparse(body["id"]).path.rstrip("/").split("/")
    if len(parts) < 3 or parts[-3] != "id":
        raise CrmError(f"Salesforce's identity URL is not understood: {body['id']}", 502)
    return SalesforceTokens(
        access_token=body["access_token"],
        refresh_token=body.get("refresh_token") or keep_refresh,
        instance_url=body["instance_url"].rstrip("/"),
        org_id=parts[-2],
        user_id=parts[-1],
    )


def exchange_code(
    login_url: str,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
    verifier: str,
    verify: str | bool = True,
) -> SalesforceTokens:
    tokens = _token_grant(
        login_url,
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        verify=verify,
    )
    if not tokens.refresh_token:
        raise CrmError(
            "Salesforce gave no refresh token: the connected app needs the refresh_token scope",
            502,
        )
    return tokens


def refresh_tokens(
    login_url: str,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    verify: str | bool = True,
) -> SalesforceTokens:
    """A new access token; Salesforce keeps the refresh token (it is not rotated)."""
    return _token_grant(
        login_url,
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
            "client_secret": client_secret,
        },
        keep_refresh=refresh_token,
        verify=verify,
    )


def revoke(login_url: str, token: str, verify: str | bool = True) -> bool:
    """Revoke a refresh token (and its access tokens). True when Salesforce confirmed."""
    try:
        response = requests.post(
            f"{login_url.rstrip('/')}/services/oauth2/revoke",
            data={"token": token},
            timeout=TIMEOUT,
            verify=verify,
        )
    except requests.RequestException as exc:
        log.warning("Salesforce token revocation failed: %s", exc)
        return False
    if response.status_code != 200:
        log.warning("Salesforce token revocation answered %s", response.status_code)
    return response.status_code == 200


# --- the connector ------------------------------------------------------------------------------


class PinnedSession(requests.Session):
    """A session that checks certificates against ``ca_file`` for every request. (requests
    lets REQUESTS_CA_BUNDLE in the environment win over ``Session.verify``; an explicit
    per-request ``verify`` wins over both.)"""

    def __init__(self, ca_file: str):
        super().__init__()
        self.ca_file = ca_file

    def request(self, method, url, **kwargs):
        if kwargs.get("verify") in (None, True):
            kwargs["verify"] = self.ca_file
        return super().request(method, url, **kwargs)


class SalesforceConnector:
    batch_limit = COLLECTION_LIMIT
    account_type = "Account"
    user_type = "Contact"  # and Lead: see the module's docstring

    def __init__(
        self,
        instance_url: str,
        caller: Caller,
        key_fields: dict[str, str],
        kinds: dict[str, str],
        limit: DailyLimit,
        integration_user_id: str | None = None,
        bulk_threshold: int = 2000,
        bulk_poll_seconds: float = 2.0,
        api_version: str = API_VERSION,
        session: requests.Session | None = None,
    ):
        """``key_fields``: "account"/"user" → the app's key property (catalogue name);
        ``kinds``: catalogue name → kind, to write each value as its field's type."""
        self.instance_url = instance_url.rstrip("/")
        self.caller, self.limit = caller, limit
        self.account_key = field_name(key_fields["account"])
        self.user_key = field_name(key_fields["user"])
        self.kinds = kinds
        self.integration_user_id = integration_user_id
        self.bulk_threshold, self.bulk_poll_seconds = bulk_threshold, bulk_poll_seconds
        self.api_version = api_version
        self.session = session or requests.Session()
        self.session.hooks["response"].append(self._on_response)
        self._clients: dict[str, Salesforce] = {}
        self._granted: dict[str, set[str]] = {}  # object → our fields in the permission set
        self._assigned = False

    # -- plumbing

    def _on_response(self, response: requests.Response, *args, **kwargs) -> None:
        self.caller.count("api_calls")
        self.limit.observe(response.headers.get("Sforce-Limit-Info"))

    def _client(self, token: str) -> Salesforce:
        client = self._clients.get(token)
        if client is None:
            self._clients = {
                token: Salesforce(
                    instance_url=self.instance_url,
                    session_id=token,
                    version=self.api_version,
                    session=self.session,
                )
            }
            client = self._clients[token]
        return client

    def _call(self, label: str, work: Callable[[Salesforce], Any]) -> Any:
        try:
            return self.caller(label, lambda token: work(self._client(token)))
        except CrmPaused as exc:
            if exc.category == "API_RESERVE":
                raise  # the reserve's own pause
            # The org's limit is spent: wait as long as for the reserve.
            raise CrmPaused(str(exc), self.limit.pause_seconds, exc.category) from exc

    def _rest(self, label: str, method: str, path: str, **kwargs) -> Any:
        kwargs.setdefault("timeout", TIMEOUT)
        return self._call(label, lambda sf: sf.restful(path, method=method, **kwargs))

    def _query(self, label: str, soql: str) -> Iterator[dict[str, Any]]:
        """Every record of a SOQL query, one call per page of results."""
        page = self._call(label, lambda sf: sf.query(soql, timeout=TIMEOUT))
        while True:
            yield from page.get("records") or []
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return
            url = page["nextRecordsUrl"]
            page = self._call(label, lambda sf, u=url: sf.query_more(u, True, timeout=TIMEOUT))

    def write_batch(self, pending: int) -> int:
        return min(pending, BULK_JOB_LIMIT) if pending > self.bulk_threshold else COLLECTION_LIMIT

    # -- values

    def _sf_value(self, name: str, value: str | None) -> Any:
        kind = self.kinds.get(name, "string")
        if value in (None, ""):
            return False if kind == "bool" else None
        if kind == "number":
            number = float(value)
            return int(number) if number.is_integer() else number
        if kind == "bool":
            return value == "true"
        if kind == "datetime":
            moment = dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)
            return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        if kind == "string":
            return value[:255]
        return value

    def _fields(self, sobject: str, properties: dict[str, str | None]) -> dict[str, Any]:
        standard = STANDARD_FIELDS.get(sobject, {})
        out = {}
        for name, value in properties.items():
            if name in standard:
                if value not in (None, ""):
                    out[standard[name]] = value
            elif name in self.kinds:
                out[field_name(name)] = self._sf_value(name, value)
        return out

    def _key_field(self, sobject: str) -> str:
        return self.account_key if sobject == "Account" else self.user_key

    # -- schema

    def ensure_schema(
        self, object_type: str, group: tuple[str, str], specs: Sequence[PropertySpec]
    ) -> list[str]:
        """Custom fields (Metadata API upserts, ten per call) for fields missing from the
        object's describe or whose picklist values changed; then the permission set with read
        and edit on every field of the app, assigned to the integration user."""
        objects = ["Account"] if object_type == "Account" else ["Contact", "Lead"]
        created: list[str] = []
        for sobject in objects:
            described = self._call(
                f"describe {sobject}", lambda sf, o=sobject: getattr(sf, o).describe()
            )
            visible = {f["name"]: f for f in described.get("fields") or []}
            stale = []
            for spec in specs:
                name = field_name(spec.name)
                have = visible.get(name)
                if have is None:
                    stale.append(spec)
                    created.append(f"{sobject}.{name}")
                elif spec.kind == "enumeration":
                    values = [v.get("value") for v in have.get("picklistValues") or []]
                    if values != list(spec.options):
                        stale.append(spec)
            if stale:
                self._upsert_fields(sobject, stale)
            self._granted.setdefault(sobject, set()).update(field_name(s.name) for s in specs)
        self._grant()
        return created

    def _custom_field(self, mdapi, sobject: str, spec: PropertySpec):
        common = {
            "fullName": f"{sobject}.{field_name(spec.name)}",
            "label": spec.label[:40],
            "description": (spec.description or spec.label)[:1000],
            "inlineHelpText": (spec.description or spec.label)[:510],
        }
        if spec.unique:
            return mdapi.CustomField(
                **common,
                type="Text",
                length=255,
                externalId=True,
                unique=True,
                caseSensitive=False,
            )
        if spec.kind == "number" and spec.percent:
            return mdapi.CustomField(**common, type="Percent", precision=6, scale=2)
        if spec.kind == "number":
            return mdapi.CustomField(**common, type="Number", precision=18, scale=2)
        if spec.kind == "bool":
            return mdapi.CustomField(**common, type="Checkbox", defaultValue="false")
        if spec.kind == "datetime":
            return mdapi.CustomField(**common, type="DateTime")
        if spec.kind == "enumeration":
            values = [mdapi.CustomValue(fullName=o, label=o, default=False) for o in spec.options]
            return mdapi.CustomField(
                **common,
                type="Picklist",
                valueSet=mdapi.ValueSet(
                    restricted=True,
                    valueSetDefinition=mdapi.ValueSetValuesDefinition(value=values, sorted=False),
                ),
            )
        if spec.kind == "text":
            return mdapi.CustomField(**common, type="LongTextArea", length=32768, visibleLines=3)
        return mdapi.CustomField(**common, type="Text", length=255)

    def _metadata_api(self, sf: Salesforce):
        """simple-salesforce's Metadata API client. Its SOAP client (zeep) gets a transport
        of its own; it is pointed at this connector's session so metadata calls use the same
        certificate check, count in the call statistics and report the org's usage."""
        mdapi = sf.mdapi
        transport = getattr(getattr(mdapi, "_client", None), "transport", None)
        if transport is not None and transport.session is not self.session:
            transport.session = self.session
        return mdapi

    def _upsert_fields(self, sobject: str, specs: Sequence[PropertySpec]) -> None:
        for chunk in batches(specs, 10):  # the Metadata API's limit per call

            def upsert(sf, chunk=chunk):
                mdapi = self._metadata_api(sf)
                _metadata(
                    mdapi.CustomField.upsert, [self._custom_field(mdapi, sobject, s) for s in chunk]
                )

            self._call(f"create {len(chunk)} {sobject} fields", upsert)
        log.info("Salesforce: %s custom fields upserted on %s", len(specs), sobject)

    def _grant(self) -> None:
        """The permission set: read and edit on every field of the app (an upsert replaces
        its field list, so it always names all of them), then its assignment to the user the
        app runs as."""
        permissions = [
            {"field": f"{sobject}.{name}", "readable": True, "editable": True}
            for sobject, names in sorted(self._granted.items())
            for name in sorted(names)
        ]

        def upsert(sf):
            mdapi = self._metadata_api(sf)
            permission_set = mdapi.PermissionSet(
                fullName=PERMISSION_SET,
                label="PQL engine",
                description="Lets the PQL engine's integration user read and write its fields",
                fieldPermissions=[mdapi.PermissionSetFieldPermissions(**p) for p in permissions],
            )
            _metadata(mdapi.PermissionSet.upsert, [permission_set])

        self._call("upsert permission set", upsert)
        if self._assigned or not self.integration_user_id:
            return
        ids = [
            r["Id"]
            for r in self._query(
                "find permission set",
                f"SELECT Id FROM PermissionSet WHERE Name = {quote_soql_value(PERMISSION_SET)}",
            )
        ]
        if not ids:
            raise CrmError(f"permission set {PERMISSION_SET} not found after its upsert", 404)
        assigned = list(
            self._query(
                "find permission set assignment",
                "SELECT Id FROM PermissionSetAssignment WHERE PermissionSetId = "
                f"{quote_soql_value(ids[0])} AND AssigneeId = "
                f"{quote_soql_value(self.integration_user_id)}",
            )
        )
        if not assigned:
            self._rest(
                "assign permission set",
                "POST",
                "sobjects/PermissionSetAssignment",
                json={"PermissionSetId": ids[0], "AssigneeId": self.integration_user_id},
            )
        self._assigned = True

    # -- matching

    def find_by_key(self, object_type: str, keys: Sequence[str]) -> dict:
        found: dict[str, str] = {}
        sobjects = ["Account"] if object_type == "Account" else ["Contact", "Lead"]
        for sobject in sobjects:
            key = self._key_field(sobject)
            extra = " AND IsConverted = false" if sobject == "Lead" else ""
            for chunk in value_chunks([k for k in keys if k not in found]):
                soql = f"SELECT Id, {key} FROM {sobject} WHERE {key} IN {_soql_list(chunk)}{extra}"
                for record in self._query(f"find {sobject} by key", soql):
                    found.setdefault(record[key], record["Id"])
        return found

    def find_by_natural_key(self, object_type: str, values: Sequence[str]) -> dict:
        if object_type == "Account":
            return self._accounts_by_domain(values)
        found: dict[str, str] = {}
        for chunk in value_chunks(values):
            soql = (
                f"SELECT Id, Email FROM Contact WHERE Email IN {_soql_list(chunk)} "
                "ORDER BY CreatedDate"
            )
            for record in self._query("find contacts by email", soql):
                found.setdefault((record.get("Email") or "").lower(), record["Id"])
        rest = [v for v in values if v not in found]
        for chunk in value_chunks(rest):
            soql = (
                "SELECT Id, Email, IsConverted, ConvertedContactId FROM Lead WHERE Email IN "
                f"{_soql_list(chunk)} ORDER BY CreatedDate"
            )
            for record in self._query("find leads by email", soql):
                email = (record.get("Email") or "").lower()
                if record.get("IsConverted"):
                    # A converted lead lives on as its contact.
                    if record.get("ConvertedContactId"):
                        found[email] = record["ConvertedContactId"]
                else:
                    found.setdefault(email, record["Id"])
        return found

    def _accounts_by_domain(self, domains: Sequence[str]) -> dict:
        """Website holds free text ("https://www.acme.com/"): candidates by LIKE, then the
        host compared exactly. The oldest account wins when several share a domain."""
        found: dict[str, str] = {}
        for chunk in value_chunks(domains):
            likes = " OR ".join(f"Website LIKE {quote_soql_value('%' + d + '%')}" for d in chunk)
            soql = f"SELECT Id, Website FROM Account WHERE {likes} ORDER BY CreatedDate"
            wanted = set(chunk)
            for record in self._query("find accounts by domain", soql):
                host = host_of(record.get("Website"))
                if host in wanted:
                    found.setdefault(host, record["Id"])
        return found

    # -- writes

    def update(self, object_type: str, writes: Sequence[Write]) -> list[Outcome]:
        by_object: dict[str, list[Write]] = {}
        for write in writes:
            by_object.setdefault(object_of(write.crm_id), []).append(write)
        outcomes: dict[str, Outcome] = {}
        for sobject, group in by_object.items():
            if len(group) > self.bulk_threshold:
                results = self._bulk(sobject, group, create=False)
            else:
                results = []
                for chunk in batches(group, COLLECTION_LIMIT):
                    results += self._collection_update(chunk)
            outcomes.update({o.key: o for o in results})
        converted = [w for w in writes if outcomes[w.key].error == "CANNOT_UPDATE_CONVERTED_LEAD"]
        if converted:
            outcomes.update({o.key: o for o in self._follow_conversions(converted)})
        return [outcomes[w.key] for w in writes]

    def _records(self, writes: Sequence[Write]) -> list[dict[str, Any]]:
        return [
            {
                "attributes": {"type": object_of(w.crm_id)},
                "id": w.crm_id,
                **self._fields(object_of(w.crm_id), w.properties),
            }
            for w in writes
        ]

    def _collection_update(self, writes: Sequence[Write]) -> list[Outcome]:
        answers = self._rest(
            f"update {len(writes)} records",
            "PATCH",
            "composite/sobjects",
            json={"allOrNone": False, "records": self._records(writes)},
            # Our fields only change: a duplicate rule has nothing to say about that.
            headers={"Sforce-Duplicate-Rule-Header": "allowSave=true"},
        )
        return [self._outcome(w, a, w.crm_id) for w, a in zip(writes, answers, strict=True)]

    def _outcome(self, write: Write, answer: dict[str, Any], crm_id: str | None) -> Outcome:
        if answer.get("success"):
            return Outcome(write.key, answer.get("id") or crm_id)
        errors = answer.get("errors") or []
        codes = {_error_code(e) for e in errors}
        if "INVALID_FIELD" in codes:
            raise FieldsNotVisible(hidden_fields_message(_error_text(errors)), 400, "INVALID_FIELD")
        if "CANNOT_UPDATE_CONVERTED_LEAD" in codes:
            return Outcome(write.key, crm_id, error="CANNOT_UPDATE_CONVERTED_LEAD")
        return Outcome(write.key, crm_id, error=_error_text(errors), missing=bool(codes & GONE))

    def _follow_conversions(self, writes: Sequence[Write]) -> list[Outcome]:
        """Leads converted since we matched them: write to the contact each became."""
        ids = [w.crm_id for w in writes]
        soql = f"SELECT Id, ConvertedContactId FROM Lead WHERE Id IN {_soql_list(ids)}"
        contact_of = {
            r["Id"][:15]: r.get("ConvertedContactId")
            for r in self._query("find converted contacts", soql)
        }
        moved, out = [], []
        for write in writes:
            contact = contact_of.get(write.crm_id[:15])
            if contact:
                moved.append(Write(write.key, write.properties, crm_id=contact))
            else:
                out.append(
                    Outcome(write.key, error="converted lead without a contact", missing=True)
                )
        for chunk in batches(moved, COLLECTION_LIMIT):
            out += self._collection_update(chunk)
        return out

    def create(self, object_type: str, writes: Sequence[Write]) -> list[Outcome]:
        """Upserts on the app's external-id field: Accounts; users with a known account as
        Contacts on it, the others as Leads."""
        groups: dict[str, list[tuple[Write, dict[str, Any]]]] = {}
        for write in writes:
            if object_type == "Account":
                sobject = "Account"
                fields = self._fields("Account", write.properties)
                fields.setdefault("Name", write.key)
            else:
                sobject = "Contact" if write.company_crm_id else "Lead"
                fields = self._fields(sobject, write.properties)
                fields.setdefault("LastName", NOT_PROVIDED)
                if sobject == "Contact":
                    fields["AccountId"] = write.company_crm_id
                else:
                    fields["Company"] = NOT_PROVIDED
            fields[self._key_field(sobject)] = write.key
            groups.setdefault(sobject, []).append((write, fields))
        outcomes: dict[str, Outcome] = {}
        for sobject, group in groups.items():
            if len(group) > self.bulk_threshold:
                results = self._bulk(sobject, [w for w, _ in group], create=True, rows=group)
            else:
                results = []
                for chunk in batches(group, COLLECTION_LIMIT):
                    results += self._collection_upsert(sobject, chunk)
            outcomes.update({o.key: o for o in results})
        duplicates = [w for w in writes if (outcomes[w.key].error or "").startswith("DUPLICATE")]
        if duplicates:
            outcomes.update(
                {o.key: o for o in self._write_to_duplicates(object_type, duplicates, outcomes)}
            )
        return [outcomes[w.key] for w in writes]

    def _collection_upsert(
        self, sobject: str, group: Sequence[tuple[Write, dict[str, Any]]]
    ) -> list[Outcome]:
        key = self._key_field(sobject)
        answers = self._rest(
            f"upsert {len(group)} {sobject}",
            "PATCH",
            f"composite/sobjects/{sobject}/{key}",
            json={
                "allOrNone": False,
                "records": [{"attributes": {"type": sobject}, **f} for _, f in group],
            },
        )
        out = []
        for (write, _), answer in zip(group, answers, strict=True):
            errors = answer.get("errors") or []
            if not answer.get("success") and "DUPLICATES_DETECTED" in {
                _error_code(e) for e in errors
            }:
                out.append(Outcome(write.key, _duplicate_of(errors), error="DUPLICATES_DETECTED"))
            else:
                out.append(self._outcome(write, answer, None))
        return out

    def _write_to_duplicates(
        self, object_type: str, writes: Sequence[Write], outcomes: dict[str, Outcome]
    ) -> list[Outcome]:
        """The org's duplicate rules blocked a create because the record exists: write to the
        record the rule matched (or the one with the same domain or email) instead."""
        natural = "domain" if object_type == "Account" else "email"
        unnamed = [w for w in writes if not outcomes[w.key].crm_id and w.properties.get(natural)]
        by_natural = (
            self.find_by_natural_key(
                object_type, [str(w.properties[natural]).lower() for w in unnamed]
            )
            if unnamed
            else {}
        )
        targets, out = [], []
        for write in writes:
            match = outcomes[write.key].crm_id or by_natural.get(
                str(write.properties.get(natural) or "").lower()
            )
            if not match:
                out.append(
                    Outcome(
                        write.key,
                        error="DUPLICATES_DETECTED: the org's duplicate rule "
                        "blocked the create and named no record to write to",
                    )
                )
                continue
            ours = {k: v for k, v in write.properties.items() if k in self.kinds}
            targets.append(Write(write.key, ours, crm_id=match))
        for chunk in batches(targets, COLLECTION_LIMIT):
            out += self._collection_update(chunk)
        return out

    def _bulk(
        self,
        sobject: str,
        writes: Sequence[Write],
        create: bool,
        rows: Sequence[tuple[Write, dict[str, Any]]] | None = None,
    ) -> list[Outcome]:
        """One Bulk API 2.0 job (upsert on the key for creates, update by Id otherwise);
        every row's result mapped back to its write."""
        if rows is None:
            rows = [(w, {"Id": w.crm_id, **self._fields(sobject, w.properties)}) for w in writes]
        # A cell left out keeps the record's value, and every row of a job has the same
        # columns: rows are grouped by the fields they set, one job per group (a sync usually
        # writes the same fields everywhere, so one job).
        shapes: dict[tuple[str, ...], list[int]] = {}
        for index, (_, fields) in enumerate(rows):
            shapes.setdefault(tuple(sorted(fields)), []).append(index)
        outcomes: list[Outcome | None] = [None] * len(rows)
        for shape, indexes in shapes.items():
            job_rows = [{c: _csv_value(rows[i][1][c]) for c in shape} for i in indexes]
            results = self._bulk_job(sobject, create, [rows[i][0] for i in indexes], job_rows)
            for position, i in enumerate(indexes):
                outcomes[i] = results[position]
        return outcomes  # type: ignore[return-value]

    def _bulk_job(
        self, sobject: str, create: bool, writes: Sequence[Write], rows: list[dict[str, str]]
    ) -> dict[int, Outcome]:
        key = self._key_field(sobject)

        def run(sf):
            handler = getattr(sf.bulk2, sobject)
            if create:
                jobs = handler.upsert(
                    records=rows, external_id_field=key, wait=self.bulk_poll_seconds
                )
            else:
                jobs = handler.update(records=rows, wait=self.bulk_poll_seconds)
            results = {"successfulRecords": [], "failedRecords": [], "unprocessedRecords": []}
            for job in jobs:
                for kind, found in handler.get_all_ingest_records(job["job_id"]).items():
                    results[kind] += found
            return results

        results = self._call(f"bulk {'upsert' if create else 'update'} {len(rows)} {sobject}", run)
        self.caller.count("bulk_jobs")
        index_of = (
            {w.key: i for i, w in enumerate(writes)}
            if create
            else {w.crm_id[:15]: i for i, w in enumerate(writes)}
        )

        def index(row: dict[str, str]) -> int | None:
            return index_of.get(row.get(key) if create else (row.get("Id") or "")[:15])

        out: dict[int, Outcome] = {}
        for row in results["successfulRecords"]:
            i = index(row)
            if i is not None:
                out[i] = Outcome(writes[i].key, row.get("sf__Id") or writes[i].crm_id)
        for row in results["failedRecords"]:
            i = index(row)
            if i is None:
                continue
            text = row.get("sf__Error") or "failed"
            code = text.split(":", 1)[0]
            if code == "INVALID_FIELD":
                raise FieldsNotVisible(hidden_fields_message(text), 400, code)
            if code == "CANNOT_UPDATE_CONVERTED_LEAD":
                text = code
            elif code == "DUPLICATES_DETECTED":
                text = "DUPLICATES_DETECTED"
            out[i] = Outcome(writes[i].key, writes[i].crm_id, error=text, missing=code in GONE)
        for i, write in enumerate(writes):
            out.setdefault(
                i, Outcome(write.key, write.crm_id, error="not processed by the bulk job")
            )
        return out

    def associate_users(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Put contacts without an account on their product account (a contact already on an
        account stays there: sales put it there; leads have no account)."""
        account_of = {u[:15]: a for u, a in pairs if object_of(u) == "Contact"}
        for chunk in batches([u for u, _ in pairs if u[:15] in account_of], IN_CHUNK):
            soql = f"SELECT Id FROM Contact WHERE Id IN {_soql_list(chunk)} AND AccountId = null"
            loose = [r["Id"] for r in self._query("find contacts without account", soql)]
            for part in batches(loose, COLLECTION_LIMIT):
                records = [
                    {
                        "attributes": {"type": "Contact"},
                        "id": c,
                        "AccountId": account_of[c[:15]],
                    }
                    for c in part
                ]
                answers = self._rest(
                    f"associate {len(part)} contacts",
                    "PATCH",
                    "composite/sobjects",
                    json={"allOrNone": False, "records": records},
                    headers={"Sforce-Duplicate-Rule-Header": "allowSave=true"},
                )
                for record, answer in zip(records, answers, strict=True):
                    if not answer.get("success"):
                        log.warning(
                            "Salesforce: contact %s not put on account %s: %s",
                            record["id"],
                            record["AccountId"],
                            _error_text(answer.get("errors") or []),
                        )

    # -- reads

    def _select(self, sobject: str, fields: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """SOQL columns for the engine's fields, and column → field name."""
        pulled = PULLED_FIELDS.get(sobject, {})
        standard = STANDARD_FIELDS.get(sobject, {})
        column_of = {}
        for name in fields:
            if name in pulled:
                column_of[pulled[name]] = name
            elif name in standard:
                column_of[standard[name]] = name
            elif name not in PULL_FIELDS and name in self.kinds:
                column_of[field_name(name)] = name
        return ["Id", "SystemModstamp", *column_of], column_of

    def _object(self, record: dict[str, Any], fields: Sequence[str], column_of: dict) -> CrmObject:
        sobject = record.get("attributes", {}).get("type") or object_of(record["Id"])
        props = {name: None for name in fields if name in PULLED_FIELDS.get(sobject, {})}
        for column, name in column_of.items():
            props[name] = record.get(column)
        return CrmObject(record["Id"], props, _parse_time(record.get("SystemModstamp")))

    def read(
        self, object_type: str, crm_ids: Sequence[str], fields: Sequence[str]
    ) -> list[CrmObject]:
        by_object: dict[str, list[str]] = {}
        for crm_id in crm_ids:
            by_object.setdefault(object_of(crm_id), []).append(crm_id)
        out = []
        for sobject, ids in by_object.items():
            columns, column_of = self._select(sobject, fields)
            for chunk in batches(ids, IN_CHUNK):
                soql = f"SELECT {', '.join(columns)} FROM {sobject} WHERE Id IN {_soql_list(chunk)}"
                out += [
                    self._object(r, fields, column_of) for r in self._query(f"read {sobject}", soql)
                ]
        return out

    def owners(self) -> list[Owner]:
        soql = "SELECT Id, Email, Name, IsActive FROM User WHERE UserType = 'Standard'"
        return [
            Owner(r["Id"], r.get("Email"), r.get("Name"), archived=not r.get("IsActive", True))
            for r in self._query("list users", soql)
        ]

    def changed_since(
        self, object_type: str, since: dt.datetime, fields: Sequence[str]
    ) -> Iterator[CrmObject]:
        """Records the app writes (their key is set) modified since ``since`` by
        SystemModstamp, oldest first; for accounts also their opportunities' stages (the
        latest modified opportunity's stage wins)."""
        sobjects = ["Account"] if object_type == "Account" else ["Contact", "Lead"]
        streams = []
        for sobject in sobjects:
            columns, column_of = self._select(sobject, fields)
            soql = (
                f"SELECT {', '.join(columns)} FROM {sobject} WHERE SystemModstamp >= "
                f"{_soql_time(since)} AND {self._key_field(sobject)} != null "
                "ORDER BY SystemModstamp"
            )
            streams.append(
                self._object(r, fields, column_of) for r in self._query(f"changed {sobject}", soql)
            )
        if object_type == "Account" and "opportunity_stage" in fields:
            soql = (
                "SELECT AccountId, StageName, SystemModstamp FROM Opportunity WHERE "
                f"SystemModstamp >= {_soql_time(since)} AND AccountId != null "
                "ORDER BY SystemModstamp"
            )
            streams.append(
                CrmObject(
                    r["AccountId"],
                    {"opportunity_stage": r.get("StageName")},
                    _parse_time(r.get("SystemModstamp")),
                )
                for r in self._query("changed opportunities", soql)
            )
        yield from heapq.merge(
            *streams, key=lambda o: o.modified_at or dt.datetime.min.replace(tzinfo=dt.UTC)
        )

    # -- tasks

    def create_task(self, task: TaskSpec) -> str:
        body: dict[str, Any] = {
            "Subject": task.subject[:255],
            "Description": task.body,
            "WhatId": task.company_crm_id,
            "ActivityDate": task.due_at.date().isoformat(),
            "Priority": task.priority.capitalize(),
            "Status": "Not Started",
        }
        if task.user_crm_id and object_of(task.user_crm_id) == "Contact":
            body["WhoId"] = task.user_crm_id  # a Lead cannot be named with an account
        if task.owner_id:
            body["OwnerId"] = task.owner_id
        answer = self._rest("create task", "POST", "sobjects/Task", json=body)
        return str(answer["id"])

    def create_note(
        self, account_crm_id: str, title: str, body: str, owner_id: str | None = None
    ) -> str:
        """A Note on the Account (shown in its Notes & Attachments)."""
        note: dict[str, Any] = {"ParentId": account_crm_id, "Title": title[:80], "Body": body}
        if owner_id and object_of(owner_id) == "User":
            note["OwnerId"] = owner_id
        answer = self._rest("create note", "POST", "sobjects/Note", json=note)
        return str(answer["id"])


def _csv_value(value: Any) -> str:
    """A Bulk API 2.0 CSV cell: ``#N/A`` clears a field (an empty cell leaves it as is)."""
    if value is None:
        return "#N/A"
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


def _metadata(method: Callable[[list], None], components: list) -> None:
    """Run a Metadata API call; its refusals (raised as bare Exceptions by simple-salesforce)
    become CrmErrors."""
    try:
        method(components)
    except SalesforceError:
        raise
    except Exception as exc:
        if type(exc) is Exception:
            raise CrmError(
                f"the Metadata API refused: {str(exc).strip()}", 400, "METADATA"
            ) from exc
        raise
