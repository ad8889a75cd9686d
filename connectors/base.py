"""What every CRM connector offers, and the machinery they share (written once, here).

A connector turns the sync engine's requests (ensure these properties exist, write these values
to these records, who owns what, create this task) into one CRM's API calls. It knows nothing of
the database: the engine hands it plain values, a rate budget and a token source.

Shared here: the value types, the errors, batching, and ``Caller`` — the one retry loop (rate
budget before every request, 429 waits as the CRM says, exponential backoff with jitter on 5xx
and timeouts, one token refresh on an expired token).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PropertySpec:
    """A custom property the app writes. ``kind``: number, bool, enumeration, datetime, string
    or text (long string)."""

    name: str
    label: str
    kind: str
    description: str = ""
    options: tuple[str, ...] = ()
    # What people read for each option in the CRM (same order as ``options``; the values stay
    # the stable ids workflows compare). Empty: the values themselves.
    option_labels: tuple[str, ...] = ()
    unique: bool = False
    hidden: bool = False
    percent: bool = False  # a number 0-100 shown as a percentage where the CRM can

    def labelled_options(self) -> list[tuple[str, str]]:
        """(value, label) per option."""
        labels = self.option_labels or self.options
        return list(zip(self.options, labels, strict=True))


# What the sync engine pulls back, in its own words; each connector maps them to its CRM's
# fields (a CRM without an equivalent leaves the field out of what it returns).
PULL_FIELDS = (
    "owner_id",
    "lifecycle_stage",
    "last_contacted_at",
    "last_sales_activity_at",
    "sales_activities",
    "opportunity_stage",
)
# What the CRM knows of a company that fit rules may read as ``crm.<name>``: pulled for
# accounts only, and only those a tenant's fit rules use.
FIRMOGRAPHIC_FIELDS = ("industry", "annual_revenue", "country", "employees")


@dataclass(frozen=True)
class Write:
    """Values for one record. ``key`` is our id for it (the value of the app's unique id
    property); ``crm_id`` the CRM's, when known. ``properties`` holds the app's properties by
    catalogue name and, on creation, the standard fields by neutral name: ``name`` and
    ``domain`` (accounts), ``email``, ``firstname`` and ``lastname`` (users); values are the
    catalogue's strings (numbers plain, "true"/"false", datetimes as epoch milliseconds, ""
    or None to clear)."""

    key: str
    properties: dict[str, str | None]
    crm_id: str | None = None
    # Contacts: the CRM id of their company, to associate a created contact with.
    company_crm_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    key: str
    crm_id: str | None = None
    error: str | None = None
    # The CRM says the record does not exist (deleted there): forget its id and match again.
    missing: bool = False


@dataclass(frozen=True)
class CrmObject:
    """A record read back. ``properties`` are keyed by the names asked for (PULL_FIELDS or
    catalogue names); a pull field the record has no value for is None."""

    crm_id: str
    properties: dict[str, Any]
    modified_at: dt.datetime | None = None


@dataclass(frozen=True)
class Owner:
    owner_id: str
    email: str | None
    name: str | None
    archived: bool = False


@dataclass(frozen=True)
class CrmChange:
    """One notification: a property change (``name``/``value``; ``name`` is the engine's pull
    field, None for properties the engine does not pull), a deletion, or a merge (``crm_id`` is
    the surviving record, ``merged_from`` the records merged into it)."""

    event_id: str  # unique per notification (the CRM's own id may repeat)
    portal: str
    subject: str  # "account" / "user"
    crm_id: str
    kind: str  # "propertyChange" / "deletion" / "merge" / "privacyDeletion"
    occurred_at: dt.datetime
    name: str | None = None
    value: str | None = None
    merged_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskSpec:
    subject: str
    body: str
    company_crm_id: str
    owner_id: str | None
    due_at: dt.datetime
    priority: str = "HIGH"
    # The person the task is about (a user's CRM id), when one is known.
    user_crm_id: str | None = None


# --- errors -----------------------------------------------------------------------------------


class CrmError(Exception):
    """The CRM refused a request. ``status`` is its HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, category: str | None = None):
        super().__init__(message)
        self.status, self.category = status, category


class CrmUnavailable(CrmError):
    """No usable answer after the retries (5xx, timeouts, endless 429s): try again later."""


class AuthorizationLost(CrmError):
    """The CRM no longer accepts the app's refresh token: an admin must reinstall."""


class CrmPaused(CrmUnavailable):
    """The CRM's request quota for the app is spent, or what is left is kept for the
    customer's other integrations: no calls until ``resume_after`` seconds have passed.
    The message says why, for the admin."""

    def __init__(self, message: str, resume_after: float, category: str | None = None):
        super().__init__(message, None, category)
        self.resume_after = resume_after


# --- shared machinery ---------------------------------------------------------------------------


class RateBudget(Protocol):
    def acquire(self) -> None:
        """Block until one more request is allowed (for every process together)."""

    def pause(self, seconds: float) -> None:
        """The CRM said to slow down: nobody sends for ``seconds``."""


class TokenSource(Protocol):
    def access_token(self) -> str:
        """A valid access token (refreshed first when it is about to expire)."""

    def refresh(self, stale: str) -> str:
        """The CRM rejected ``stale``: a fresh token (once, even when many callers ask)."""


class UnlimitedBudget:
    def acquire(self) -> None:
        return None

    def pause(self, seconds: float) -> None:
        return None


@dataclass(frozen=True)
class Failure:
    """A connector's reading of an exception from its client library."""

    status: int | None  # None: no HTTP answer (timeout, connection reset)
    message: str
    category: str | None = None
    retry_after: float | None = None  # seconds, for 429s
    expired_token: bool = False
    # The CRM's daily (or similar long) quota is spent: stop, do not wait and retry.
    quota_exhausted: bool = False


@dataclass
class Caller:
    """Runs one request with the shared manners; ``classify`` reads the client's exceptions
    (returns None for exceptions that are bugs, not CRM answers: they propagate)."""

    budget: RateBudget
    tokens: TokenSource
    classify: Callable[[Exception], Failure | None]
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 6  # for 5xx and timeouts
    base_delay: float = 0.5
    max_delay: float = 30.0
    rate_limit_waits: int = 30  # 429s tolerated for one request before giving up for now
    stats: dict[str, int] = field(default_factory=dict)

    def count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def __call__(
        self, label: str, request: Callable[[str], T], budget: RateBudget | None = None
    ) -> T:
        """``request(access_token)`` performs the call, charged to ``budget`` (a limit of its
        own, such as HubSpot's search limit) instead of the general one when given."""
        budget = budget or self.budget
        failures = waits = 0
        refreshed = False
        token = self.tokens.access_token()
        while True:
            budget.acquire()
            self.count("requests")
            try:
                return request(token)
            except Exception as exc:  # classified below; unknown ones re-raised
                failure = self.classify(exc)
                if failure is None:
                    raise
            if failure.quota_exhausted:
                self.count("quota_exhausted")
                raise CrmPaused(f"{label}: {failure.message}", 3600.0, failure.category)
            if failure.status == 401 and failure.expired_token and not refreshed:
                self.count("token_refreshes")
                token, refreshed = self.tokens.refresh(token), True
                continue
            if failure.status == 429:
                self.count("429")
                waits += 1
                if waits > self.rate_limit_waits:
                    raise CrmUnavailable(f"{label}: still rate limited", 429, failure.category)
                wait = failure.retry_after if failure.retry_after is not None else 1.0
                wait *= 1 + self.rng.random() * 0.25
                budget.pause(wait)
                log.info("%s: rate limited, waiting %.1fs", label, wait)
                self.sleep(wait)
                continue
            if failure.status is None or failure.status >= 500:
                self.count("server_errors" if failure.status else "timeouts")
                failures += 1
                if failures >= self.attempts:
                    raise CrmUnavailable(
                        f"{label}: {failure.message} (after {failures} attempts)",
                        failure.status,
                        failure.category,
                    )
                # Full jitter: a random wait up to the exponential bound.
                bound = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
                wait = bound / 2 + self.rng.random() * bound / 2
                log.info("%s: %s, retrying in %.1fs", label, failure.message, wait)
                self.sleep(wait)
                continue
            raise CrmError(f"{label}: {failure.message}", failure.status, failure.category)


def batches(items: Sequence[T] | Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Connector(Protocol):
    """One CRM. Object types are the CRM's words for accounts and users (HubSpot: companies,
    contacts)."""

    batch_limit: int  # records per read
    account_type: str
    user_type: str

    def write_batch(self, pending: int) -> int:
        """How many writes to hand ``update``/``create`` at once when ``pending`` wait: the
        CRM's batch limit, or more where a bulk interface pays off."""

    def ensure_schema(
        self, object_type: str, group: tuple[str, str], specs: Sequence[PropertySpec]
    ) -> list[str]:
        """Create the property group and properties that do not exist yet; returns the names
        created. Existing ones (also when another process created them meanwhile) are fine."""

    def remove_schema(
        self, object_type: str, group: tuple[str, str], specs: Sequence[PropertySpec]
    ) -> list[str]:
        """Delete the app's properties (and with them their values on every record) and its
        property group; returns the names removed. Ones already gone are fine."""

    def find_by_key(self, object_type: str, keys: Sequence[str]) -> dict:
        """Our key → CRM id, for the keys the CRM knows under the app's unique property."""

    def find_by_natural_key(self, object_type: str, values: Sequence[str]) -> dict:
        """Domain (accounts) or email (users), lower-cased → CRM id."""

    def update(self, object_type: str, writes: Sequence[Write]) -> list[Outcome]:
        """Write values to records with a CRM id; one Outcome per write."""

    def create(self, object_type: str, writes: Sequence[Write]) -> list[Outcome]:
        """Create records; one Outcome per write, with the new CRM id."""

    def associate_users(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Associate (user CRM id, account CRM id) pairs."""

    def read(
        self, object_type: str, crm_ids: Sequence[str], fields: Sequence[str]
    ) -> list[CrmObject]:
        """These records' values of ``fields`` (PULL_FIELDS or catalogue names); records
        missing in the CRM are left out."""

    def owners(self) -> list[Owner]: ...

    def changed_since(
        self, object_type: str, since: dt.datetime, fields: Sequence[str]
    ) -> Iterator[CrmObject]:
        """Records modified at or after ``since``, oldest first, with ``fields`` (PULL_FIELDS).
        An account's related records (Salesforce opportunities) may come as objects holding
        only the fields they set."""

    def create_task(self, task: TaskSpec) -> str:
        """Create a task on an account (and its person, when given); returns its CRM id."""

    def create_note(
        self, account_crm_id: str, title: str, body: str, owner_id: str | None = None
    ) -> str:
        """Add a note to an account's timeline; returns its CRM id."""
