"""Salesforce: the connector, through ``simple-salesforce`` (OAuth in ``auth``, the Metadata API
in ``metadata``, Bulk API 2.0 in ``bulk``, refusals and the daily allowance in ``errors``).

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
import heapq
import html
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import requests
from simple_salesforce import Salesforce
from simple_salesforce.format import quote_soql_value

from connectors.base import (
    PULL_FIELDS,
    Caller,
    CrmError,
    CrmObject,
    CrmPaused,
    Outcome,
    Owner,
    TaskSpec,
    Write,
    batches,
)
from connectors.salesforce.api import (
    API_VERSION,
    BULK_JOB_LIMIT,
    BULK_WAIT_SECONDS,
    COLLECTION_LIMIT,
    CONTENT_NOTE_CHARS,
    CONTENT_NOTE_TITLE,
    GONE,
    IN_CHUNK,
    NOT_PROVIDED,
    NOTE_BODY,
    NOTE_TITLE,
    PULLED_FIELDS,
    STANDARD_FIELDS,
    TIMEOUT,
    duplicate_of,
    error_code,
    error_text,
    field_name,
    host_of,
    object_of,
    parse_time,
    soql_list,
    soql_time,
    value_chunks,
)
from connectors.salesforce.bulk import BulkMixin
from connectors.salesforce.errors import DailyLimit, FieldsNotVisible, hidden_fields_message
from connectors.salesforce.metadata import SchemaMixin

log = logging.getLogger(__name__)


# --- the connector ------------------------------------------------------------------------------


class TimedSession(requests.Session):
    """A session whose every request has a timeout: simple-salesforce's Bulk API 2.0 client
    and the Metadata API's SOAP client (zeep) send none of their own, and one hung answer
    would hold the worker."""

    def request(self, method, url, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = TIMEOUT
        return super().request(method, url, **kwargs)


class PinnedSession(TimedSession):
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


class SalesforceConnector(SchemaMixin, BulkMixin):
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
        bulk_wait_seconds: float = BULK_WAIT_SECONDS,
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
        self.bulk_wait_seconds = bulk_wait_seconds
        self.api_version = api_version
        self.session = session or TimedSession()
        self.session.hooks["response"].append(self._on_response)
        self._clients: dict[str, Salesforce] = {}
        self._task_picklists: tuple[dict[str, str], str | None] | None = None
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

    def find_by_key(self, object_type: str, keys: Sequence[str]) -> dict:
        found: dict[str, str] = {}
        sobjects = ["Account"] if object_type == "Account" else ["Contact", "Lead"]
        for sobject in sobjects:
            key = self._key_field(sobject)
            extra = " AND IsConverted = false" if sobject == "Lead" else ""
            for chunk in value_chunks([k for k in keys if k not in found]):
                soql = f"SELECT Id, {key} FROM {sobject} WHERE {key} IN {soql_list(chunk)}{extra}"
                for record in self._query(f"find {sobject} by key", soql):
                    found.setdefault(record[key], record["Id"])
        return found

    def find_by_natural_key(self, object_type: str, values: Sequence[str]) -> dict:
        if object_type == "Account":
            return self._accounts_by_domain(values)
        found: dict[str, str] = {}
        for chunk in value_chunks(values):
            soql = (
                f"SELECT Id, Email FROM Contact WHERE Email IN {soql_list(chunk)} "
                "ORDER BY CreatedDate"
            )
            for record in self._query("find contacts by email", soql):
                found.setdefault((record.get("Email") or "").lower(), record["Id"])
        rest = [v for v in values if v not in found]
        for chunk in value_chunks(rest):
            soql = (
                "SELECT Id, Email, IsConverted, ConvertedContactId FROM Lead WHERE Email IN "
                f"{soql_list(chunk)} ORDER BY CreatedDate"
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
        # One run per object type: Salesforce refuses a request of more than 10 type chunks
        # (Contacts and Leads interleaved would make one chunk per record).
        writes = sorted(writes, key=lambda w: object_of(w.crm_id))
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
        codes = {error_code(e) for e in errors}
        if "INVALID_FIELD" in codes:
            raise FieldsNotVisible(hidden_fields_message(error_text(errors)), 400, "INVALID_FIELD")
        if "CANNOT_UPDATE_CONVERTED_LEAD" in codes:
            return Outcome(write.key, crm_id, error="CANNOT_UPDATE_CONVERTED_LEAD")
        return Outcome(write.key, crm_id, error=error_text(errors), missing=bool(codes & GONE))

    def _follow_conversions(self, writes: Sequence[Write]) -> list[Outcome]:
        """Leads converted since we matched them: write to the contact each became."""
        ids = [w.crm_id for w in writes]
        soql = f"SELECT Id, ConvertedContactId FROM Lead WHERE Id IN {soql_list(ids)}"
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
        try:
            answers = self._rest(
                f"upsert {len(group)} {sobject}",
                "PATCH",
                f"composite/sobjects/{sobject}/{key}",
                json={
                    "allOrNone": False,
                    "records": [{"attributes": {"type": sobject}, **f} for _, f in group],
                },
            )
        except CrmError as exc:
            if exc.status != 404:
                raise
            # Salesforce answers an upsert on an external-id field the user cannot see with
            # NOT_FOUND for the whole request: the permission set no longer grants it.
            detail = f"the external id {sobject}.{key} is not found ({exc})"
            raise FieldsNotVisible(hidden_fields_message(detail), 400, "INVALID_FIELD") from exc
        out = []
        for (write, _), answer in zip(group, answers, strict=True):
            errors = answer.get("errors") or []
            if not answer.get("success") and "DUPLICATES_DETECTED" in {
                error_code(e) for e in errors
            }:
                out.append(Outcome(write.key, duplicate_of(errors), error="DUPLICATES_DETECTED"))
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

    def associate_users(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Put contacts without an account on their product account (a contact already on an
        account stays there: sales put it there; leads have no account)."""
        account_of = {u[:15]: a for u, a in pairs if object_of(u) == "Contact"}
        for chunk in batches([u for u, _ in pairs if u[:15] in account_of], IN_CHUNK):
            soql = f"SELECT Id FROM Contact WHERE Id IN {soql_list(chunk)} AND AccountId = null"
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
                            error_text(answer.get("errors") or []),
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
        return CrmObject(record["Id"], props, parse_time(record.get("SystemModstamp")))

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
                soql = f"SELECT {', '.join(columns)} FROM {sobject} WHERE Id IN {soql_list(chunk)}"
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
                f"{soql_time(since)} AND {self._key_field(sobject)} != null "
                "ORDER BY SystemModstamp"
            )
            streams.append(
                self._object(r, fields, column_of) for r in self._query(f"changed {sobject}", soql)
            )
        if object_type == "Account" and "opportunity_stage" in fields:
            soql = (
                "SELECT AccountId, StageName, SystemModstamp FROM Opportunity WHERE "
                f"SystemModstamp >= {soql_time(since)} AND AccountId != null "
                "ORDER BY SystemModstamp"
            )
            streams.append(
                CrmObject(
                    r["AccountId"],
                    {"opportunity_stage": r.get("StageName")},
                    parse_time(r.get("SystemModstamp")),
                )
                for r in self._query("changed opportunities", soql)
            )
        yield from heapq.merge(
            *streams, key=lambda o: o.modified_at or dt.datetime.min.replace(tzinfo=dt.UTC)
        )

    # -- tasks

    def _task_values(self) -> tuple[dict[str, str], str | None]:
        """The org's Task priorities for the engine's HIGH / MEDIUM / LOW, and the status a new
        task opens with: read once from TaskPriority and TaskStatus (orgs rename and replace
        Salesforce's High / Normal / Low and Not Started)."""
        if self._task_picklists is None:
            priorities = list(
                self._query(
                    "read task priorities",
                    "SELECT ApiName, IsDefault, IsHighPriority FROM TaskPriority",
                )
            )
            statuses = list(
                self._query(
                    "read task statuses", "SELECT ApiName, IsDefault, IsClosed FROM TaskStatus"
                )
            )
            default = next((p["ApiName"] for p in priorities if p.get("IsDefault")), None)
            high = next((p["ApiName"] for p in priorities if p.get("IsHighPriority")), default)
            low = next((p["ApiName"] for p in priorities if p["ApiName"].lower() == "low"), default)
            opening = next(
                (s["ApiName"] for s in statuses if s.get("IsDefault") and not s.get("IsClosed")),
                next((s["ApiName"] for s in statuses if not s.get("IsClosed")), None),
            )
            by_level = {"HIGH": high, "MEDIUM": default, "LOW": low}
            self._task_picklists = ({k: v for k, v in by_level.items() if v}, opening)
        return self._task_picklists

    def create_task(self, task: TaskSpec) -> str:
        priorities, opening = self._task_values()
        body: dict[str, Any] = {
            "Subject": task.subject[:255],
            "Description": task.body,
            "WhatId": task.company_crm_id,
            "ActivityDate": task.due_at.date().isoformat(),
        }
        # Without a value of its own, the org's default applies.
        if priorities.get(task.priority.upper()):
            body["Priority"] = priorities[task.priority.upper()]
        if opening:
            body["Status"] = opening
        if task.user_crm_id and object_of(task.user_crm_id) == "Contact":
            body["WhoId"] = task.user_crm_id  # a Lead cannot be named with an account
        if task.owner_id:
            body["OwnerId"] = task.owner_id
        answer = self._rest("create task", "POST", "sobjects/Task", json=body)
        return str(answer["id"])

    def create_note(
        self, account_crm_id: str, title: str, body: str, owner_id: str | None = None
    ) -> str:
        """A note on the Account: a ContentNote linked to it (what Lightning's Notes list
        shows), or a classic Note where the org has no ContentNote; both within their
        documented lengths."""
        owner = owner_id if owner_id and object_of(owner_id) == "User" else None
        content = "".join(f"<p>{html.escape(line)}</p>" for line in body.splitlines() if line)
        note: dict[str, Any] = {
            "Title": title[:CONTENT_NOTE_TITLE],
            "Content": base64.b64encode(content[:CONTENT_NOTE_CHARS].encode()).decode(),
        }
        if owner:
            note["OwnerId"] = owner
        try:
            answer = self._rest("create note", "POST", "sobjects/ContentNote", json=note)
        except CrmError as exc:
            if exc.status != 404:
                raise
            classic: dict[str, Any] = {
                "ParentId": account_crm_id,
                "Title": title[:NOTE_TITLE],
                "Body": body[:NOTE_BODY],
            }
            if owner:
                classic["OwnerId"] = owner
            answer = self._rest("create note", "POST", "sobjects/Note", json=classic)
            return str(answer["id"])
        link = {
            "ContentDocumentId": answer["id"],
            "LinkedEntityId": account_crm_id,
            "ShareType": "V",
            "Visibility": "AllUsers",
        }
        self._rest("link note", "POST", "sobjects/ContentDocumentLink", json=link)
        return str(answer["id"])
