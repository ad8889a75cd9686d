"""HubSpot's REST API at one date version, spoken through ``hubspot-api-client``.

Since March 2026 HubSpot's paths carry their version as a date (``/crm/objects/2026-03/...``);
``hubspot-api-client`` 12, HubSpot's stable Python client, generates only the older paths, so the
connector uses its generic ``ApiClient.call_api`` (the same urllib3 pool, timeouts, bearer
header and ``ApiException`` as its generated APIs) with the paths built here. The version lives
in one place (``HUBSPOT_API_VERSION``, default ``2026-03``): moving to the next one is a change of
that setting once its OpenAPI files say the calls below are unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from hubspot.crm.objects import ApiClient, Configuration

DEFAULT_VERSION = "2026-03"
TIMEOUT = (5.0, 30.0)  # connect, read (seconds)


class HubSpotApi:
    def __init__(self, base_url: str, version: str = DEFAULT_VERSION):
        self.base_url = base_url.rstrip("/")
        self.version = version
        # One client (one connection pool) per connector; the token is sent per request.
        self._client = ApiClient(Configuration(host=self.base_url))

    # --- paths, the version in one place -------------------------------------------------------

    def objects(self, rest: str) -> str:
        return f"/crm/objects/{self.version}/{rest}"

    def properties(self, rest: str) -> str:
        return f"/crm/properties/{self.version}/{rest}"

    def owners(self) -> str:
        return f"/crm/owners/{self.version}"

    def associations(self, rest: str) -> str:
        return f"/crm/associations/{self.version}/{rest}"

    def users(self, rest: str) -> str:
        return f"/settings/users/{self.version}/{rest}"

    def oauth(self, rest: str) -> str:
        return f"/oauth/{self.version}/{rest}"

    def journal(self, rest: str) -> str:
        return f"/webhooks-journal/journal/{self.version}/{rest}"

    def journal_local(self, rest: str) -> str:
        return f"/webhooks-journal/journal-local/{self.version}/{rest}"

    def app_installs(self, rest: str) -> str:
        return f"/appinstalls/{self.version}/{rest}"

    # --- requests -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        form: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
    ) -> dict:
        """One request; the answer's JSON (``{}`` for an empty body). A non-2xx answer raises
        the client's ``ApiException`` (``status``, ``headers``, ``body``), read by
        ``client.classify``."""
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            headers["Content-Type"] = "application/json"
        raw = self._client.call_api(
            path,
            method,
            query_params=query,
            header_params=headers,
            body=body,
            post_params=list(form.items()) if form is not None else None,
            _preload_content=False,
            _request_timeout=TIMEOUT,
        )
        data = raw.data
        # The answer's JSON is read as is: the client's model deserialisation parses every
        # timestamp with dateutil, which cost more than the round trip for 100 records.
        return json.loads(data) if data else {}
