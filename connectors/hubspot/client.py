"""HubSpot's CRM: the connector, on the date-versioned API (``connectors.hubspot.api``).

Every request goes through the shared ``Caller`` (rate budget, 429 waits, backoff, token
refresh); this module only knows HubSpot's endpoints, payloads and answers. The base URL is a
setting, so the same code talks to HubSpot or to a stand-in of it.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import urllib3

from connectors.base import (
    PULL_FIELDS,
    Caller,
    CrmError,
    CrmObject,
    Failure,
    Outcome,
    Owner,
    PropertySpec,
    RateBudget,
    TaskSpec,
    Write,
    batches,
)
from connectors.hubspot.api import HubSpotApi

BATCH_LIMIT = 100
SEARCH_PAGE = 200  # results per search page, HubSpot's maximum
SEARCH_CAP = 10_000  # HubSpot's search returns at most this many results per query
# HubSpot's search API allows a few requests per second per token, beside the general limit:
# searches are spaced so they stay under it instead of drawing 429s.
SEARCH_INTERVAL = 0.25
SCOPES = (
    "oauth",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.schemas.companies.write",
    "crm.schemas.contacts.write",
    "crm.objects.owners.read",
    "settings.users.read",  # is the person signing in a Super Admin of the portal
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
# The firmographic fields (connectors.base.FIRMOGRAPHIC_FIELDS) as HubSpot company properties.
FIRMOGRAPHIC_PROPERTIES = {
    "industry": "industry",
    "annual_revenue": "annualrevenue",
    "country": "country",
    "employees": "numberofemployees",
}
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
    body = error_body(getattr(exc, "body", None))
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


def checked_request(api: HubSpotApi, what: str, method: str, path: str, **kwargs: Any) -> dict:
    """One request outside a connector's retry loop; HubSpot's refusal (or no answer) becomes a
    ``CrmError`` naming ``what`` and carrying the status."""
    try:
        return api.request(method, path, **kwargs)
    except CrmError:
        raise
    except Exception as exc:
        failure = classify(exc)
        if failure is None:
            raise
        raise CrmError(f"{what}: {failure.message}", failure.status) from exc


def error_body(raw: Any) -> dict:
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode("utf-8", "replace")
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {"message": str(raw)[:200]}
    return value if isinstance(value, dict) else {}


def _differences(have: dict, want: dict) -> dict:
    """What to PATCH so an existing property reads as ``want``: its label and, for
    enumerations, its options (value, label and order); nothing when they match."""
    changes = {}
    if have.get("label") != want["label"]:
        changes["label"] = want["label"]
    if "options" in want:

        def pairs(options) -> list[tuple]:
            return [(o.get("value"), o.get("label")) for o in options or []]

        if pairs(have.get("options")) != pairs(want["options"]):
            changes["options"] = want["options"]
    return changes


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
            {"label": label, "value": value, "displayOrder": n}
            for n, (value, label) in enumerate(spec.labelled_options())
        ]
    if spec.unique:
        body["hasUniqueValue"] = True
    if spec.hidden:
        body["hidden"] = True
    return body


def _rich_text(text: str) -> str:
    """Plain text as HubSpot rich text: one escaped paragraph per line."""
    return "".join(f"<p>{html.escape(line)}</p>" for line in text.splitlines() if line)


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
        elif name in FIRMOGRAPHIC_PROPERTIES:
            out.append(FIRMOGRAPHIC_PROPERTIES[name])
        elif name not in PULL_FIELDS:
            out.append(name)
    return out


def _fields_of(props: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    out = {}
    for name in fields:
        if name in PULLED_PROPERTIES:
            out[name] = props.get(PULLED_PROPERTIES[name])
        elif name in FIRMOGRAPHIC_PROPERTIES:
            out[name] = props.get(FIRMOGRAPHIC_PROPERTIES[name])
        elif name not in PULL_FIELDS:
            out[name] = props.get(name)
    return out


class HubSpotConnector:
    batch_limit = BATCH_LIMIT
    account_type = "companies"
    user_type = "contacts"

    def __init__(
        self,
        api: HubSpotApi,
        caller: Caller,
        key_properties: dict[str, str],
        search_budget: RateBudget | None = None,
    ):
        """``key_properties``: per object type, the app's unique id property.
        ``search_budget``: HubSpot's search limit (per portal per second, shared with the
        portal's other apps, and not counted in the 10-second limit); without one, searches
        are spaced locally."""
        self.api = api
        self.caller = caller
        self.key_properties = key_properties
        self.search_budget = search_budget
        self._last_search = -SEARCH_INTERVAL
        self.monotonic = time.monotonic

    def _call(self, label: str, method: str, path: str, body: Any = None, **query: Any) -> dict:
        def request(token: str) -> dict:
            return self.api.request(method, path, token=token, body=body, query=query or None)

        return self.caller(label, request)

    def _search(self, label: str, object_type: str, body: dict) -> dict:
        """A search, charged to the search budget (or spaced locally without one) so it stays
        under HubSpot's per-second search limit instead of drawing 429s."""

        def request(token: str) -> dict:
            if self.search_budget is None:
                wait = self._last_search + SEARCH_INTERVAL - self.monotonic()
                if wait > 0:
                    self.caller.sleep(wait)
                self._last_search = self.monotonic()
            path = self.api.objects(f"{object_type}/search")
            return self.api.request("POST", path, token=token, body=body)

        return self.caller(label, request, budget=self.search_budget)

    # --- schema ------------------------------------------------------------------------------

    def ensure_schema(
        self, object_type: str, group: tuple[str, str], specs: Sequence[PropertySpec]
    ) -> list[str]:
        """Make the app's properties exist as ``specs`` say. The object's properties are read
        first (one call), so only what is missing is created and only what differs (an
        enumeration's options, a label) is updated: an unchanged schema costs that one read."""
        name, label = group
        listed = self._call(
            f"read properties of {object_type}",
            "GET",
            self.api.properties(object_type),
            None,
        )
        existing = {p.get("name"): p for p in listed.get("results") or []}
        if not any(p.get("groupName") == name for p in existing.values()):
            try:
                self._call(
                    f"create property group {object_type}.{name}",
                    "POST",
                    self.api.properties(f"{object_type}/groups"),
                    {"name": name, "label": label, "displayOrder": -1},
                )
            except CrmError as exc:
                if exc.status != 409:
                    raise
        created = []
        for spec in specs:
            body = hubspot_property(spec, name)
            have = existing.get(spec.name)
            if have is None:
                try:
                    self._call(
                        f"create property {object_type}.{spec.name}",
                        "POST",
                        self.api.properties(object_type),
                        body,
                    )
                    created.append(spec.name)
                    continue
                except CrmError as exc:
                    if exc.status != 409:
                        raise
                    have = {}  # created meanwhile by another process: bring it in line
            changes = _differences(have, body)
            if changes:
                self._call(
                    f"update property {object_type}.{spec.name}",
                    "PATCH",
                    self.api.properties(f"{object_type}/{spec.name}"),
                    changes,
                )
        return created

    def remove_schema(
        self, object_type: str, group: tuple[str, str], specs: Sequence[PropertySpec]
    ) -> list[str]:
        """Archive the app's properties (HubSpot deletes their values with them), 100 per
        call: those of ``specs`` and any other left in the app's group (a name an earlier
        version used); then delete the now empty property group."""
        listed = self._call(
            f"read properties of {object_type}", "GET", self.api.properties(object_type), None
        )
        results = listed.get("results") or []
        existing = {p.get("name") for p in results}
        names = [spec.name for spec in specs if spec.name in existing]
        names += sorted(
            p["name"] for p in results if p.get("groupName") == group[0] and p["name"] not in names
        )
        for batch in batches(names, BATCH_LIMIT):
            self._call(
                f"archive {len(batch)} {object_type} properties",
                "POST",
                self.api.properties(f"{object_type}/batch/archive"),
                {"inputs": [{"name": name} for name in batch]},
            )
        try:
            self._call(
                f"delete property group {object_type}.{group[0]}",
                "DELETE",
                self.api.properties(f"{object_type}/groups/{group[0]}"),
                None,
            )
        except CrmError as exc:
            if exc.status != 404:
                raise
        return names

    # --- matching ----------------------------------------------------------------------------

    def find_by_key(self, object_type: str, keys: Sequence[str]) -> dict:
        key_property = self.key_properties[object_type]
        found: dict[str, str] = {}
        for batch in batches(keys, BATCH_LIMIT):
            answer = self._call(
                f"read {object_type} by {key_property}",
                "POST",
                self.api.objects(f"{object_type}/batch/read"),
                {
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
                answer = self._call(
                    "read contacts by email",
                    "POST",
                    self.api.objects("contacts/batch/read"),
                    {
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
                answer = self._search("search companies by domain", "companies", request)
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
        answer = self._call(
            f"update {len(batch)} {object_type}",
            "POST",
            self.api.objects(f"{object_type}/batch/update"),
            {"inputs": [{"id": w.crm_id, "properties": w.properties} for w in batch]},
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
        answer = self._call(
            f"create {len(batch)} {object_type}",
            "POST",
            self.api.objects(f"{object_type}/batch/create"),
            {"inputs": inputs},
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
                "POST",
                self.api.associations("contacts/companies/batch/associate/default"),
                {"inputs": [{"from": {"id": c}, "to": {"id": a}} for c, a in batch]},
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
            answer = self._call(
                f"read {len(batch)} {object_type}",
                "POST",
                self.api.objects(f"{object_type}/batch/read"),
                {
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
            query = {"limit": 100, "archived": "false"}
            if after:
                query["after"] = after
            answer = self._call("list owners", "GET", self.api.owners(), **query)
            for owner in answer.get("results") or []:
                name = " ".join(p for p in (owner.get("firstName"), owner.get("lastName")) if p)
                out.append(
                    Owner(
                        str(owner["id"]),
                        owner.get("email"),
                        name or None,
                        bool(owner.get("archived")),
                    )
                )
            after = _next_after(answer)
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
                answer = self._search(f"search changed {object_type}", object_type, request)
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

    def uninstall_app(self) -> None:
        """Uninstall the app from this portal (HubSpot then stops accepting its tokens)."""
        self._call("uninstall the app", "DELETE", self.api.app_installs("external-install"))

    def create_task(self, task: TaskSpec) -> str:
        properties = {
            "hs_task_subject": task.subject,
            # Rich text in HubSpot: the text (names come from product events) is escaped.
            "hs_task_body": _rich_text(task.body),
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
            "POST",
            self.api.objects("tasks"),
            {
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
        return str(answer["id"])

    def create_note(
        self, account_crm_id: str, title: str, body: str, owner_id: str | None = None
    ) -> str:
        """A note on the company's timeline (HubSpot notes have no title: it leads the
        body)."""
        properties = {
            "hs_note_body": f"<p><strong>{html.escape(title)}</strong></p>" + _rich_text(body),
            "hs_timestamp": _ms(dt.datetime.now(dt.UTC)),
        }
        if owner_id:
            properties["hubspot_owner_id"] = owner_id
        answer = self._call(
            "create note",
            "POST",
            self.api.objects("notes"),
            {
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
        return str(answer["id"])
