"""What Salesforce's APIs are called and allow (versions, limits, field and id conventions),
and small helpers for the values they carry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

from simple_salesforce.format import quote_soql_value

from connectors.base import CrmError

API_VERSION = "62.0"
COLLECTION_LIMIT = 200  # records per sObject Collections call
IN_CHUNK = 200  # values per SOQL IN (...) clause at most
# SOQL travels in the query URL: the values of one query stay within this many characters so
# the URL (encoded) stays well inside Salesforce's 16 KB limit.
QUERY_VALUE_CHARS = 6000
BULK_JOB_LIMIT = 50_000  # records per Bulk API 2.0 job this connector builds
BULK_WAIT_SECONDS = 600.0  # how long one sync waits for a bulk job to finish
# Documented lengths: a classic Note's Title and Body; a ContentNote's Title, and its content
# kept well within what the note editor shows.
NOTE_TITLE, NOTE_BODY = 80, 32_000
CONTENT_NOTE_TITLE, CONTENT_NOTE_CHARS = 255, 32_000
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
        # Firmographics (connectors.base.FIRMOGRAPHIC_FIELDS), read when fit rules use them.
        "industry": "Industry",
        "annual_revenue": "AnnualRevenue",
        "country": "BillingCountry",
        "employees": "NumberOfEmployees",
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


def soql_list(values: Sequence[str]) -> str:
    return "(" + ", ".join(quote_soql_value(v) for v in values) + ")"


def soql_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> dt.datetime | None:
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


def error_code(error: dict[str, Any]) -> str:
    return str(error.get("statusCode") or error.get("errorCode") or "UNKNOWN")


def error_text(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{error_code(e)}: {e.get('message', '')}" for e in errors) or "failed"


def duplicate_of(errors: list[dict[str, Any]]) -> str | None:
    """The record a duplicate rule matched, when Salesforce names it."""
    for error in errors:
        result = error.get("duplicateResult") or {}
        for match in result.get("matchResults") or []:
            for record in match.get("matchRecords") or []:
                found = (record.get("record") or {}).get("Id")
                if found:
                    return str(found)
    return None
