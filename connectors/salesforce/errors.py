"""How Salesforce's refusals are classified for the retry loop, and the org's daily API
allowance with the reserve kept for the customer's other integrations."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceOperationError,
    SalesforceRefusedRequest,
)
from zeep.exceptions import Fault

from connectors.base import (
    CrmError,
    CrmPaused,
    Failure,
)
from connectors.salesforce.api import PERMISSION_SET, error_code

log = logging.getLogger(__name__)


def classify(exc: Exception) -> Failure | None:
    if isinstance(exc, requests.Timeout | requests.ConnectionError):
        return Failure(None, f"no answer: {exc.__class__.__name__}")
    if isinstance(exc, Fault):  # the Metadata API (SOAP)
        code = str(exc.code or "")
        if "INVALID_SESSION_ID" in code or "INVALID_SESSION_ID" in str(exc.message):
            return Failure(401, str(exc.message), "INVALID_SESSION_ID", expired_token=True)
        return Failure(400, f"the Metadata API refused: {exc.message}", code or "METADATA")
    if isinstance(exc, SalesforceOperationError) and not isinstance(exc, SalesforceError):
        if "Job timeout" in str(exc):
            return Failure(408, f"the bulk job did not finish in time: {exc}", "BULK_JOB_TIMEOUT")
        if "Field name not found" in str(exc):
            # The whole job failed on a field the integration user cannot see.
            return Failure(400, hidden_fields_message(str(exc)), "INVALID_FIELD")
        return Failure(400, str(exc), "BULK_JOB_FAILED")
    if not isinstance(exc, SalesforceError):
        return None
    content = exc.content
    first = content[0] if isinstance(content, list) and content else content
    code = error_code(first) if isinstance(first, dict) else None
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
