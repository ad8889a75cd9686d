"""HubSpot through its official client, ``hubspot-api-client`` (which speaks urllib3).

Every request goes through the shared ``Caller`` (rate budget, 429 waits, backoff, token
refresh); this module only knows HubSpot's endpoints, payloads and answers. The base URL is a
setting, so the same code talks to HubSpot or to the local sandbox.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3
from hubspot import HubSpot

from connectors.base import (
    PULL_FIELDS,
    Caller,
    CrmError,
    CrmObject,
    Failure,
    Outcome,
    Owner,
    PropertySpec,
    TaskSpec,
    Write,
    batches,
)

BATCH_LIMIT = 100
SEARCH_PAGE = 100
SEARCH_CAP = 10_000  # HubSpot's search returns at most this many results per query
# HubSpot's search API allows a few requests per second per token, beside the general limit:
# searches are spaced so they stay under it instead of drawing 429s.
SEARCH_INTERVAL = 0.25
TIMEOUT = (5.0, 30.0)  # connect, read (seconds)
SCOPES = (
    "oauth",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.schemas.companies.write",
    "crm.schemas.contacts.write",
    "crm.objects.owners.read",
)
# HubSpot-defined association type ids (v4).
TASK_TO_COMPANY = 192
TASK_TO_CONTACT = 204
NOTE_TO_COMPANY = 190
CONTACT_TO_COMPANY = 279
MODIFIED_PROPERTY = {"companies": "hs_lastmodifieddate", "contacts": "lastmodifieddate"}
# The engine's pull fields (connectors.base.PULL_FIELDS) as HubSpot properties.
PULLED_PROPERTIES = {
    "owner_id": "hubspot_owner_id",
    "lifecycle_stage": "lifecyclestage",
    "last_contacted_at": "notes_last_contacted",
    "last_sales_activity_at": "hs_last_sales_activity_timestamp",
    "sales_activities": "num_contacted_notes",
}
FIELD_OF_PROPERTY = {prop: name for name, prop in PULLED_PROPERTIES.items()}
FIELD_TYPES = {
    "number": ("number", "number"),
    "bool": ("bool", "booleancheckbox"),
    "enumeration": ("enumeration", "select"),
    "datetime": ("datetime", "date"),
    "string": ("string", "text"),
    "text": ("string", "textarea"),
}


def classify(exc: Exception) -> Failure | None:
    """Read an exception of the HubSpot client: each API package has its own ApiException
    class, all with ``status``, ``headers`` and ``body``."""
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return Failure(None, f"no answer ({exc.__class__.__name__})")
    status = getattr(exc, "status", None)
    if status is None or not hasattr(exc, "body"):
        return None
    if status == 0:  # the client's own wrapper of a connection or TLS failure
        return Failure(None, f"no answer ({getattr(exc, 'reason', '')})")
    body = _json(getattr(exc, "body", None))
    message = body.get("message") or getattr(exc, "reason", None) or f"HTTP {status}"
    category = body.get("category") or body.get("errorType")
    headers = {k.lower(): v for k, v in dict(getattr(exc, "headers", None) or {}).items()}
    retry_after = None
    if status == 429:
        # HubSpot's limits are rolling windows: without a Retry-After, the oldest request
        # leaves the window soon, and a second is a fair wait.
        retry_after = float(headers["retry-after"]) if headers.get("retry-after") else 1.0
    return Failure(
        status=status,
        message=f"HTTP {status}: {message}",
        category=category,
        retry_after=retry_after,
        expired_token=status == 401,
    )


def _json(raw: Any) -> dict:
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode("utf-8", "replace")
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {"message": str(raw)[:200]}
    return value if isinstance(value, dict) else {}


def hubspot_property(spec: PropertySpec, group: str) -> dict:
    kind, field_type = FIELD_TYPES[spec.kind]
    body: dict[str, Any] = {
        "name": spec.name,
        "label": spec.label,
        "type": kind,
        "fieldType": field_type,
        "groupName": group,
        "description": spec.description,
        "formField": False,
    }
    if spec.kind == "bool":
        body["options"] = [
            {"label": "Yes", "value": "true", "displayOrder": 0},
            {"label": "No", "value": "false", "displayOrder": 1},
        ]
    elif spec.kind == "enumeration":
        body["options"] = [
            {"label": option, "value": option, "displayOrder": n}
            for n, option in enumerate(spec.options)
        ]
    if spec.unique:
        body["hasUniqueValue"] = True
    if spec.hidden:
        body["hidden"] = True
    return body


def _translated(function):
    """OAuth calls outside the Caller: their client exceptions become CrmError."""

    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            raise CrmError(failure.message, failure.status, failure.category) from exc

    call.__name__, call.__doc__ = function.__name__, function.__doc__
    return call


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int


def _token_grant(base_url: str, client_id: str, client_secret: str, **grant: str) -> Tokens:
    answer = HubSpot(host=base_url).oauth.tokens_api.create(
        client_id=client_id, client_secret=client_secret, _request_timeout=TIMEOUT, **grant
    )
    # A refresh may or may not hand back the refresh token; the one we hold stays valid.
    refresh = answer.refresh_token or grant.get("refresh_token", "")
    return Tokens(answer.access_token, refresh, int(answer.expires_in))


@_translated
def exchange_code(
    base_url: str, client_id: str, client_secret: str, code: str, redirect_uri: str
) -> Tokens:
    """The OAuth callback's code → tokens."""
    return _token_grant(
        base_url,
        client_id,
        client_secret,
        grant_type="authorization_code",
        code=code,
        redirect_uri=redirect_uri,
    )


@_translated
def refresh_tokens(base_url: str, client_id: str, client_secret: str, refresh_token: str) -> Tokens:
    return _token_grant(
        base_url, client_id, client_secret, grant_type="refresh_token", refresh_token=refresh_token
    )


@_translated
def portal_of(base_url: str, access_token: str) -> int:
    """The HubSpot portal (hub) id an access token belongs to."""
    info = HubSpot(host=base_url).oauth.access_tokens_api.get(
        token=access_token, _request_timeout=TIMEOUT
    )
    return int(info.hub_id)


def _next_after(answer: dict) -> str | None:
    return ((answer.get("paging") or {}).get("next") or {}).get("after")


def _ms(moment: dt.datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def _parse_time(value: Any) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = str(value)
    if text.isdigit():
        return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _properties_for(fields: Sequence[str]) -> list[str]:
    """HubSpot property names of the engine's fields (pull fields mapped, catalogue names as
    they are; pull fields HubSpot has no equivalent for left out)."""
    out = []
    for name in fields:
        if name in PULLED_PROPERTIES:
            out.append(PULLED_PROPERTIES[name])
        elif name not in PULL_FIELDS:
            out.append(name)
    return out


def _fields_of(props: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    out = {}
    for name in fields:
        if name in PULLED_PROPERTIES:
            out[name] = props.get(PULLED_PROPERTIES[name])
        elif name not in PULL_FIELDS:
            out[name] = props.get(name)
    return out


class HubSpotConnector:
    batch_limit = BATCH_LIMIT
    account_type = "companies"
    user_type = "contacts"

    def __init__(self, base_url: str, caller: Caller, key_properties: dict[str, str]):
        """``key_properties``: per object type, the app's unique id property."""
        self.caller = caller
        self.key_properties = key_properties
        self.client = HubSpot(host=base_url)
        self._apis: dict[str, Any] = {}
        self._last_search = -SEARCH_INTERVAL
        self.monotonic = time.monotonic

    # Client API objects are built once (each holds a connection pool); the token is set on
    # their configuration before every request.
    def _api(self, name: str, token: str):
        api = self._apis.get(name)
        if api is None:
            crm = self.client.crm
            api = {
                "companies.batch": lambda: crm.companies.batch_api,
                "contacts.batch": lambda: crm.contacts.batch_api,
                "companies.search": lambda: crm.companies.search_api,
                "contacts.search": lambda: crm.contacts.search_api,
                "properties": lambda: crm.properties.core_api,
                "groups": lambda: crm.properties.groups_api,
                "owners": lambda: crm.owners.owners_api,
                "tasks": lambda: crm.objects.tasks.basic_api,
                "notes": lambda: crm.objects.notes.basic_api,
                "associations": lambda: crm.associations.v4.batch_api,
            }[name]()
            self._apis[name] = api
        api.api_client.configuration.access_token = token
        return api

    def _call(self, label: str, api: str, method: str, *args, **kwargs):
        def request(token: str):
            if method == "do_search":
                wait = self._last_search + SEARCH_INTERVAL - self.monotonic()
                if wait > 0:
                    self.caller.sleep(wait)
                self._last_search = self.monotonic()
            return getattr(self._api(api, token), method)(*args, _request_timeout=TIMEOUT, **kwargs)

        return self.caller(label, request)

    def _json_call(self, label: str, api: str, method: str, *args, **kwargs) -> dict:
        """Like ``_call`` but returns the answer's JSON as is: the client's model
        deserialisation parses every timestamp with dateutil, which cost more than the HTTP
        round trip for a batch of 100 records."""
        raw = self._call(label, api, method, *args, _preload_content=False, **kwargs)
        return json.loads(raw.data or b"{}")

    # --- schema ------------------------------------------------------------------------------

    def ensure_schema(
        self, object_type: str, group: tuple[str, str], specs: Sequence[PropertySpec]
    ) -> list[str]:
        name, label = group
        try:
            self._call(
                f"create property group {object_type}.{name}",
                "groups",
                "create",
                object_type,
                property_group_create={"name": name, "label": label, "displayOrder": -1},
            )
        except CrmError as exc:
            if exc.status != 409:
                raise
        created = []
        for spec in specs:
            body = hubspot_property(spec, name)
            try:
                self._call(
                    f"create property {object_type}.{spec.name}",
                    "properties",
                    "create",
                    object_type,
                    property_create=body,
                )
                created.append(spec.name)
            except CrmError as exc:
                if exc.status != 409:
                    raise
                if spec.kind == "enumeration":
                    # It exists (ours from an earlier version, or created concurrently): make
                    # its options match the definitions (new segment names, say).
                    self._call(
                        f"update options of {object_type}.{spec.name}",
                        "properties",
                        "update",
                        object_type,
                        spec.name,
                        property_update={"options": body["options"]},
                    )
        return created

    # --- matching ----------------------------------------------------------------------------

    def find_by_key(self, object_type: str, keys: Sequence[str]) -> dict:
        key_property = self.key_properties[object_type]
        found: dict[str, str] = {}
        for batch in batches(keys, BATCH_LIMIT):
            answer = self._json_call(
                f"read {object_type} by {key_property}",
                f"{object_type}.batch",
                "read",
                batch_read_input_simple_public_object_id={
                    "idProperty": key_property,
                    "properties": [key_property],
                    "inputs": [{"id": k} for k in batch],
                },
            )
            for record in answer.get("results") or []:
                value = (record.get("properties") or {}).get(key_property)
                if value:
                    found[value] = record["id"]
        return found

    def find_by_natural_key(self, object_type: str, values: Sequence[str]) -> dict:
        found: dict[str, str] = {}
        wanted = sorted({v.lower() for v in values if v})
        if object_type == "contacts":
            for batch in batches(wanted, BATCH_LIMIT):
                answer = self._json_call(
                    "read contacts by email",
                    "contacts.batch",
                    "read",
                    batch_read_input_simple_public_object_id={
                        "idProperty": "email",
                        "properties": ["email"],
                        "inputs": [{"id": v} for v in batch],
                    },
                )
                for record in answer.get("results") or []:
                    email = (record.get("properties") or {}).get("email")
                    if email:
                        found.setdefault(email.lower(), record["id"])
            return found
        for batch in batches(wanted, SEARCH_PAGE):
            after = None
            while True:
                request = {
                    "filterGroups": [
                        {"filters": [{"propertyName": "domain", "operator": "IN", "values": batch}]}
                    ],
                    "properties": ["domain"],
                    "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                    "limit": SEARCH_PAGE,
                }
                if after:
                    request["after"] = after
                answer = self._json_call(
                    "search companies by domain",
                    "companies.search",
                    "do_search",
                    public_object_search_request=request,
                )
                for record in answer.get("results") or []:
                    domain = (record.get("properties") or {}).get("domain")
                    # Several companies may share a domain: the oldest (lowest id) wins.
                    if domain:
                        found.setdefault(domain.lower(), record["id"])
                after = _next_after(answer)
                if not after:
                    break
        return found

    # --- writes ------------------------------------------------------------------------------

    def update(self, object_type: str, writes: Sequence[Write]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for batch in batches(writes, BATCH_LIMIT):
            outcomes += self._bisecting(object_type, batch, self._update_batch)
        return outcomes

    def create(self, object_type: str, writes: Sequence[Write]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for batch in batches(writes, BATCH_LIMIT):
            outcomes += self._bisecting(object_type, batch, self._create_batch)
        return outcomes

    def _bisecting(self, object_type, batch: list[Write], send) -> list[Outcome]:
        """HubSpot rejects a whole batch (400) for one invalid input: split it until the bad
        inputs are alone, so only they fail and the rest lands."""
        try:
            return send(object_type, batch)
        except CrmError as exc:
            if exc.status not in (400, 422):
                raise
            if len(batch) == 1:
                return [Outcome(batch[0].key, batch[0].crm_id, error=str(exc))]
            middle = len(batch) // 2
            return self._bisecting(object_type, batch[:middle], send) + self._bisecting(
                object_type, batch[middle:], send
            )

    def _update_batch(self, object_type: str, batch: list[Write]) -> list[Outcome]:
        answer = self._json_call(
            f"update {len(batch)} {object_type}",
            f"{object_type}.batch",
            "update",
            batch_input_simple_public_object_batch_input={
                "inputs": [{"id": w.crm_id, "properties": w.properties} for w in batch]
            },
        )
        missing: dict[str, str] = {}
        for error in answer.get("errors") or []:
            context = error.get("context") or {}
            for crm_id in context.get("ids", []):
                missing[str(crm_id)] = f"{error.get('category')}: {error.get('message')}"
        outcomes = []
        for write in batch:
            if write.crm_id in missing:
                outcomes.append(
                    Outcome(write.key, write.crm_id, error=missing[write.crm_id], missing=True)
                )
            else:
                outcomes.append(Outcome(write.key, write.crm_id))
        return outcomes

    def _create_batch(self, object_type: str, batch: list[Write]) -> list[Outcome]:
        inputs = []
        for write in batch:
            associations = []
            if write.company_crm_id:
                associations.append(
                    {
                        "to": {"id": write.company_crm_id},
                        "types": [
                            {
                                "associationCategory": "HUBSPOT_DEFINED",
                                "associationTypeId": CONTACT_TO_COMPANY,
                            }
                        ],
                    }
                )
            inputs.append({"properties": write.properties, "associations": associations})
        answer = self._json_call(
            f"create {len(batch)} {object_type}",
            f"{object_type}.batch",
            "create",
            batch_input_simple_public_object_batch_input_for_create={"inputs": inputs},
        )
        # Results do not necessarily come back in input order: match them by our key.
        key_property = self.key_properties[object_type]
        by_key = {
            (r.get("properties") or {}).get(key_property): str(r["id"])
            for r in answer.get("results") or []
        }
        return [
            Outcome(
                w.key, by_key.get(w.key), error=None if w.key in by_key else "missing in answer"
            )
            for w in batch
        ]

    def associate_users(self, pairs: Sequence[tuple[str, str]]) -> None:
        for batch in batches(pairs, BATCH_LIMIT):
            self._call(
                f"associate {len(batch)} contacts with companies",
                "associations",
                "create_default",
                "contacts",
                "companies",
                batch_input_public_default_association_multi_post={
                    "inputs": [{"from": {"id": c}, "to": {"id": a}} for c, a in batch]
                },
            )

    # --- reads -------------------------------------------------------------------------------

    def write_batch(self, pending: int) -> int:
        return BATCH_LIMIT

    def read(
        self, object_type: str, crm_ids: Sequence[str], fields: Sequence[str]
    ) -> list[CrmObject]:
        out = []
        modified = MODIFIED_PROPERTY[object_type]
        properties = _properties_for(fields)
        for batch in batches(crm_ids, BATCH_LIMIT):
            answer = self._json_call(
                f"read {len(batch)} {object_type}",
                f"{object_type}.batch",
                "read",
                batch_read_input_simple_public_object_id={
                    "properties": sorted({*properties, modified}),
                    "inputs": [{"id": i} for i in batch],
                },
            )
            for record in answer.get("results") or []:
                props = dict(record.get("properties") or {})
                out.append(
                    CrmObject(
                        str(record["id"]),
                        _fields_of(props, fields),
                        _parse_time(props.get(modified)),
                    )
                )
        return out

    def owners(self) -> list[Owner]:
        out, after = [], None
        while True:
            kwargs = {"limit": 100, "archived": False}
            if after:
                kwargs["after"] = after
            answer = self._call("list owners", "owners", "get_page", **kwargs)
            for owner in answer.results or []:
                name = " ".join(p for p in (owner.first_name, owner.last_name) if p) or None
                out.append(Owner(str(owner.id), owner.email, name, bool(owner.archived)))
            after = answer.paging.next.after if answer.paging and answer.paging.next else None
            if not after:
                return out

    def changed_since(
        self, object_type: str, since: dt.datetime, fields: Sequence[str]
    ) -> Iterator[CrmObject]:
        """Search on the last-modified property, oldest first; past HubSpot's 10,000-result
        cap the search restarts from the last time seen."""
        modified = MODIFIED_PROPERTY[object_type]
        wanted = sorted({*_properties_for(fields), modified})
        start = since
        while True:
            after, seen, last_time = None, 0, None
            while True:
                request = {
                    "filterGroups": [
                        {
                            "filters": [
                                {"propertyName": modified, "operator": "GTE", "value": _ms(start)}
                            ]
                        }
                    ],
                    "sorts": [{"propertyName": modified, "direction": "ASCENDING"}],
                    "properties": wanted,
                    "limit": SEARCH_PAGE,
                }
                if after:
                    request["after"] = after
                answer = self._json_call(
                    f"search changed {object_type}",
                    f"{object_type}.search",
                    "do_search",
                    public_object_search_request=request,
                )
                for record in answer.get("results") or []:
                    props = dict(record.get("properties") or {})
                    last_time = _parse_time(props.get(modified)) or last_time
                    seen += 1
                    yield CrmObject(str(record["id"]), _fields_of(props, fields), last_time)
                after = _next_after(answer)
                if not after:
                    return
                if seen + SEARCH_PAGE > SEARCH_CAP:
                    break
            if last_time is None or last_time <= start:
                return  # 10,000 records with one timestamp: nothing more this way
            start = last_time

    def create_task(self, task: TaskSpec) -> str:
        properties = {
            "hs_task_subject": task.subject,
            "hs_task_body": task.body,
            "hs_task_status": "NOT_STARTED",
            "hs_task_priority": task.priority,
            "hs_timestamp": _ms(task.due_at),
        }
        if task.owner_id:
            properties["hubspot_owner_id"] = task.owner_id
        associations = [(task.company_crm_id, TASK_TO_COMPANY)]
        if task.user_crm_id:
            associations.append((task.user_crm_id, TASK_TO_CONTACT))
        answer = self._call(
            "create task",
            "tasks",
            "create",
            simple_public_object_input_for_create={
                "properties": properties,
                "associations": [
                    {
                        "to": {"id": crm_id},
                        "types": [
                            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": kind}
                        ],
                    }
                    for crm_id, kind in associations
                ],
            },
        )
        return str(answer.id)

    def create_note(
        self, account_crm_id: str, title: str, body: str, owner_id: str | None = None
    ) -> str:
        """A note on the company's timeline (HubSpot notes have no title: it leads the
        body)."""
        properties = {
            "hs_note_body": f"<p><strong>{html.escape(title)}</strong></p>"
            + "".join(f"<p>{html.escape(line)}</p>" for line in body.splitlines() if line),
            "hs_timestamp": _ms(dt.datetime.now(dt.UTC)),
        }
        if owner_id:
            properties["hubspot_owner_id"] = owner_id
        answer = self._call(
            "create note",
            "notes",
            "create",
            simple_public_object_input_for_create={
                "properties": properties,
                "associations": [
                    {
                        "to": {"id": account_crm_id},
                        "types": [
                            {
                                "associationCategory": "HUBSPOT_DEFINED",
                                "associationTypeId": NOTE_TO_COMPANY,
                            }
                        ],
                    }
                ],
            },
        )
        return str(answer.id)
