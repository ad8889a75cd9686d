"""Installs and uninstalls, read from HubSpot's webhooks journal (2026-03).

HubSpot writes ``APP_LIFECYCLE_EVENT`` entries (``APP_INSTALL``, ``APP_UNINSTALL``) to the app's
journal. The local journal is read per portal (``installPortalId``) with a client-credentials
token of the app: ``earliest`` the first time, then ``batch/{offset}/next/{count}`` from the
offset read last. Each result names a short-lived URL that holds the entry itself.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from dataclasses import dataclass

from connectors.hubspot.api import TIMEOUT, HubSpotApi
from connectors.hubspot.client import checked_request
from connectors.hubspot.oauth import token_request

LIFECYCLE_EVENTS = ("APP_INSTALL", "APP_UNINSTALL")
BATCH = 100
JOURNAL_SCOPE = "developer.webhooks_journal.read"


@dataclass(frozen=True)
class LifecycleEvent:
    portal: str
    event: str  # APP_INSTALL / APP_UNINSTALL
    occurred_at: dt.datetime | None


def lifecycle_event(entry: dict) -> LifecycleEvent | None:
    """An entry of the journal, if it is an install or an uninstall."""
    if entry.get("subscriptionType") != "APP_LIFECYCLE_EVENT":
        return None
    event = entry.get("eventTypeId") or entry.get("eventType") or entry.get("action")
    if event not in LIFECYCLE_EVENTS or entry.get("portalId") is None:
        return None
    at = entry.get("occurredAt")
    occurred = dt.datetime.fromtimestamp(int(at) / 1000, dt.UTC) if at is not None else None
    return LifecycleEvent(str(entry["portalId"]), event, occurred)


class JournalReader:
    def __init__(self, api: HubSpotApi, client_id: str, client_secret: str, clock=time.time):
        self.api, self.client_id, self.client_secret, self.clock = (
            api,
            client_id,
            client_secret,
            clock,
        )
        self._token: tuple[str, float] | None = None

    def token(self) -> str:
        """The app's client-credentials token, reused until shortly before it expires."""
        if self._token and self._token[1] > self.clock() + 60:
            return self._token[0]
        answer = token_request(
            self.api,
            "token",
            {
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "scope": JOURNAL_SCOPE,
            },
        )
        self._token = (answer["access_token"], self.clock() + int(answer["expires_in"]))
        return self._token[0]

    def _get(self, path: str, portal: str) -> dict:
        return checked_request(
            self.api, "journal", "GET", path, token=self.token(), query={"installPortalId": portal}
        )

    def _entry(self, url: str) -> dict:
        with urllib.request.urlopen(url, timeout=TIMEOUT[1]) as answer:
            return json.loads(answer.read() or b"{}")

    def lifecycle_events(
        self, portal: str, offset: str | None
    ) -> tuple[list[LifecycleEvent], str | None]:
        """The portal's installs and uninstalls after ``offset`` (from the start of the
        journal without one), and the offset to read from next time."""
        events: list[LifecycleEvent] = []
        if offset is None:
            first = self._get(self.api.journal_local("earliest"), portal)
            if not first.get("currentOffset"):
                return events, None
            events += self._events([first])
            offset = first["currentOffset"]
        while True:
            page = self._get(self.api.journal_local(f"batch/{offset}/next/{BATCH}"), portal)
            results = page.get("results") or []
            if not results:
                return events, offset
            events += self._events(results)
            offset = results[-1]["currentOffset"]

    def _events(self, results: list[dict]) -> list[LifecycleEvent]:
        out = []
        for result in results:
            event = lifecycle_event(self._entry(result["url"]))
            if event is not None:
                out.append(event)
        return out
