"""A local stand-in for a Salesforce org: enough of the REST, Bulk API 2.0, Metadata (SOAP) and
OAuth endpoints for everything the app does, with Salesforce's manners: sObject Collections of
at most 200 records with per-record results, the org's daily API allowance reported in
``Sforce-Limit-Info`` on every answer and refused with 403 REQUEST_LIMIT_EXCEEDED once spent,
custom fields hidden from the integration user until a permission set grants them, restricted
picklists, unique external ids, duplicate rules on Website and Email, converted leads, expiring
sessions (401 INVALID_SESSION_ID).

``SalesforceSandbox`` is a Flask app. Tests mount it under ``responses`` (``mount``), since
``simple-salesforce`` speaks ``requests``; the demo and the benchmark serve it over HTTPS.
SOQL is the subset the connector writes: SELECT … FROM … WHERE (=, !=, <, <=, >, >=, IN, LIKE,
AND, OR, parentheses) ORDER BY … LIMIT.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import itertools
import json
import re
import secrets
import ssl
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlparse

from flask import Flask, Response, jsonify, redirect, request
from markupsafe import escape

from sandbox.server import LoopbackServer

API_PREFIX = "/services/data/v"
QUERY_PAGE = 2000
COLLECTION_LIMIT = 200
MD = "http://soap.sforce.com/2006/04/metadata"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
PREFIX = {
    "Account": "001",
    "Contact": "003",
    "Lead": "00Q",
    "Opportunity": "006",
    "User": "005",
    "Task": "00T",
    "TaskPriority": "0J4",
    "TaskStatus": "01J",
    "Note": "002",
    "ContentNote": "069",
    "ContentDocumentLink": "06A",
    "PermissionSet": "0PS",
    "PermissionSetAssignment": "0Pa",
}
STANDARD = {
    "Account": {
        "Name": "string",
        "Website": "url",
        "OwnerId": "reference",
        "Type": "picklist",
        "LastActivityDate": "date",
        "Industry": "picklist",
        "AnnualRevenue": "currency",
        "BillingCountry": "string",
        "NumberOfEmployees": "int",
    },
    "Contact": {
        "FirstName": "string",
        "LastName": "string",
        "Email": "email",
        "AccountId": "reference",
        "OwnerId": "reference",
        "LastActivityDate": "date",
    },
    "Lead": {
        "FirstName": "string",
        "LastName": "string",
        "Email": "email",
        "Company": "string",
        "OwnerId": "reference",
        "Status": "picklist",
        "LastActivityDate": "date",
        "IsConverted": "boolean",
        "ConvertedContactId": "reference",
    },
    "Opportunity": {"Name": "string", "AccountId": "reference", "StageName": "picklist"},
    "User": {"Name": "string", "Email": "email", "IsActive": "boolean", "UserType": "string"},
    "Task": {
        "Subject": "string",
        "Description": "textarea",
        "WhatId": "reference",
        "WhoId": "reference",
        "OwnerId": "reference",
        "ActivityDate": "date",
        "Priority": "picklist",
        "Status": "picklist",
    },
    # Lightning's notes: the body is base64 HTML; a link puts the note on a record.
    "ContentNote": {"Title": "string", "Content": "base64", "OwnerId": "reference"},
    "ContentDocumentLink": {
        "ContentDocumentId": "reference",
        "LinkedEntityId": "reference",
        "ShareType": "picklist",
        "Visibility": "picklist",
    },
    "Note": {
        "ParentId": "reference",
        "Title": "string",
        "Body": "textarea",
        "OwnerId": "reference",
    },
    "PermissionSet": {
        "Name": "string",
        "NamespacePrefix": "string",
        "IsOwnedByProfile": "boolean",
        "PermissionsModifyAllData": "boolean",
        "PermissionsModifyMetadata": "boolean",
        "PermissionsAssignPermissionSets": "boolean",
    },
    "PermissionSetAssignment": {"PermissionSetId": "reference", "AssigneeId": "reference"},
    # The org's Task picklists (customisable per org): read them, never assume them.
    "TaskPriority": {
        "ApiName": "string",
        "MasterLabel": "string",
        "IsDefault": "boolean",
        "IsHighPriority": "boolean",
    },
    "TaskStatus": {
        "ApiName": "string",
        "MasterLabel": "string",
        "IsDefault": "boolean",
        "IsClosed": "boolean",
    },
}
# Salesforce's standard Task values; an org may rename, add or remove them.
TASK_PRIORITIES = (("High", False, True), ("Normal", True, False), ("Low", False, False))
TASK_STATUSES = (
    ("Not Started", True, False),
    ("In Progress", False, False),
    ("Completed", False, True),
    ("Waiting on someone else", False, False),
    ("Deferred", False, False),
)
DEFAULTS = {
    "Lead": {"IsConverted": False, "Status": "Open - Not Contacted"},
}
REQUIRED = {
    "Account": ("Name",),
    "Contact": ("LastName",),
    "Lead": ("LastName", "Company"),
    "Note": ("ParentId", "Title"),
    "ContentNote": ("Title",),
    "ContentDocumentLink": ("ContentDocumentId", "LinkedEntityId"),
}

# The External Client App the sandbox orgs know.
CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"


def app_env(url: str, ca_file: str = "") -> dict[str, str]:
    """The service's environment for a sandbox at ``url``: the app's credentials, the login
    hosts (production and sandbox orgs alike) and the certificate to trust."""
    return {
        "SALESFORCE_CLIENT_ID": CLIENT_ID,
        "SALESFORCE_CLIENT_SECRET": CLIENT_SECRET,
        "SALESFORCE_LOGIN_URL": url,
        "SALESFORCE_SANDBOX_LOGIN_URL": url,
        "SALESFORCE_CA_BUNDLE": ca_file,
    }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _host(website: str | None) -> str | None:
    if not website:
        return None
    text = website.strip().lower()
    if "://" not in text:
        text = "http://" + text
    return (urlparse(text).hostname or "").removeprefix("www.") or None


MAX_CHUNKS = 10  # type chunks per sObject Collections request
TEXT_LIMITS = {("Note", "Body"): 32_000}  # a classic Note's Body
TYPE_OF_PREFIX = {prefix: sobject for sobject, prefix in PREFIX.items()}


def _chunks(records: list[dict]) -> int:
    """How many chunks Salesforce splits a request into: runs of records of one type."""
    types = [
        (r.get("attributes") or {}).get("type") or TYPE_OF_PREFIX.get(str(r.get("id", ""))[:3])
        for r in records
    ]
    return sum(1 for n, kind in enumerate(types) if n == 0 or kind != types[n - 1])


class SoqlError(ValueError):
    pass


# --- SOQL (the subset) --------------------------------------------------------------------------

TOKEN = re.compile(r"\s*('(?:[^'\\]|\\.)*'|\(|\)|,|>=|<=|!=|=|<|>|[^\s(),=<>!']+)")


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if not match:
            if text[pos:].strip():
                raise SoqlError(f"unexpected text at {text[pos : pos + 20]!r}")
            break
        out.append(match.group(1))
        pos = match.end()
    return out


def _literal(token: str) -> Any:
    if token.startswith("'"):
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    low = token.lower()
    if low == "null":
        return None
    if low in ("true", "false"):
        return low == "true"
    if re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:?\d\d)", token):
        return dt.datetime.fromisoformat(token.replace("Z", "+00:00"))
    try:
        return float(token)
    except ValueError as exc:
        raise SoqlError(f"unknown value {token}") from exc


def parse_soql(text: str) -> dict[str, Any]:
    tokens = _tokens(text)
    upper = [t.upper() for t in tokens]
    if not upper or upper[0] != "SELECT" or "FROM" not in upper:
        raise SoqlError("expected SELECT … FROM")
    at_from = upper.index("FROM")
    columns = [t for t in tokens[1:at_from] if t != ","]
    sobject = tokens[at_from + 1]
    rest = tokens[at_from + 2 :]
    where: list[str] = []
    order, limit = None, None
    i = 0
    if rest[:1] and rest[0].upper() == "WHERE":
        i = 1
        while i < len(rest) and rest[i].upper() not in ("ORDER", "LIMIT"):
            where.append(rest[i])
            i += 1
    if i < len(rest) and rest[i].upper() == "ORDER":
        order = rest[i + 2]
        i += 3
        if i < len(rest) and rest[i].upper() in ("ASC", "DESC"):
            i += 1
    if i < len(rest) and rest[i].upper() == "LIMIT":
        limit = int(rest[i + 1])
    condition = _Condition(where).parse() if where else None
    return {
        "columns": columns,
        "object": sobject,
        "where": condition,
        "order": order,
        "limit": limit,
    }


class _Condition:
    def __init__(self, tokens: list[str]):
        self.tokens, self.pos = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise SoqlError("condition ends too early")
        self.pos += 1
        return token

    def parse(self):
        node = self.disjunction()
        if self.peek() is not None:
            raise SoqlError(f"unexpected {self.peek()}")
        return node

    def disjunction(self):
        parts = [self.conjunction()]
        while (self.peek() or "").upper() == "OR":
            self.take()
            parts.append(self.conjunction())
        return ("or", parts) if len(parts) > 1 else parts[0]

    def conjunction(self):
        parts = [self.term()]
        while (self.peek() or "").upper() == "AND":
            self.take()
            parts.append(self.term())
        return ("and", parts) if len(parts) > 1 else parts[0]

    def term(self):
        if self.peek() == "(":
            self.take()
            node = self.disjunction()
            if self.take() != ")":
                raise SoqlError("missing )")
            return node
        field = self.take()
        op = self.take().upper()
        if op == "IN":
            if self.take() != "(":
                raise SoqlError("IN needs (")
            values = []
            while True:
                values.append(_literal(self.take()))
                sep = self.take()
                if sep == ")":
                    break
                if sep != ",":
                    raise SoqlError("IN list needs commas")
            return ("in", field, frozenset(str(v).lower() for v in values))
        if op not in ("=", "!=", "<", "<=", ">", ">=", "LIKE"):
            raise SoqlError(f"unknown operator {op}")
        value = _literal(self.take())
        if op == "LIKE":
            parts = str(value).lower().split("%")
            return ("like", field, re.compile(".*".join(re.escape(p) for p in parts), re.S))
        return ("cmp", field, op, value)


def _comparable(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT.*", value):
        text = value.replace("Z", "+00:00")
        if text[-5] in "+-" and text[-3] != ":":
            text = text[:-2] + ":" + text[-2:]
        return dt.datetime.fromisoformat(text)
    return value


def _matches(node, record: dict[str, Any]) -> bool:
    kind = node[0]
    if kind == "and":
        return all(_matches(n, record) for n in node[1])
    if kind == "or":
        return any(_matches(n, record) for n in node[1])
    if kind == "in":
        have = record.get(node[1])
        if have is None:
            return False
        if node[1] == "Id":
            return have.lower() in node[2] or any(w[:15] == have[:15].lower() for w in node[2])
        return str(have).lower() in node[2]
    if kind == "like":
        have = record.get(node[1])
        return have is not None and node[2].fullmatch(str(have).lower()) is not None
    _, field, op, wanted = node
    have = record.get(field)
    if op == "=":
        if field == "Id" and have and wanted:
            return have[:15] == str(wanted)[:15]
        if isinstance(have, str) and isinstance(wanted, str):
            return have.lower() == wanted.lower()
        return have == wanted
    if op == "!=":
        return have != wanted
    if have is None:
        return False
    have, wanted = _comparable(have), _comparable(wanted)
    return {"<": have < wanted, "<=": have <= wanted, ">": have > wanted, ">=": have >= wanted}[op]


# --- the org --------------------------------------------------------------------------------------


class Org:
    """One org's data and settings."""

    def __init__(self, org_id: str, daily_limit: int = 100_000):
        self.org_id = org_id
        self.records: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.custom: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # object → fields
        self.permission_sets: dict[str, set[str]] = {}  # name → "Object.field"
        # Custom fields the Metadata API refuses (full name → message): one bad component of
        # an upsert fails alone, the others are saved.
        self.refused_fields: dict[str, str] = {}
        self.unavailable: set[str] = set()  # sObjects this org does not offer (ContentNote)
        self.daily_limit, self.api_used = daily_limit, 0
        self.duplicate_rules = True
        self.counter = itertools.count(1)
        self.indexes: dict[tuple[str, str], dict[str, str]] = {}
        admin = self.insert(
            "User",
            {
                "Name": "Ada Admin",
                "Email": "admin@example.com",
                "IsActive": True,
                "UserType": "Standard",
            },
        )
        self.admin_id = admin
        self.grant_profile(admin, modify_all_data=True)
        self.task_values(TASK_PRIORITIES, TASK_STATUSES)

    def grant_profile(
        self,
        user_id: str,
        modify_all_data: bool = False,
        modify_metadata: bool = False,
        assign_permission_sets: bool = False,
    ) -> None:
        """The user's profile, as Salesforce shows it: a profile-owned permission set assigned
        to the user, with its system permissions (Modify All Data implies the others)."""
        profile = self.insert(
            "PermissionSet",
            {
                "Name": f"X00e{user_id[-6:]}",
                "IsOwnedByProfile": True,
                "PermissionsModifyAllData": modify_all_data,
                "PermissionsModifyMetadata": modify_metadata or modify_all_data,
                "PermissionsAssignPermissionSets": assign_permission_sets or modify_all_data,
            },
        )
        self.insert("PermissionSetAssignment", {"PermissionSetId": profile, "AssigneeId": user_id})

    def install_package(self, namespace: str, permission_sets: Sequence[str]) -> None:
        """A managed package installed in the org: its permission sets carry the package's
        namespace (Name stays the developer name, NamespacePrefix tells them apart)."""
        for name in permission_sets:
            self.insert("PermissionSet", {"Name": name, "NamespacePrefix": namespace})

    def add_user(self, name: str, **permissions: bool) -> str:
        """Another user of the org (a rep, say), with the profile permissions given."""
        user = self.insert(
            "User",
            {
                "Name": name,
                "Email": f"{name.lower()}@example.com",
                "IsActive": True,
                "UserType": "Standard",
            },
        )
        self.grant_profile(user, **permissions)
        return user

    def task_values(self, priorities, statuses) -> None:
        """The org's Task Priority and Status values: (name, is default, is high / closed)."""
        self.records["TaskPriority"].clear()
        self.records["TaskStatus"].clear()
        for name, default, high in priorities:
            self.insert(
                "TaskPriority",
                {
                    "ApiName": name,
                    "MasterLabel": name,
                    "IsDefault": default,
                    "IsHighPriority": high,
                },
            )
        for name, default, closed in statuses:
            self.insert(
                "TaskStatus",
                {"ApiName": name, "MasterLabel": name, "IsDefault": default, "IsClosed": closed},
            )

    def index_of(self, sobject: str, field: str) -> dict[str, str]:
        """Lower-cased value → record id, for unique fields and the duplicate rules' keys
        (``_host``: an Account's Website host); built on first use, kept on every write."""
        key = (sobject, field)
        if key not in self.indexes:
            self.indexes[key] = {}
            for record in self.records[sobject].values():
                self._index_one(key, record)
        return self.indexes[key]

    def _index_one(self, key: tuple[str, str], record: dict[str, Any]) -> None:
        value = _host(record.get("Website")) if key[1] == "_host" else record.get(key[1])
        if value is not None:
            self.indexes[key].setdefault(str(value).lower(), record["Id"])

    def _unindex(self, sobject: str, record: dict[str, Any]) -> None:
        for key, index in self.indexes.items():
            if key[0] != sobject:
                continue
            value = _host(record.get("Website")) if key[1] == "_host" else record.get(key[1])
            if value is not None and index.get(str(value).lower()) == record["Id"]:
                del index[str(value).lower()]

    def _reindex(self, sobject: str, record: dict[str, Any]) -> None:
        for key in self.indexes:
            if key[0] == sobject:
                self._index_one(key, record)

    def delete(self, sobject: str, record_id: str) -> None:
        """Someone deletes a record in Salesforce."""
        record = self.records[sobject].pop(record_id)
        self._unindex(sobject, record)

    def new_id(self, sobject: str) -> str:
        return f"{PREFIX[sobject]}{next(self.counter):012d}AAA"

    def insert(self, sobject: str, fields: dict[str, Any]) -> str:
        record_id = self.new_id(sobject)
        now = _stamp(_now())
        record = {
            "Id": record_id,
            "CreatedDate": now,
            "SystemModstamp": now,
            **DEFAULTS.get(sobject, {}),
            **fields,
        }
        self.records[sobject][record_id] = record
        self._reindex(sobject, record)
        return record_id

    def change(self, sobject: str, record_id: str, **fields: Any) -> None:
        """A person edits a record in Salesforce."""
        record = self.records[sobject][record_id]
        self._unindex(sobject, record)
        record.update(fields)
        record["SystemModstamp"] = _stamp(_now())
        self._reindex(sobject, record)

    def visible(self, user_id: str) -> set[str]:
        assigned = {
            a["PermissionSetId"]
            for a in self.records["PermissionSetAssignment"].values()
            if a["AssigneeId"] == user_id
        }
        names = {
            f"{p['NamespacePrefix']}__{p['Name']}" if p.get("NamespacePrefix") else p["Name"]
            for pid, p in self.records["PermissionSet"].items()
            if pid in assigned
        }
        return set().union(*(self.permission_sets.get(n, set()) for n in names))

    def find(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        table = self.records[sobject]
        if record_id in table:
            return table[record_id]
        for key, record in table.items():
            if key[:15] == record_id[:15]:
                return record
        return None

    def convert_lead(self, lead_id: str, account_id: str | None = None) -> str:
        lead = self.records["Lead"][lead_id]
        fields = {
            k: v for k, v in lead.items() if k in ("FirstName", "LastName", "Email", "OwnerId")
        }
        if account_id:
            fields["AccountId"] = account_id
        contact = self.insert("Contact", fields)
        self.change("Lead", lead_id, IsConverted=True, ConvertedContactId=contact)
        return contact


class SalesforceSandbox:
    """The fake Salesforce: orgs by id, OAuth, and the API under ``/services``."""

    def __init__(
        self,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        daily_limit: int = 100_000,
    ):
        self.client_id, self.client_secret = client_id, client_secret
        self.daily_limit = daily_limit
        self.orgs: dict[str, Org] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.access: dict[str, tuple[str, str]] = {}  # token → (org id, user id)
        self.refresh: dict[str, tuple[str, str]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.hold_jobs = False  # jobs stay InProgress (a busy org): waiting must end
        self.token_failures: list[tuple[int, str, str]] = []  # next refresh grants' answers
        self.fail_next: list[tuple[int, Any]] = []  # (status, body) for the next answers
        self.requests: list[str] = []  # "METHOD path" of every API request
        self.busy_seconds = 0.0  # time spent answering them
        self.lock = threading.RLock()
        self.base_url = ""  # set by whoever serves it; used in the identity URL
        self.app = self._build()

    # -- setup and inspection

    def org(self, org_id: str | None = None) -> Org:
        with self.lock:
            org_id = org_id or f"00D{len(self.orgs) + 1:012d}AAA"
            if org_id not in self.orgs:
                self.orgs[org_id] = Org(org_id, self.daily_limit)
            return self.orgs[org_id]

    def grant_code(
        self,
        org: Org,
        challenge: str | None = None,
        redirect_uri: str = "",
        user: str | None = None,
    ) -> str:
        """The code a user of the org (its admin unless ``user`` says who) is given."""
        code = secrets.token_urlsafe(12)
        self.codes[code] = {
            "org": org.org_id,
            "user": user or org.admin_id,
            "challenge": challenge,
            "redirect_uri": redirect_uri,
        }
        return code

    def token_for(self, org: Org) -> str:
        token = "00D!" + secrets.token_urlsafe(24)
        self.access[token] = (org.org_id, org.admin_id)
        return token

    def expire_sessions(self) -> None:
        self.access.clear()

    def api_calls(self) -> int:
        return len(self.requests)

    # -- the HTTP app

    def _build(self) -> Flask:
        app = Flask("salesforce_sandbox")
        sandbox = self

        @app.get("/services/oauth2/authorize")
        def authorize():
            args = request.args
            if args.get("client_id") != sandbox.client_id:
                return "unknown client", 400
            # Which org's user logs in: ``org`` (an org id, or "new" for a new org); with none
            # given, a login page lists the orgs (a new org when there are none yet).
            if not args.get("org") and sandbox.orgs:
                links = "".join(
                    f'<li><a href="{escape(request.full_path)}&amp;org={org}">{org}</a></li>'
                    for org in [*sorted(sandbox.orgs), "new"]
                )
                return f"<!doctype html><title>Log in</title><h1>Log in to</h1><ul>{links}</ul>"
            chosen = args.get("org", "")
            org = sandbox.org(None if chosen in ("", "new") else chosen)
            code = sandbox.grant_code(org, args.get("code_challenge"), args.get("redirect_uri"))
            query = {"code": code, "state": args.get("state", "")}
            return redirect(f"{args['redirect_uri']}?{urlencode(query)}")

        @app.post("/services/oauth2/token")
        def token():
            form = request.form
            if (form.get("client_id"), form.get("client_secret")) != (
                sandbox.client_id,
                sandbox.client_secret,
            ):
                return jsonify(error="invalid_client", error_description="invalid client"), 400
            if form.get("grant_type") == "authorization_code":
                grant = sandbox.codes.pop(form.get("code", ""), None)
                if grant is None:
                    return jsonify(
                        error="invalid_grant", error_description="authentication failure"
                    ), 400
                if grant["challenge"]:
                    digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                    if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
                        return jsonify(
                            error="invalid_grant", error_description="invalid code verifier"
                        ), 400
                refresh = "5Aep" + secrets.token_urlsafe(24)
                sandbox.refresh[refresh] = (grant["org"], grant["user"])
                org_id, user_id = grant["org"], grant["user"]
            elif form.get("grant_type") == "refresh_token" and sandbox.token_failures:
                # Salesforce's "try again" answers: (status, error, description).
                status, error, description = sandbox.token_failures.pop(0)
                return jsonify(error=error, error_description=description), status
            elif form.get("grant_type") == "refresh_token":
                owner = sandbox.refresh.get(form.get("refresh_token", ""))
                if owner is None:
                    return jsonify(
                        error="invalid_grant", error_description="expired access/refresh token"
                    ), 400
                org_id, user_id = owner
                # Refresh-token rotation (required of partner apps): a new one replaces the
                # one used, which stops working.
                del sandbox.refresh[form["refresh_token"]]
                refresh = "5Aep" + secrets.token_urlsafe(24)
                sandbox.refresh[refresh] = owner
            else:
                return jsonify(error="unsupported_grant_type"), 400
            access = "00D!" + secrets.token_urlsafe(24)
            sandbox.access[access] = (org_id, user_id)
            base = sandbox.base_url or request.host_url.rstrip("/")
            body = {
                "access_token": access,
                "instance_url": base,
                "id": f"{base}/id/{org_id}/{user_id}",
                "token_type": "Bearer",
                "issued_at": str(int(_now().timestamp() * 1000)),
                "signature": "sandbox",
            }
            if refresh:
                body["refresh_token"] = refresh
            return jsonify(body)

        @app.post("/services/oauth2/revoke")
        def revoke():
            token = request.form.get("token", "")
            owner = sandbox.refresh.pop(token, None) or sandbox.access.pop(token, None)
            if owner is None:
                return jsonify(error="unsupported_token_type"), 400
            for access, who in list(sandbox.access.items()):
                if who == owner:
                    del sandbox.access[access]
            return "", 200

        @app.route(
            "/services/data/<version>/<path:rest>",
            methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
        )
        def rest(version: str, rest: str):
            return sandbox._api(rest)

        @app.post("/services/Soap/m/<version>")
        @app.post("/services/Soap/m/<version>/")
        def metadata(version: str):
            return sandbox._metadata()

        @app.get("/_sandbox/stats")
        def stats():
            return jsonify(
                requests=len(sandbox.requests),
                busy_seconds=round(sandbox.busy_seconds, 3),
                by_kind=dict(Counter(sandbox.requests)),
                orgs={
                    o.org_id: {"api_used": o.api_used, **{k: len(v) for k, v in o.records.items()}}
                    for o in sandbox.orgs.values()
                },
            )

        @app.get("/_sandbox/orgs/<org_id>/<sobject>")
        def records(org_id: str, sobject: str):
            org = sandbox.orgs.get(org_id)
            if org is None:
                return jsonify(error="no such org"), 404
            return jsonify(list(org.records[sobject].values()))

        @app.post("/_sandbox/orgs/<org_id>/change")
        def change(org_id: str):
            """A person edits a record: {"sobject", "id", "fields"}; or creates one when
            "id" is absent (the answer names it)."""
            org = sandbox.orgs.get(org_id)
            body = request.get_json(silent=True) or {}
            if org is None or body.get("sobject") not in STANDARD:
                return jsonify(error="no such org or object"), 404
            with sandbox.lock:
                if body.get("id"):
                    org.change(body["sobject"], body["id"], **(body.get("fields") or {}))
                    return jsonify(id=body["id"])
                return jsonify(id=org.insert(body["sobject"], body.get("fields") or {}))

        @app.get("/")
        def index():
            return jsonify(
                {o.org_id: {k: len(v) for k, v in o.records.items()} for o in sandbox.orgs.values()}
            )

        return app

    # -- REST

    def _error(self, status: int, code: str, message: str):
        return jsonify([{"message": message, "errorCode": code}]), status

    def _api(self, rest: str):
        started = time.perf_counter()
        try:
            return self._api_locked(rest)
        finally:
            self.busy_seconds += time.perf_counter() - started

    def _api_locked(self, rest: str):
        with self.lock:
            self.requests.append(f"{request.method} {rest}")
            if self.fail_next:
                status, body = self.fail_next.pop(0)
                return Response(json.dumps(body), status, mimetype="application/json")
            auth = request.headers.get("Authorization", "")
            who = self.access.get(auth.removeprefix("Bearer ").strip())
            if who is None:
                return self._error(401, "INVALID_SESSION_ID", "Session expired or invalid")
            org = self.orgs[who[0]]
            if org.api_used >= org.daily_limit:
                response = self._error(
                    403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."
                )
            else:
                org.api_used += 1
                try:
                    response = self._route(org, who[1], rest)
                except SoqlError as exc:
                    response = self._error(400, "MALFORMED_QUERY", str(exc))
            if isinstance(response, tuple):
                response = self.app.make_response(response)
            response.headers["Sforce-Limit-Info"] = f"api-usage={org.api_used}/{org.daily_limit}"
            return response

    def _route(self, org: Org, user: str, rest: str):
        parts = rest.strip("/").split("/")
        method = request.method
        if parts[0] == "query":
            if len(parts) == 2:
                return self._query_more(parts[1])
            return self._query(org, user, request.args.get("q", ""))
        if parts[0] == "sobjects" and len(parts) == 3 and parts[2] == "describe":
            return self._describe(org, user, parts[1])
        if parts[0] == "sobjects" and len(parts) == 2 and method == "POST":
            return self._create_one(org, user, parts[1], request.get_json())
        if parts[:2] == ["composite", "sobjects"]:
            body = request.get_json()
            records = body.get("records") or []
            if len(records) > COLLECTION_LIMIT:
                return self._error(
                    400,
                    "EXCEEDED_ID_LIMIT",
                    f"record limit reached. cannot submit more than {COLLECTION_LIMIT} records",
                )
            if method in ("PATCH", "POST") and len(parts) == 2 and _chunks(records) > MAX_CHUNKS:
                # Records of several types are processed in chunks (a run of one type); a
                # request may hold 10 at most.
                return self._error(
                    400,
                    "INVALID_BATCH",
                    f"Cannot have more than {MAX_CHUNKS} chunks in a single operation. Please "
                    "rearrange the data to reduce chunking.",
                )
            allow = "allowSave=true" in request.headers.get("Sforce-Duplicate-Rule-Header", "")
            if len(parts) == 4 and method == "PATCH":
                if parts[3] not in self._fields_of(org, user, parts[2]):
                    # An external-id field the user cannot see: the request's resource is not
                    # found, before any record is looked at.
                    return self._error(
                        404, "NOT_FOUND", f"The requested resource does not exist: {rest}"
                    )
                return jsonify([self._upsert(org, user, parts[2], parts[3], r) for r in records])
            if method == "PATCH":
                return jsonify([self._update(org, user, r, allow) for r in records])
            if method == "POST":
                return jsonify(
                    [self._insert(org, user, r["attributes"]["type"], r) for r in records]
                )
        if parts[:2] == ["jobs", "ingest"]:
            return self._bulk(org, user, parts[2:])
        return self._error(404, "NOT_FOUND", f"The requested resource does not exist: {rest}")

    def _fields_of(self, org: Org, user: str, sobject: str) -> dict[str, str]:
        fields = dict(STANDARD.get(sobject, {}))
        seen = org.visible(user)
        for name, spec in org.custom[sobject].items():
            if f"{sobject}.{name}" in seen:
                fields[name] = spec["type"]
        return fields

    def _describe(self, org: Org, user: str, sobject: str):
        if sobject not in STANDARD:
            return self._error(404, "NOT_FOUND", "The requested resource does not exist")
        out = []
        for name, kind in self._fields_of(org, user, sobject).items():
            entry = {"name": name, "type": kind, "picklistValues": []}
            spec = org.custom[sobject].get(name)
            if spec and spec.get("values"):
                labels = spec.get("value_labels") or spec["values"]
                entry["picklistValues"] = [
                    {"value": v, "label": label or v, "active": True}
                    for v, label in zip(spec["values"], labels, strict=True)
                ]
            out.append(entry)
        return jsonify(
            {
                "name": sobject,
                "fields": [
                    {"name": "Id", "type": "id"},
                    {"name": "SystemModstamp", "type": "datetime"},
                    *out,
                ],
            }
        )

    def _query(self, org: Org, user: str, soql: str):
        parsed = parse_soql(soql)
        sobject = parsed["object"]
        if sobject not in STANDARD:
            raise SoqlError(f"sObject type '{sobject}' is not supported.")
        allowed = {"Id", "SystemModstamp", "CreatedDate", *self._fields_of(org, user, sobject)}
        for column in parsed["columns"]:
            if column not in allowed:
                return self._error(
                    400, "INVALID_FIELD", f"No such column '{column}' on entity '{sobject}'."
                )
        rows = [
            r
            for r in self._candidates(org, sobject, parsed["where"])
            if parsed["where"] is None or _matches(parsed["where"], r)
        ]
        if parsed["order"]:
            key = parsed["order"]
            rows.sort(key=lambda r: (_comparable(r.get(key)) is None, str(r.get(key) or "")))
        if parsed["limit"] is not None:
            rows = rows[: parsed["limit"]]
        out = [
            {
                "attributes": {"type": sobject, "url": f"/sobjects/{sobject}/{r['Id']}"},
                **{c: r.get(c) for c in parsed["columns"]},
            }
            for r in rows
        ]
        return self._page(out, 0)

    def _candidates(self, org: Org, sobject: str, where) -> list[dict[str, Any]]:
        """Records that may match: by id or through a unique field's index when the
        condition is (or has, under AND) an IN on one, else all."""
        terms = [where] if where and where[0] == "in" else []
        if where and where[0] == "and":
            terms = [t for t in where[1] if t[0] == "in"]
        table = org.records[sobject]
        for term in terms:
            field, wanted = term[1], term[2]
            if field == "Id":
                by_upper = {k.lower(): r for k, r in table.items()}
                return [by_upper[w] for w in wanted if w in by_upper] or [
                    r for r in table.values() if _matches(term, r)
                ]
            spec = org.custom[sobject].get(field) or {}
            if spec.get("unique"):
                index = org.index_of(sobject, field)
                found = [table.get(index.get(w, "")) for w in wanted]
                return [r for r in found if r is not None]
        return list(table.values())

    def _page(self, rows: list[dict], start: int):
        chunk = rows[start : start + QUERY_PAGE]
        body: dict[str, Any] = {
            "totalSize": len(rows),
            "done": start + QUERY_PAGE >= len(rows),
            "records": chunk,
        }
        if not body["done"]:
            cursor = f"01g{secrets.token_hex(6)}-{start + QUERY_PAGE}"
            self.jobs[cursor] = {"rows": rows}
            body["nextRecordsUrl"] = f"/services/data/v62.0/query/{cursor}"
        return jsonify(body)

    def _query_more(self, cursor: str):
        saved = self.jobs.pop(cursor, None)
        if saved is None:
            return self._error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(saved["rows"], int(cursor.rsplit("-", 1)[1]))

    def _check(
        self, org: Org, user: str, sobject: str, fields: dict[str, Any], record_id: str | None
    ) -> list[dict[str, Any]]:
        """Field-level errors of a write: unknown or hidden fields, picklist values, uniques."""
        known = self._fields_of(org, user, sobject)
        errors = []
        for name, value in fields.items():
            if name in ("attributes", "Id", "id"):
                continue
            if name not in known:
                errors.append(
                    {
                        "statusCode": "INVALID_FIELD",
                        "message": f"No such column '{name}' on sobject of type {sobject}",
                        "fields": [name],
                    }
                )
                continue
            spec = org.custom[sobject].get(name) or {}
            if sobject == "Task" and name in ("Priority", "Status"):
                # Restricted picklists holding the org's values.
                table = "TaskPriority" if name == "Priority" else "TaskStatus"
                spec = {"values": [r["ApiName"] for r in org.records[table].values()]}
            if spec.get("values") and value is not None and value not in spec["values"]:
                errors.append(
                    {
                        "statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        "message": f"{spec.get('label', name)}: bad value for restricted "
                        f"picklist field: {value}",
                        "fields": [name],
                    }
                )
            if spec.get("unique") and value is not None:
                other = org.index_of(sobject, name).get(str(value).lower())
                if other is not None and other != record_id:
                    errors.append(
                        {
                            "statusCode": "DUPLICATE_VALUE",
                            "message": f"duplicate value found: {name} duplicates value on "
                            f"record with id: {other}",
                            "fields": [name],
                        }
                    )
        return errors

    def _duplicate(self, org: Org, sobject: str, fields: dict[str, Any]) -> dict | None:
        if not org.duplicate_rules:
            return None
        if sobject == "Account":
            host = _host(fields.get("Website"))
            match_id = host and org.index_of("Account", "_host").get(host)
        elif sobject in ("Contact", "Lead"):
            email = (fields.get("Email") or "").lower()
            match_id = email and org.index_of(sobject, "Email").get(email)
        else:
            return None
        if not match_id:
            return None
        match = org.records[sobject][match_id]
        return {
            "statusCode": "DUPLICATES_DETECTED",
            "message": "Use one of these records?",
            "duplicateResult": {
                "allowSave": False,
                "duplicateRule": f"Standard_{sobject}_Duplicate_Rule",
                "matchResults": [
                    {
                        "entityType": sobject,
                        "matchRecords": [
                            {
                                "matchConfidence": 100.0,
                                "record": {"attributes": {"type": sobject}, "Id": match["Id"]},
                            }
                        ],
                        "size": 1,
                        "success": True,
                    }
                ],
            },
        }

    def _insert(
        self,
        org: Org,
        user: str,
        sobject: str,
        fields: dict[str, Any],
        allow_duplicates: bool = False,
    ) -> dict[str, Any]:
        values = {k: v for k, v in fields.items() if k not in ("attributes", "Id", "id")}
        if sobject == "Task":
            for name, table in (("Status", "TaskStatus"), ("Priority", "TaskPriority")):
                default = [r["ApiName"] for r in org.records[table].values() if r["IsDefault"]]
                if not values.get(name) and default:
                    values[name] = default[0]
        errors = self._check(org, user, sobject, values, None)
        missing = [f for f in REQUIRED.get(sobject, ()) if not values.get(f)]
        if missing:
            errors.append(
                {
                    "statusCode": "REQUIRED_FIELD_MISSING",
                    "message": f"Required fields are missing: [{', '.join(missing)}]",
                    "fields": missing,
                }
            )
        if not errors and not allow_duplicates:
            duplicate = self._duplicate(org, sobject, values)
            if duplicate:
                errors.append(duplicate)
        if errors:
            return {"success": False, "errors": errors}
        return {"id": org.insert(sobject, values), "success": True, "errors": [], "created": True}

    def _update(self, org: Org, user: str, fields: dict[str, Any], allow: bool) -> dict:
        record_id = fields.get("id") or fields.get("Id") or ""
        sobject = fields.get("attributes", {}).get("type")
        record = org.find(sobject, record_id) if sobject in STANDARD else None
        if record is None:
            return {
                "id": record_id,
                "success": False,
                "errors": [
                    {
                        "statusCode": "ENTITY_IS_DELETED"
                        if record_id[:3] == PREFIX.get(sobject)
                        else "INVALID_CROSS_REFERENCE_KEY",
                        "message": "entity is deleted",
                        "fields": [],
                    }
                ],
            }
        if sobject == "Lead" and record.get("IsConverted"):
            return {
                "id": record_id,
                "success": False,
                "errors": [
                    {
                        "statusCode": "CANNOT_UPDATE_CONVERTED_LEAD",
                        "message": "cannot reference converted lead",
                        "fields": [],
                    }
                ],
            }
        values = {k: v for k, v in fields.items() if k not in ("attributes", "Id", "id")}
        errors = self._check(org, user, sobject, values, record["Id"])
        if errors:
            return {"id": record_id, "success": False, "errors": errors}
        org.change(sobject, record["Id"], **values)
        return {"id": record["Id"], "success": True, "errors": []}

    def _upsert(self, org: Org, user: str, sobject: str, key: str, fields: dict) -> dict:
        value = fields.get(key)
        if key not in self._fields_of(org, user, sobject):
            return {
                "success": False,
                "errors": [
                    {
                        "statusCode": "INVALID_FIELD",
                        "message": f"No such column '{key}'",
                        "fields": [key],
                    }
                ],
            }
        found = org.index_of(sobject, key).get(str(value).lower()) if value is not None else None
        existing = org.records[sobject].get(found) if found else None
        if existing is None:
            return self._insert(org, user, sobject, fields)
        answer = self._update(
            org, user, {**fields, "attributes": {"type": sobject}, "id": existing["Id"]}, True
        )
        return {**answer, "created": False}

    def _create_one(self, org: Org, user: str, sobject: str, body: dict):
        if sobject not in STANDARD or sobject in org.unavailable:
            return self._error(404, "NOT_FOUND", "The requested resource does not exist")
        limit = TEXT_LIMITS.get((sobject, "Body")) if sobject == "Note" else None
        if limit and len(body.get("Body") or "") > limit:
            return self._error(
                400, "STRING_TOO_LONG", f"Body: data value too large (max length={limit})"
            )
        if sobject == "ContentNote" and len(body.get("Title") or "") > 255:
            return self._error(400, "STRING_TOO_LONG", "Title: data value too large")
        if sobject == "PermissionSetAssignment":
            for a in org.records[sobject].values():
                if (a["PermissionSetId"], a["AssigneeId"]) == (
                    body.get("PermissionSetId"),
                    body.get("AssigneeId"),
                ):
                    return self._error(400, "DUPLICATE_VALUE", "Duplicate PermissionSetAssignment")
        answer = self._insert(org, user, sobject, body, allow_duplicates=True)
        if not answer["success"]:
            return jsonify(
                [
                    {
                        "message": e["message"],
                        "errorCode": e["statusCode"],
                        "fields": e.get("fields", []),
                    }
                    for e in answer["errors"]
                ]
            ), 400
        return jsonify({"id": answer["id"], "success": True, "errors": []}), 201

    # -- Bulk API 2.0

    def _bulk(self, org: Org, user: str, rest: list[str]):
        method = request.method
        if not rest and method == "POST":
            body = request.get_json()
            job_id = f"750{secrets.token_hex(6)}AAA"
            self.jobs[job_id] = {
                "id": job_id,
                "object": body["object"],
                "operation": body["operation"],
                "externalIdFieldName": body.get("externalIdFieldName"),
                "state": "Open",
                "data": "",
                "user": user,
                "org": org.org_id,
                "results": None,
            }
            return jsonify(self._job_info(job_id))
        job = self.jobs.get(rest[0]) if rest else None
        if job is None:
            return self._error(404, "NOT_FOUND", "job not found")
        if len(rest) == 2 and rest[1] == "batches" and method == "PUT":
            job["data"] += request.get_data(as_text=True)
            return "", 201
        if len(rest) == 1 and method == "PATCH":
            state = request.get_json().get("state")
            if state == "UploadComplete" and self.hold_jobs:
                job["state"] = "InProgress"
            elif state == "UploadComplete":
                self._run_job(org, job)
            elif state == "Aborted":
                job["state"] = "Aborted"
            return jsonify(self._job_info(job["id"]))
        if len(rest) == 1 and method == "GET":
            return jsonify(self._job_info(job["id"]))
        if len(rest) == 2 and method == "GET":
            results = job["results"] or {
                "successfulResults": [],
                "failedResults": [],
                "unprocessedRecords": [],
            }
            return Response(results.get(rest[1], ""), mimetype="text/csv")
        return self._error(404, "NOT_FOUND", "unknown job resource")

    def _job_info(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        info = {k: job[k] for k in ("id", "object", "operation", "state")}
        info["contentType"] = "CSV"
        if job.get("errorMessage"):
            info["errorMessage"] = job["errorMessage"]
        if job["results"]:
            info["numberRecordsProcessed"] = job["processed"]
            info["numberRecordsFailed"] = job["failed"]
        else:
            info["numberRecordsProcessed"] = info["numberRecordsFailed"] = 0
        return info

    def _run_job(self, org: Org, job: dict[str, Any]) -> None:
        rows = list(csv.DictReader(io.StringIO(job["data"])))
        columns = list(rows[0]) if rows else []
        visible = self._fields_of(org, job["user"], job["object"])
        hidden = [c for c in columns if c != "Id" and c not in visible]
        if hidden:
            # A job naming a field the user cannot see fails as a whole, no row processed.
            job.update(
                state="Failed",
                processed=0,
                failed=0,
                results=None,
                errorMessage=f"InvalidBatch : Field name not found : {hidden[0]}",
            )
            return
        good, bad = io.StringIO(), io.StringIO()
        ok_writer = csv.DictWriter(good, ["sf__Id", "sf__Created", *columns], lineterminator="\n")
        bad_writer = csv.DictWriter(bad, ["sf__Id", "sf__Error", *columns], lineterminator="\n")
        ok_writer.writeheader()
        bad_writer.writeheader()
        failed = 0
        for row in rows:
            fields = {}
            for name, text in row.items():
                fields[name] = (
                    None if text == "#N/A" else self._typed(org, job["object"], name, text)
                )
            if job["operation"] == "update":
                answer = self._update(
                    org, job["user"], {**fields, "attributes": {"type": job["object"]}}, True
                )
            else:
                answer = self._upsert(
                    org, job["user"], job["object"], job["externalIdFieldName"], fields
                )
            if answer["success"]:
                ok_writer.writerow(
                    {
                        "sf__Id": answer["id"],
                        "sf__Created": str(answer.get("created", False)).lower(),
                        **row,
                    }
                )
            else:
                failed += 1
                error = answer["errors"][0]
                bad_writer.writerow(
                    {
                        "sf__Id": row.get("Id", ""),
                        "sf__Error": f"{error['statusCode']}:{error['message']}:--",
                        **row,
                    }
                )
        job.update(
            state="JobComplete",
            processed=len(rows),
            failed=failed,
            results={
                "successfulResults": good.getvalue(),
                "failedResults": bad.getvalue(),
                "unprocessedRecords": ",".join(columns) + "\n",
            },
        )

    def _typed(self, org: Org, sobject: str, name: str, text: str) -> Any:
        spec = org.custom[sobject].get(name) or {}
        kind = spec.get("type") or STANDARD.get(sobject, {}).get(name)
        if text == "":
            return None
        if kind in ("Number", "Percent"):
            return float(text)
        if kind in ("Checkbox", "boolean"):
            return text.lower() == "true"
        return text

    # -- Metadata API (SOAP)

    def _metadata(self):
        with self.lock:
            self.requests.append("POST metadata")
            root = ET.fromstring(request.get_data())
            session = root.find(f".//{{{MD}}}sessionId")
            who = self.access.get(session.text if session is not None else "")
            if who is None:
                return self._fault(
                    "sf:INVALID_SESSION_ID", "INVALID_SESSION_ID: Invalid Session ID"
                )
            org = self.orgs[who[0]]
            call = root.find(f"{{{SOAP}}}Body")[0]
            name = call.tag.split("}")[1]
            if name == "deleteMetadata":
                return self._delete_metadata(org, call)
            if name != "upsertMetadata":
                return self._fault("sf:UNKNOWN_EXCEPTION", f"{name} is not in the sandbox")
            results = []
            for item in call.findall(f"{{{MD}}}metadata"):
                kind = item.get(f"{{{XSI}}}type", "").split(":")[-1]
                full_name = item.findtext(f"{{{MD}}}fullName")
                if kind == "CustomField":
                    results.append(self._upsert_field(org, full_name, item))
                elif kind == "PermissionSet":
                    results.append(self._upsert_permission_set(org, full_name, item))
                else:
                    results.append((full_name, False, f"{kind} is not in the sandbox"))
            body = "".join(
                f"<result><created>{str(created).lower()}</created>"
                f"<fullName>{full_name}</fullName>"
                + (
                    f"<errors><message>{error}</message><statusCode>FIELD_INTEGRITY_EXCEPTION"
                    f"</statusCode></errors><success>false</success>"
                    if error
                    else "<success>true</success>"
                )
                + "</result>"
                for full_name, created, error in results
            )
            return Response(
                f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP}" '
                f'xmlns="{MD}"><soapenv:Body><upsertMetadataResponse>{body}'
                "</upsertMetadataResponse></soapenv:Body></soapenv:Envelope>",
                mimetype="text/xml",
            )

    def _delete_metadata(self, org: Org, call):
        """deleteMetadata(type, fullNames): a custom field goes with its values and its
        permission set entries (Salesforce keeps it among deleted fields for 15 days)."""
        kind = call.findtext(f"{{{MD}}}type")
        names = [n.text or "" for n in call.findall(f"{{{MD}}}fullNames")]
        if len(names) > 10:
            return self._fault(
                "sf:INVALID_FIELD",
                "EXCEEDED_ID_LIMIT: record limit reached: cannot submit more than 10",
            )
        results = []
        for full_name in names:
            sobject, _, name = full_name.partition(".")
            if kind != "CustomField":
                results.append((full_name, f"{kind} is not in the sandbox"))
            elif name not in org.custom.get(sobject, {}):
                results.append((full_name, f"no CustomField named {full_name} found"))
            else:
                del org.custom[sobject][name]
                for record in org.records.get(sobject, {}).values():
                    record.pop(name, None)
                for fields in org.permission_sets.values():
                    fields.discard(full_name)
                results.append((full_name, None))
        body = "".join(
            f"<result><fullName>{full_name}</fullName>"
            + (
                f"<errors><message>{error}</message><statusCode>INVALID_CROSS_REFERENCE_KEY"
                "</statusCode></errors><success>false</success>"
                if error
                else "<success>true</success>"
            )
            + "</result>"
            for full_name, error in results
        )
        return Response(
            f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP}" '
            f'xmlns="{MD}"><soapenv:Body><deleteMetadataResponse>{body}'
            "</deleteMetadataResponse></soapenv:Body></soapenv:Envelope>",
            mimetype="text/xml",
        )

    def _fault(self, code: str, message: str):
        return Response(
            f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP}" '
            f'xmlns:sf="{MD}"><soapenv:Body><soapenv:Fault><faultcode>{code}</faultcode>'
            f"<faultstring>{message}</faultstring></soapenv:Fault></soapenv:Body>"
            "</soapenv:Envelope>",
            500,
            mimetype="text/xml",
        )

    def _upsert_field(self, org: Org, full_name: str, item) -> tuple[str, bool, str | None]:
        if full_name in org.refused_fields:
            return full_name, False, org.refused_fields[full_name]
        sobject, _, name = full_name.partition(".")
        if sobject not in STANDARD or not name.endswith("__c") or len(name) > 43:
            return full_name, False, f"invalid field name {full_name}"
        kind = item.findtext(f"{{{MD}}}type")
        if kind not in (
            "Text",
            "Number",
            "Percent",
            "Checkbox",
            "DateTime",
            "Picklist",
            "LongTextArea",
        ):
            return full_name, False, f"unsupported type {kind}"
        spec = {
            "type": kind,
            "label": item.findtext(f"{{{MD}}}label"),
            "unique": item.findtext(f"{{{MD}}}unique") == "true",
            "external": item.findtext(f"{{{MD}}}externalId") == "true",
            "values": [v.findtext(f"{{{MD}}}fullName") for v in item.iter(f"{{{MD}}}value")]
            or None,
            "value_labels": [v.findtext(f"{{{MD}}}label") for v in item.iter(f"{{{MD}}}value")],
        }
        created = name not in org.custom[sobject]
        org.custom[sobject][name] = spec
        return full_name, created, None

    def _upsert_permission_set(self, org: Org, full_name: str, item):
        fields = {
            p.findtext(f"{{{MD}}}field")
            for p in item.findall(f"{{{MD}}}fieldPermissions")
            if p.findtext(f"{{{MD}}}readable") == "true"
        }
        for field in sorted(fields):
            sobject, _, name = field.partition(".")
            if name.endswith("__c") and name not in org.custom[sobject]:
                # Salesforce refuses a permission set naming a field that does not exist.
                return full_name, False, f"In field: field - no CustomField named {field} found"
        created = full_name not in org.permission_sets
        org.permission_sets[full_name] = fields
        if created:
            org.insert("PermissionSet", {"Name": full_name})
        return full_name, created, None


def mount(mock, sandbox: SalesforceSandbox, base_url: str) -> None:
    """Answer every request to ``base_url`` (a ``responses.RequestsMock``) from the sandbox's
    Flask app: the real ``simple-salesforce`` and ``requests`` code runs, only the network is
    replaced."""
    client = sandbox.app.test_client()
    sandbox.base_url = base_url.rstrip("/")

    def answer(prepared):
        url = urlparse(prepared.url)
        body = prepared.body
        if isinstance(body, str):
            body = body.encode()
        response = client.open(
            url.path,
            method=prepared.method,
            query_string=url.query,
            headers={k: v for k, v in prepared.headers.items() if k.lower() != "content-length"},
            data=body or b"",
        )
        return response.status_code, dict(response.headers), response.get_data()

    pattern = re.compile(re.escape(sandbox.base_url) + r"/.*")
    for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
        mock.add_callback(method, pattern, callback=answer)


def self_signed_certificate(directory: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and localhost, and its key, written to ``directory``
    (kept when already there): simple-salesforce speaks HTTPS only, so the sandbox does too,
    and the app is told to trust this certificate (SALESFORCE_CA_BUNDLE)."""
    import ipaddress
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path = os.path.join(directory, "salesforce-sandbox.pem")
    key_path = os.path.join(directory, "salesforce-sandbox.key")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    os.makedirs(directory, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Salesforce sandbox")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    with open(key_path, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


class SalesforceSandboxServer(LoopbackServer):
    """The sandbox over HTTPS on a loopback port in a background thread (demo, benchmark).
    ``ca_file`` is the certificate to trust."""

    def __init__(
        self,
        sandbox: SalesforceSandbox | None = None,
        port: int = 0,
        cert_dir: str | None = None,
        quiet: bool = True,
    ):
        self.sandbox = sandbox or SalesforceSandbox()
        self.ca_file, key_file = self_signed_certificate(cert_dir or tempfile.mkdtemp())
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        super().__init__(self.sandbox.app, port, quiet, tls=context)
        self.sandbox.base_url = self.url


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.salesforce --port 8026 --cert-dir instance``"""
    import argparse
    import contextlib

    parser = argparse.ArgumentParser(description="A local Salesforce-compatible sandbox.")
    parser.add_argument("--port", type=int, default=8026)
    parser.add_argument("--cert-dir", default="instance", help="where its certificate is kept")
    parser.add_argument("--daily-limit", type=int, default=100_000, help="API requests per org")
    args = parser.parse_args(argv)
    server = SalesforceSandboxServer(
        SalesforceSandbox(daily_limit=args.daily_limit), port=args.port, cert_dir=args.cert_dir
    )
    print(f"Salesforce sandbox on {server.url} (certificate {server.ca_file})", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.server.serve_forever()


if __name__ == "__main__":
    main()
