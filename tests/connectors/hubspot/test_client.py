"""The HubSpot connector against the local sandbox (a real HTTP server: the client is urllib3)."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from connectors.base import (
    Caller,
    CrmError,
    CrmUnavailable,
    PropertySpec,
    TaskSpec,
    UnlimitedBudget,
    Write,
)
from connectors.hubspot.api import HubSpotApi
from connectors.hubspot.client import HubSpotConnector, classify
from sandbox.hubspot import Sandbox, SandboxServer

HUB = 555
KEYS = {"companies": "pql_account_key", "contacts": "pql_user_key"}


class SandboxTokens:
    """Tokens straight from the sandbox, refreshing through its token endpoint's state."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self.token = sandbox.issue_tokens(HUB)["access_token"]
        self.refreshes = 0

    def access_token(self) -> str:
        return self.token

    def refresh(self, stale: str) -> str:
        self.refreshes += 1
        self.token = self.sandbox.issue_tokens(HUB)["access_token"]
        return self.token


@pytest.fixture
def server():
    with SandboxServer(Sandbox(requests_per_window=1000, window_seconds=10)) as running:
        yield running


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def connector(server, sleeps):
    tokens = SandboxTokens(server.sandbox)
    caller = Caller(UnlimitedBudget(), tokens, classify, sleep=sleeps.append, rng=random.Random(1))
    hubspot = HubSpotConnector(HubSpotApi(server.url), caller, KEYS)
    hubspot.tokens = tokens
    return hubspot


SPECS = [
    PropertySpec("pql_account_key", "PQL account key", "string", unique=True, hidden=True),
    PropertySpec("pql_activation_rate", "Activation rate", "number"),
    PropertySpec("pql_segment", "Segment", "enumeration", options=("Hot", "Cold")),
]


def faults(server, **values):
    server.sandbox.faults.next_statuses = list(values.get("next_statuses", []))
    server.sandbox.faults.invalid_values = set(values.get("invalid_values", []))


def test_schema_is_created_once_and_a_409_is_not_an_error(server, connector):
    assert connector.ensure_schema("companies", ("pql", "PQL"), SPECS) == [s.name for s in SPECS]
    assert connector.ensure_schema("companies", ("pql", "PQL"), SPECS) == []
    stored = server.sandbox.portals[HUB].properties["companies"]
    assert stored["pql_account_key"]["hasUniqueValue"] is True
    assert [o["value"] for o in stored["pql_segment"]["options"]] == ["Hot", "Cold"]


def test_enumeration_options_follow_the_definitions(server, connector):
    connector.ensure_schema("companies", ("pql", "PQL"), SPECS)
    renamed = [*SPECS[:2], PropertySpec("pql_segment", "Segment", "enumeration", options=("A",))]
    connector.ensure_schema("companies", ("pql", "PQL"), renamed)
    stored = server.sandbox.portals[HUB].properties["companies"]["pql_segment"]
    assert [o["value"] for o in stored["options"]] == ["A"]


def test_create_then_find_by_key_and_by_domain_then_update(server, connector):
    connector.ensure_schema("companies", ("pql", "PQL"), SPECS)
    writes = [
        Write(f"a{n}", {"pql_account_key": f"a{n}", "domain": f"a{n}.example", "name": f"A{n}"})
        for n in range(150)
    ]
    created = connector.create("companies", writes)
    assert all(o.crm_id and not o.error for o in created) and len(created) == 150
    assert server.sandbox.stats["companies_created"] == 150
    ids = {o.key: o.crm_id for o in created}
    assert connector.find_by_key("companies", ["a1", "a149", "nope"]) == {
        "a1": ids["a1"],
        "a149": ids["a149"],
    }
    assert connector.find_by_natural_key("companies", ["A7.example", "none.example"]) == {
        "a7.example": ids["a7"]
    }
    outcomes = connector.update(
        "companies", [Write(k, {"pql_activation_rate": "40"}, crm_id=v) for k, v in ids.items()]
    )
    assert not any(o.error for o in outcomes)
    record = server.sandbox.portals[HUB].objects["companies"][ids["a3"]]
    assert record["properties"]["pql_activation_rate"] == "40"


def test_a_207_fails_only_the_missing_record(server, connector):
    connector.ensure_schema("companies", ("pql", "PQL"), SPECS)
    [made] = connector.create("companies", [Write("a1", {"pql_account_key": "a1"})])
    outcomes = connector.update(
        "companies",
        [
            Write("a1", {"pql_activation_rate": "60"}, crm_id=made.crm_id),
            Write("gone", {"pql_activation_rate": "20"}, crm_id="999999"),
        ],
    )
    assert outcomes[0].error is None
    assert outcomes[1].missing and "OBJECT_NOT_FOUND" in outcomes[1].error
    record = server.sandbox.portals[HUB].objects["companies"][made.crm_id]
    assert record["properties"]["pql_activation_rate"] == "60"


def test_one_invalid_value_fails_only_its_record_not_the_batch(server, connector):
    connector.ensure_schema("companies", ("pql", "PQL"), SPECS)
    faults(server, invalid_values=["BAD"])
    writes = [Write(f"a{n}", {"pql_account_key": f"a{n}", "name": f"A{n}"}) for n in range(10)]
    writes[6] = Write("a6", {"pql_account_key": "a6", "name": "BAD"})
    outcomes = connector.create("companies", writes)
    assert [o.key for o in outcomes if o.error] == ["a6"]
    assert server.sandbox.stats["companies_created"] == 9


def test_502s_are_retried_with_growing_jittered_waits(server, connector, sleeps):
    connector.ensure_schema("companies", ("pql", "PQL"), SPECS)
    faults(server, next_statuses=[502, 502, 503])
    [made] = connector.create("companies", [Write("a1", {"pql_account_key": "a1"})])
    assert made.crm_id
    assert len(sleeps) == 3 and sleeps[0] < sleeps[2]
    assert all(0.25 <= s <= 2.0 for s in sleeps)


def test_persistent_5xx_gives_up_as_unavailable(server, connector):
    faults(server, next_statuses=[502] * 10)
    with pytest.raises(CrmUnavailable, match="after 6 attempts"):
        connector.owners()


def test_429_waits_as_hubspot_says_and_then_lands(server, connector, sleeps):
    faults(server, next_statuses=[429, 429])
    owners = connector.owners()
    assert len(owners) == 3 and len(sleeps) == 2


def test_an_expired_access_token_is_refreshed_once_and_the_call_repeated(server, connector):
    server.sandbox.expire_access_tokens()
    assert len(connector.owners()) == 3
    assert connector.tokens.refreshes == 1


def test_a_client_error_is_raised_with_hubspots_message(server, connector):
    connector.ensure_schema("companies", ("pql", "PQL"), [])
    with pytest.raises(CrmError, match="group nope does not exist") as caught:
        connector._call(
            "create property",
            "POST",
            connector.api.properties("companies"),
            {
                "name": "x",
                "label": "x",
                "type": "number",
                "fieldType": "number",
                "groupName": "nope",
            },
        )
    assert caught.value.status == 400


def test_contacts_are_created_associated_with_their_company(server, connector):
    connector.ensure_schema("companies", ("pql", "PQL"), SPECS)
    connector.ensure_schema(
        "contacts", ("pql", "PQL"), [PropertySpec("pql_user_key", "k", "string", unique=True)]
    )
    [company] = connector.create("companies", [Write("a1", {"pql_account_key": "a1"})])
    [contact] = connector.create(
        "contacts",
        [
            Write(
                "u1", {"pql_user_key": "u1", "email": "u1@x.example"}, company_crm_id=company.crm_id
            )
        ],
    )
    assert ("contacts", contact.crm_id, "companies", company.crm_id) in server.sandbox.portals[
        HUB
    ].associations
    assert connector.find_by_natural_key("contacts", ["U1@x.example"]) == {
        "u1@x.example": contact.crm_id
    }


def test_changed_since_returns_records_modified_after_a_time_oldest_first(server, connector):
    early = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    connector.ensure_schema("companies", ("pql", "PQL"), SPECS)
    made = connector.create(
        "companies", [Write(f"a{n}", {"pql_account_key": f"a{n}"}) for n in range(250)]
    )
    changed = list(connector.changed_since("companies", early, ["hubspot_owner_id"]))
    assert [c.crm_id for c in changed] == [m.crm_id for m in made]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert list(connector.changed_since("companies", later, ["hubspot_owner_id"])) == []


def test_tasks_are_created_on_the_company_for_the_owner(server, connector):
    connector.ensure_schema("companies", ("pql", "PQL"), SPECS)
    [company] = connector.create("companies", [Write("a1", {"pql_account_key": "a1"})])
    task_id = connector.create_task(
        TaskSpec("Engagement dropped", "body", company.crm_id, "101", dt.datetime.now(dt.UTC))
    )
    portal = server.sandbox.portals[HUB]
    task = portal.objects["tasks"][task_id]
    assert task["properties"]["hubspot_owner_id"] == "101"
    assert ("tasks", task_id, "companies", company.crm_id) in portal.associations


def test_a_429_storm_is_waited_out_and_an_endless_one_ends_the_round(server, connector, sleeps):
    faults(server, next_statuses=[429] * 12)
    assert len(connector.owners()) == 3
    assert len(sleeps) == 12 and all(1.0 <= s <= 1.25 for s in sleeps)
    faults(server, next_statuses=[429] * 40)
    with pytest.raises(CrmUnavailable, match="still rate limited"):
        connector.owners()


def test_a_timeout_is_retried_like_a_5xx():
    import urllib3

    from connectors.hubspot.client import classify

    failure = classify(urllib3.exceptions.ReadTimeoutError(None, "/crm", "read timed out"))
    assert failure.status is None and "no answer" in failure.message
    assert classify(ValueError("a bug")) is None  # not a CRM answer: raised, not retried
