"""The Salesforce connector through the real ``simple-salesforce`` and ``requests`` code, with
the network replaced by ``responses``: most answers come from the sandbox org (mounted under
``responses``), the edge cases from hand-written Salesforce answers."""

from __future__ import annotations

import base64
import datetime as dt
import random

import pytest
import requests
import responses

from connectors.base import Caller, CrmError, CrmPaused, PropertySpec, TaskSpec, Write
from connectors.salesforce.api import field_name, host_of
from connectors.salesforce.auth import exchange_code, refresh_tokens
from connectors.salesforce.client import SalesforceConnector
from connectors.salesforce.errors import DailyLimit, FieldsNotVisible, classify
from sandbox.salesforce import SalesforceSandbox, mount

INSTANCE = "https://acme.my.salesforce.test"
API = f"{INSTANCE}/services/data/v62.0"
KINDS = {
    "pql_account_key": "string",
    "pql_user_key": "string",
    "pql_activation_rate": "number",
    "pql_pql": "bool",
    "pql_segment": "enumeration",
    "pql_pql_at": "datetime",
}
ACCOUNT_SPECS = [
    PropertySpec("pql_account_key", "PQL account id", "string", unique=True, hidden=True),
    PropertySpec("pql_activation_rate", "Activation rate", "number", percent=True),
    PropertySpec("pql_pql", "Product-qualified lead", "bool"),
    PropertySpec("pql_segment", "Segment", "enumeration", options=("Hot", "Cold")),
    PropertySpec("pql_pql_at", "PQL since", "datetime"),
]
USER_SPECS = [
    PropertySpec("pql_user_key", "PQL user id", "string", unique=True, hidden=True),
    PropertySpec("pql_activation_rate", "Activation rate", "number", percent=True),
]


class Tokens:
    def __init__(self, sandbox: SalesforceSandbox, org):
        self.sandbox, self.org = sandbox, org
        self.token = sandbox.token_for(org)
        self.refreshes = 0

    def access_token(self) -> str:
        return self.token

    def refresh(self, stale: str) -> str:
        self.refreshes += 1
        self.token = self.sandbox.token_for(self.org)
        return self.token


@pytest.fixture
def mock():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def sandbox(mock):
    fake = SalesforceSandbox()
    mount(mock, fake, INSTANCE)
    return fake


@pytest.fixture
def org(sandbox):
    return sandbox.org()


def make_connector(sandbox, org, reserve=0.2, bulk_threshold=2000):
    tokens = Tokens(sandbox, org)
    limit = DailyLimit(reserve_fraction=reserve)
    caller = Caller(limit, tokens, classify, sleep=lambda s: None, rng=random.Random(1))
    connector = SalesforceConnector(
        INSTANCE,
        caller,
        {"account": "pql_account_key", "user": "pql_user_key"},
        KINDS,
        limit,
        integration_user_id=org.admin_id,
        bulk_threshold=bulk_threshold,
        bulk_poll_seconds=0,
    )
    connector.tokens = tokens
    return connector


@pytest.fixture
def connector(sandbox, org):
    return make_connector(sandbox, org)


class StaticTokens:
    def access_token(self) -> str:
        return "00D!static"

    def refresh(self, stale: str) -> str:
        return "00D!static"


@pytest.fixture
def bare():
    """Salesforce answers written by hand (no sandbox): a mock and a connector on it."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        limit = DailyLimit()
        caller = Caller(limit, StaticTokens(), classify, sleep=lambda s: None)
        connector = SalesforceConnector(
            INSTANCE,
            caller,
            {"account": "pql_account_key", "user": "pql_user_key"},
            KINDS,
            limit,
            bulk_threshold=1,
            bulk_poll_seconds=0,
        )
        yield rsps, connector


@pytest.fixture
def schema(connector):
    connector.ensure_schema("Account", ("pql", "PQL"), ACCOUNT_SPECS)
    connector.ensure_schema("Contact", ("pql", "PQL"), USER_SPECS)
    return connector


def app_assignments(org) -> list[dict]:
    """Assignments of the app's permission set (the users' profiles have their own)."""
    ours = {r["Id"] for r in org.records["PermissionSet"].values() if r["Name"] == "PQL_Engine"}
    return [
        a for a in org.records["PermissionSetAssignment"].values() if a["PermissionSetId"] in ours
    ]


def test_schema_creates_fields_a_permission_set_and_its_assignment_once(sandbox, org, connector):
    created = connector.ensure_schema("Account", ("pql", "PQL"), ACCOUNT_SPECS)
    assert created == [f"Account.{s.name}__c" for s in ACCOUNT_SPECS]
    fields = org.custom["Account"]
    assert fields["pql_account_key__c"]["unique"] and fields["pql_account_key__c"]["external"]
    assert fields["pql_activation_rate__c"]["type"] == "Percent"
    assert fields["pql_pql__c"]["type"] == "Checkbox"
    assert fields["pql_segment__c"]["values"] == ["Hot", "Cold"]
    assert fields["pql_pql_at__c"]["type"] == "DateTime"
    # Visible to the integration user through the assigned permission set.
    assert "Account.pql_segment__c" in org.visible(org.admin_id)
    assert connector.ensure_schema("Contact", ("pql", "PQL"), USER_SPECS) == [
        "Contact.pql_user_key__c",
        "Contact.pql_activation_rate__c",
        "Lead.pql_user_key__c",
        "Lead.pql_activation_rate__c",
    ]
    # The permission set kept the account fields when the user fields were added.
    assert {"Account.pql_segment__c", "Lead.pql_user_key__c"} <= org.visible(org.admin_id)
    assert len(app_assignments(org)) == 1
    again = make_connector(sandbox, org)
    assert again.ensure_schema("Account", ("pql", "PQL"), ACCOUNT_SPECS) == []
    assert len(app_assignments(org)) == 1


def test_a_packaged_permission_set_of_the_same_name_is_not_the_one_assigned(org, connector):
    # A managed package's permission set keeps its developer name in Name; only its
    # NamespacePrefix tells it from the org's own, which the connector maintains.
    org.install_package("pqlx", ["PQL_Engine", "PQL_Engine_Integration"])
    connector.ensure_schema("Account", ("pql", "PQL"), ACCOUNT_SPECS)
    assigned = {
        org.records["PermissionSet"][a["PermissionSetId"]].get("NamespacePrefix")
        for a in app_assignments(org)
    }
    assert assigned == {None}
    assert "Account.pql_segment__c" in org.visible(org.admin_id)


def test_new_picklist_options_update_the_field(org, schema):
    specs = [
        *ACCOUNT_SPECS[:3],
        PropertySpec("pql_segment", "Segment", "enumeration", options=("Hot", "Warm", "Cold")),
    ]
    assert schema.ensure_schema("Account", ("pql", "PQL"), specs) == []
    assert org.custom["Account"]["pql_segment__c"]["values"] == ["Hot", "Warm", "Cold"]


def test_create_match_and_update_accounts_with_typed_values(sandbox, org, schema):
    existing = org.insert("Account", {"Name": "Globex", "Website": "https://www.Globex.com/"})
    assert schema.find_by_natural_key("Account", ["globex.com", "initech.com"]) == {
        "globex.com": existing
    }
    pql_at = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)
    outcomes = schema.create(
        "Account",
        [
            Write(
                "acme",
                {
                    "name": "Acme",
                    "domain": "acme.com",
                    "pql_account_key": "acme",
                    "pql_activation_rate": "62.5",
                    "pql_pql": "true",
                    "pql_segment": "Hot",
                    "pql_pql_at": str(int(pql_at.timestamp() * 1000)),
                },
            )
        ],
    )
    assert outcomes[0].error is None
    record = org.records["Account"][outcomes[0].crm_id]
    assert record["Name"] == "Acme" and record["Website"] == "acme.com"
    assert record["pql_activation_rate__c"] == 62.5 and record["pql_pql__c"] is True
    assert record["pql_pql_at__c"] == "2026-11-20T09:30:00.000Z"
    assert schema.find_by_key("Account", ["acme", "nope"]) == {"acme": outcomes[0].crm_id}
    # Clearing: a bool becomes false, others null.
    update = schema.update(
        "Account",
        [Write("acme", {"pql_pql": "", "pql_segment": ""}, crm_id=outcomes[0].crm_id)],
    )
    assert update[0].error is None
    assert record["pql_pql__c"] is False and record["pql_segment__c"] is None


def test_collection_partial_failures_map_to_their_records(org, schema):
    a = org.insert("Account", {"Name": "A"})
    b = org.insert("Account", {"Name": "B"})
    org.delete("Account", b)  # deleted in Salesforce meanwhile
    outcomes = schema.update(
        "Account",
        [
            Write("a", {"pql_segment": "Hot"}, crm_id=a),
            Write("b", {"pql_segment": "Hot"}, crm_id=b),
            Write("c", {"pql_segment": "Lukewarm"}, crm_id=a),
        ],
    )
    assert outcomes[0].error is None and outcomes[0].crm_id == a
    assert outcomes[1].missing and "ENTITY_IS_DELETED" in outcomes[1].error
    assert not outcomes[2].missing
    assert "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in outcomes[2].error


def test_a_duplicate_rule_blocking_a_create_writes_to_the_matched_record(org, schema):
    existing = org.insert("Account", {"Name": "Acme Corp", "Website": "http://acme.com"})
    outcome = schema.create(
        "Account",
        [
            Write(
                "acme",
                {
                    "name": "Acme",
                    "domain": "acme.com",
                    "pql_account_key": "acme",
                    "pql_segment": "Hot",
                },
            )
        ],
    )[0]
    assert outcome.error is None and outcome.crm_id == existing
    record = org.records["Account"][existing]
    assert record["Name"] == "Acme Corp"  # the rep's name stays
    assert record["pql_segment__c"] == "Hot" and record["pql_account_key__c"] == "acme"
    assert len(org.records["Account"]) == 1


def test_duplicate_rule_errors_without_a_named_record_fall_back_to_the_domain(bare):
    mock, connector = bare
    existing = "001000000000009AAA"
    mock.add(
        responses.PATCH,
        f"{API}/composite/sobjects/Account/pql_account_key__c",
        json=[
            {
                "success": False,
                "errors": [
                    {
                        "statusCode": "DUPLICATES_DETECTED",
                        "message": "Use one of these records?",
                        "fields": [],
                    }
                ],
            }
        ],
    )
    mock.add(
        responses.GET,
        f"{API}/query/",
        json={
            "done": True,
            "totalSize": 1,
            "records": [
                {"attributes": {"type": "Account"}, "Id": existing, "Website": "https://acme.com"}
            ],
        },
    )
    mock.add(
        responses.PATCH,
        f"{API}/composite/sobjects",
        json=[{"id": existing, "success": True, "errors": []}],
        match=[
            responses.matchers.header_matcher({"Sforce-Duplicate-Rule-Header": "allowSave=true"})
        ],
    )
    outcome = connector.create(
        "Account",
        [
            Write(
                "acme",
                {
                    "name": "Acme",
                    "domain": "acme.com",
                    "pql_account_key": "acme",
                    "pql_pql": "true",
                },
            )
        ],
    )[0]
    assert outcome.error is None and outcome.crm_id == existing
    sent = mock.calls[-1].request.body
    assert b'"pql_pql__c": true' in sent and b"Name" not in sent  # the rep's name stays


def test_users_become_contacts_on_known_accounts_and_leads_otherwise(org, schema):
    account = org.insert("Account", {"Name": "Acme"})
    outcomes = schema.create(
        "Contact",
        [
            Write(
                "u1",
                {"email": "ann@acme.com", "firstname": "Ann", "pql_user_key": "u1"},
                company_crm_id=account,
            ),
            Write("u2", {"email": "bob@solo.dev", "pql_user_key": "u2"}),
        ],
    )
    contact = org.records["Contact"][outcomes[0].crm_id]
    lead = org.records["Lead"][outcomes[1].crm_id]
    assert contact["AccountId"] == account and contact["LastName"] == "[not provided]"
    assert lead["Company"] == "[not provided]" and lead["Email"] == "bob@solo.dev"
    assert schema.find_by_key("Contact", ["u1", "u2"]) == {
        "u1": outcomes[0].crm_id,
        "u2": outcomes[1].crm_id,
    }


def test_a_converted_lead_follows_to_its_contact(org, schema):
    lead = schema.create("Contact", [Write("u2", {"email": "bob@solo.dev", "pql_user_key": "u2"})])[
        0
    ].crm_id
    contact = org.convert_lead(lead)
    assert schema.find_by_natural_key("Contact", ["bob@solo.dev"]) == {"bob@solo.dev": contact}
    outcome = schema.update("Contact", [Write("u2", {"pql_activation_rate": "50"}, crm_id=lead)])[0]
    assert outcome.error is None and outcome.crm_id == contact
    assert org.records["Contact"][contact]["pql_activation_rate__c"] == 50


def test_fields_without_permission_are_reported_as_such(sandbox, org, schema):
    account = org.insert("Account", {"Name": "A"})
    org.permission_sets["PQL_Engine"] = set()  # an admin removed the field permissions
    with pytest.raises(FieldsNotVisible, match="permission set PQL_Engine is granted again"):
        schema.update("Account", [Write("a", {"pql_segment": "Hot"}, crm_id=account)])
    # The next schema check sees the fields missing from describe and grants them again.
    again = make_connector(sandbox, org)
    again.ensure_schema("Account", ("pql", "PQL"), ACCOUNT_SPECS)
    assert (
        again.update("Account", [Write("a", {"pql_segment": "Hot"}, crm_id=account)])[0].error
        is None
    )


def test_an_expired_session_is_refreshed_once(sandbox, org, schema):
    account = org.insert("Account", {"Name": "A"})
    sandbox.expire_sessions()
    assert schema.read("Account", [account], ["owner_id", "lifecycle_stage"])[0].crm_id == account
    assert schema.tokens.refreshes == 1


def test_request_limit_exceeded_pauses_instead_of_retrying(sandbox, org, schema):
    org.api_used = org.daily_limit
    calls = sandbox.api_calls()
    with pytest.raises(CrmPaused, match="daily API request limit"):
        schema.owners()
    assert sandbox.api_calls() == calls + 1


def test_the_reserve_for_other_integrations_stops_calls_before_the_limit(sandbox, org):
    connector = make_connector(sandbox, org, reserve=0.1)
    org.daily_limit, org.api_used = 1000, 899
    connector.owners()  # answered with api-usage=900/1000: the reserve starts here
    calls = sandbox.api_calls()
    with pytest.raises(CrmPaused) as raised:
        connector.owners()
    assert sandbox.api_calls() == calls  # not sent
    assert "900 of 1,000 used" in str(raised.value) and "below 900" in str(raised.value)


def test_concurrent_request_limit_is_waited_out(mock, sandbox, org, connector):
    sandbox.fail_next = [
        (
            403,
            [
                {
                    "errorCode": "REQUEST_LIMIT_EXCEEDED",
                    "message": "ConcurrentPerOrgLongTxn Limit exceeded.",
                }
            ],
        )
    ]
    assert [o.owner_id for o in connector.owners()] == [org.admin_id]
    assert connector.caller.stats["429"] == 1


def test_bulk_job_results_map_back_to_each_record(sandbox, org):
    connector = make_connector(sandbox, org, bulk_threshold=3)
    connector.ensure_schema("Account", ("pql", "PQL"), ACCOUNT_SPECS)
    ids = [org.insert("Account", {"Name": f"A{i}"}) for i in range(5)]
    org.delete("Account", ids[3])
    writes = [
        Write(f"a{i}", {"pql_segment": "Hot", "pql_activation_rate": str(i * 10)}, crm_id=crm_id)
        for i, crm_id in enumerate(ids)
    ]
    writes[4] = Write("a4", {"pql_segment": "Tepid"}, crm_id=ids[4])
    assert connector.write_batch(5) == 5
    outcomes = connector.update("Account", writes)
    assert [o.error is None for o in outcomes] == [True, True, True, False, False]
    assert outcomes[3].missing and not outcomes[4].missing
    assert org.records["Account"][ids[2]]["pql_activation_rate__c"] == 20
    assert connector.caller.stats["bulk_jobs"] == 2  # two column shapes
    created = connector.create(
        "Account",
        [
            Write(f"n{i}", {"name": f"N{i}", "pql_account_key": f"n{i}", "pql_segment": "Cold"})
            for i in range(4)
        ],
    )
    assert all(o.error is None and o.crm_id for o in created)
    assert {org.records["Account"][o.crm_id]["pql_account_key__c"] for o in created} == {
        "n0",
        "n1",
        "n2",
        "n3",
    }


def test_bulk_job_failure_rows_come_from_salesforce_csv(bare):
    """Hand-written Bulk API 2.0 answers, as Salesforce sends them."""
    mock, connector = bare
    jobs = f"{API}/jobs/ingest"
    for method, url, body in (
        (responses.POST, jobs, {"id": "7501", "state": "Open"}),
        (responses.PATCH, f"{jobs}/7501", {"id": "7501", "state": "UploadComplete"}),
        (
            responses.GET,
            f"{jobs}/7501",
            {
                "id": "7501",
                "state": "JobComplete",
                "numberRecordsFailed": 1,
                "numberRecordsProcessed": 2,
            },
        ),
    ):
        mock.add(method, url, json=body)
    mock.add(responses.PUT, f"{jobs}/7501/batches", status=201)
    mock.add(
        responses.GET,
        f"{jobs}/7501/successfulResults",
        body='"sf__Id","sf__Created","Id","pql_segment__c"\n'
        '"001000000000001AAA","false","001000000000001AAA","Hot"\n',
    )
    mock.add(
        responses.GET,
        f"{jobs}/7501/failedResults",
        body='"sf__Id","sf__Error","Id","pql_segment__c"\n'
        '"001000000000002AAA","ENTITY_IS_DELETED:entity is deleted:--",'
        '"001000000000002AAA","Hot"\n',
    )
    mock.add(
        responses.GET,
        f"{jobs}/7501/unprocessedRecords",
        body='"Id","pql_segment__c"\n"001000000000003AAA","Hot"\n',
    )
    outcomes = connector.update(
        "Account",
        [Write(k, {"pql_segment": "Hot"}, crm_id=f"00100000000000{k}AAA") for k in "123"],
    )
    assert outcomes[0].error is None
    assert outcomes[1].missing and "ENTITY_IS_DELETED" in outcomes[1].error
    assert outcomes[2].error == "not processed by the bulk job"


def test_pull_owners_records_and_opportunity_stages(org, schema):
    rep = org.insert(
        "User",
        {"Name": "Rita Rep", "Email": "rita@acme.test", "IsActive": True, "UserType": "Standard"},
    )
    account = schema.create(
        "Account", [Write("acme", {"name": "Acme", "pql_account_key": "acme"})]
    )[0].crm_id
    org.insert("Account", {"Name": "Not ours"})
    org.change(
        "Account", account, OwnerId=rep, Type="Customer - Direct", LastActivityDate="2026-11-20"
    )
    org.insert(
        "Opportunity",
        {"Name": "Acme expansion", "AccountId": account, "StageName": "Negotiation/Review"},
    )
    owners = {o.owner_id: o for o in schema.owners()}
    assert owners[rep].email == "rita@acme.test" and not owners[rep].archived
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    changed = list(
        schema.changed_since(
            "Account",
            since,
            ["owner_id", "lifecycle_stage", "last_sales_activity_at", "opportunity_stage"],
        )
    )
    assert [c.crm_id for c in changed] == [account, account]
    assert changed[0].properties == {
        "owner_id": rep,
        "lifecycle_stage": "Customer - Direct",
        "last_sales_activity_at": "2026-11-20",
    }
    assert changed[1].properties == {"opportunity_stage": "Negotiation/Review"}
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    assert list(schema.changed_since("Account", future, ["owner_id"])) == []


def test_cs_task_names_account_contact_and_owner(org, schema):
    account = org.insert("Account", {"Name": "Acme"})
    contact = org.insert("Contact", {"LastName": "Ann", "AccountId": account})
    task_id = schema.create_task(
        TaskSpec(
            "Engagement dropped: Acme",
            "Fell from 80 to 40.",
            account,
            org.admin_id,
            dt.datetime(2026, 11, 28, tzinfo=dt.UTC),
            user_crm_id=contact,
        )
    )
    task = org.records["Task"][task_id]
    assert (task["WhatId"], task["WhoId"], task["OwnerId"]) == (account, contact, org.admin_id)
    assert task["ActivityDate"] == "2026-11-28" and task["Priority"] == "High"


def test_contacts_found_by_email_get_their_account_only_when_they_have_none(org, schema):
    account = org.insert("Account", {"Name": "Acme"})
    other = org.insert("Account", {"Name": "Reseller"})
    loose = org.insert("Contact", {"LastName": "A", "Email": "a@acme.com"})
    placed = org.insert("Contact", {"LastName": "B", "Email": "b@acme.com", "AccountId": other})
    schema.associate_users([(loose, account), (placed, account)])
    assert org.records["Contact"][loose]["AccountId"] == account
    assert org.records["Contact"][placed]["AccountId"] == other


def test_host_of_websites():
    assert host_of("https://www.Acme.com/about") == "acme.com"
    assert host_of("acme.co.uk") == "acme.co.uk"
    assert host_of("") is None


def test_errors_name_the_problem(mock, org, connector):
    with pytest.raises(CrmError, match="not an Account, Contact, Lead or User id"):
        connector.update("Account", [Write("x", {}, crm_id="a0X000000000001")])


def test_token_answers_as_salesforce_sends_them(bare):
    mock, _ = bare
    login = "https://login.salesforce.com"
    identity = f"{login}/id/00D5g000004ABCDEAZ/0055g00000XYZ12AAA"
    mock.add(
        responses.POST,
        f"{login}/services/oauth2/token",
        json={
            "access_token": "00D5g!AQ4AQ",
            "refresh_token": "5Aep861",
            "signature": "sig",
            "scope": "refresh_token api",
            "instance_url": "https://acme.my.salesforce.com",
            "id": identity,
            "token_type": "Bearer",
            "issued_at": "1732700000000",
        },
        match=[
            responses.matchers.urlencoded_params_matcher(
                {
                    "grant_type": "authorization_code",
                    "code": "c0de",
                    "client_id": "id",
                    "client_secret": "secret",
                    "redirect_uri": "https://app/cb",
                    "code_verifier": "v3rifier",
                }
            )
        ],
    )
    tokens = exchange_code(login, "id", "secret", "c0de", "https://app/cb", "v3rifier")
    assert (tokens.org_id, tokens.user_id) == ("00D5g000004ABCDEAZ", "0055g00000XYZ12AAA")
    assert tokens.instance_url == "https://acme.my.salesforce.com"
    # A refresh answer has no refresh token: the old one stays.
    mock.add(
        responses.POST,
        f"{login}/services/oauth2/token",
        json={
            "access_token": "00D5g!NEW",
            "instance_url": "https://acme.my.salesforce.com",
            "id": identity,
            "token_type": "Bearer",
            "issued_at": "1732700100000",
        },
    )
    refreshed = refresh_tokens(login, "id", "secret", "5Aep861")
    assert refreshed.access_token == "00D5g!NEW" and refreshed.refresh_token == "5Aep861"
    mock.add(
        responses.POST,
        f"{login}/services/oauth2/token",
        status=400,
        json={"error": "invalid_grant", "error_description": "expired access/refresh token"},
    )
    with pytest.raises(CrmError, match="expired access/refresh token") as refused:
        refresh_tokens(login, "id", "secret", "5Aep861")
    assert refused.value.status == 400  # TenantTokens turns this into needs_reauth


def test_custom_field_names_stay_within_salesforce_rules():
    assert field_name("pql_engagement_segment") == "pql_engagement_segment__c"
    for bad in ("a" * 41, "pql__x", "_pql", "9pql", "pql_"):
        with pytest.raises(ValueError):
            field_name(bad)


def test_a_request_of_more_than_ten_type_chunks_is_refused_as_salesforce_does(org, schema):
    contacts = [org.insert("Contact", {"LastName": f"C{n}"}) for n in range(6)]
    leads = [org.insert("Lead", {"LastName": f"L{n}", "Company": "X"}) for n in range(6)]
    alternating = [i for pair in zip(contacts, leads, strict=True) for i in pair]
    records = [{"attributes": {"type": i[:3]}, "id": i, "LastName": "Z"} for i in alternating]
    for record in records:
        record["attributes"]["type"] = "Contact" if record["id"].startswith("003") else "Lead"
    with pytest.raises(CrmError, match="more than 10 chunks"):
        schema._rest(
            "update", "PATCH", "composite/sobjects", json={"allOrNone": False, "records": records}
        )


def test_blocked_creates_of_contacts_and_leads_are_written_in_one_run_per_object(org, schema):
    account = org.insert("Account", {"Name": "Acme"})
    writes = []
    for n in range(12):  # known people, alternately Contacts and Leads in Salesforce
        email = f"p{n}@acme.com"
        if n % 2:
            org.insert("Contact", {"LastName": f"P{n}", "Email": email, "AccountId": account})
        else:
            org.insert("Lead", {"LastName": f"P{n}", "Company": "Acme", "Email": email})
        company = account if n % 2 else None  # so the create is a Contact, or a Lead
        writes.append(
            Write(f"u{n}", {"email": email, "pql_user_key": f"u{n}"}, company_crm_id=company)
        )
    outcomes = schema.create("Contact", writes)
    assert [o.error for o in outcomes] == [None] * 12
    assert {o.crm_id[:3] for o in outcomes} == {"003", "00Q"}


def test_an_upsert_on_a_hidden_external_id_is_the_hidden_fields_case(org, schema):
    org.permission_sets["PQL_Engine"] = set()  # the key field is hidden from the user now
    write = Write("acme", {"name": "Acme", "pql_account_key": "acme", "pql_segment": "Hot"})
    with pytest.raises(
        FieldsNotVisible, match=r"external id Account\.pql_account_key__c"
    ) as caught:
        schema.create("Account", [write])
    assert caught.value.category == "INVALID_FIELD"
    assert org.records["Account"] == {}


def _task(schema, account: str, priority: str) -> str:
    return schema.create_task(
        TaskSpec(
            "Engagement dropped: Acme",
            "Fell from 80 to 40.",
            account,
            None,
            dt.datetime(2026, 11, 28, tzinfo=dt.UTC),
            priority=priority,
        )
    )


def test_tasks_take_the_orgs_own_priority_and_opening_status(org, schema):
    account = org.insert("Account", {"Name": "Acme"})
    high, medium = _task(schema, account, "HIGH"), _task(schema, account, "MEDIUM")
    tasks = org.records["Task"]
    assert (tasks[high]["Priority"], tasks[high]["Status"]) == ("High", "Not Started")
    assert tasks[medium]["Priority"] == "Normal"  # Salesforce has no "Medium"


def test_a_customised_org_gets_its_renamed_task_values(org, schema):
    org.task_values(
        [("Routine", True, False), ("Urgent", False, True)],
        [("Done", False, True), ("Open", True, False)],
    )
    account = org.insert("Account", {"Name": "Acme"})
    task = org.records["Task"][_task(schema, account, "HIGH")]
    assert (task["Priority"], task["Status"]) == ("Urgent", "Open")
    low = org.records["Task"][_task(schema, account, "LOW")]
    assert low["Priority"] == "Routine"  # no "Low" in this org: its default


def test_the_sandbox_refuses_a_priority_the_org_does_not_have(org, schema):
    account = org.insert("Account", {"Name": "Acme"})
    with pytest.raises(CrmError, match="restricted picklist"):
        schema._rest(
            "create task",
            "POST",
            "sobjects/Task",
            json={"Subject": "x", "WhatId": account, "Priority": "Medium"},
        )


def test_a_refused_field_fails_alone_the_created_ones_are_granted_and_it_is_named(
    sandbox, org, connector
):
    org.refused_fields["Account.pql_segment__c"] = "(FIELD_INTEGRITY_EXCEPTION, bad value set)"
    with pytest.raises(CrmError, match=r"Account\.pql_segment__c .*bad value set") as caught:
        connector.ensure_schema("Account", ("pql", "PQL"), ACCOUNT_SPECS)
    assert caught.value.category == "METADATA"
    assert "pql_segment__c" not in org.custom["Account"]
    # The fields that were created are granted, so the app can use them meanwhile.
    assert {"Account.pql_activation_rate__c", "Account.pql_account_key__c"} <= org.visible(
        org.admin_id
    )
    org.refused_fields.clear()
    again = make_connector(sandbox, org)
    assert again.ensure_schema("Account", ("pql", "PQL"), ACCOUNT_SPECS) == [
        "Account.pql_segment__c"
    ]
    assert "Account.pql_segment__c" in org.visible(org.admin_id)


def test_the_sandbox_refuses_a_permission_set_naming_a_missing_field(sandbox, org, connector):
    connector._granted["Account"] = {"pql_nowhere__c"}
    with pytest.raises(CrmError, match=r"no CustomField named Account\.pql_nowhere__c"):
        connector._grant()


def test_waiting_for_a_bulk_job_is_bounded(sandbox, org, schema):
    sandbox.hold_jobs = True  # the org never finishes the job
    accounts = [org.insert("Account", {"Name": f"A{n}"}) for n in range(3)]
    schema.bulk_threshold, schema.bulk_wait_seconds = 1, 0.05
    writes = [Write(f"a{n}", {"pql_segment": "Hot"}, crm_id=i) for n, i in enumerate(accounts)]
    with pytest.raises(CrmError) as caught:
        schema.update("Account", writes)
    assert caught.value.category == "BULK_JOB_TIMEOUT"


def test_every_request_of_the_connectors_session_has_a_timeout(monkeypatch):
    from connectors.salesforce.api import TIMEOUT
    from connectors.salesforce.client import PinnedSession, TimedSession

    seen = []
    monkeypatch.setattr(
        requests.Session, "request", lambda self, method, url, **kw: seen.append(kw)
    )
    TimedSession().get("https://x.test/a")
    TimedSession().post("https://x.test/b", timeout=3)
    PinnedSession("/ca.pem").get("https://x.test/c")
    assert [kw["timeout"] for kw in seen] == [TIMEOUT, 3, TIMEOUT]
    assert seen[2]["verify"] == "/ca.pem"


def test_a_note_falls_back_to_a_classic_note_within_its_limits(org, schema):
    org.unavailable.add("ContentNote")
    account = org.insert("Account", {"Name": "Acme"})
    note_id = schema.create_note(account, "T" * 300, "line\n" * 10_000)
    note = org.records["Note"][note_id]
    assert note["ParentId"] == account and len(note["Title"]) == 80
    assert len(note["Body"]) == 32_000


def test_a_content_note_escapes_and_bounds_its_content(org, schema):
    account = org.insert("Account", {"Name": "Acme"})
    note_id = schema.create_note(account, "T" * 300, "<b>Acme</b> & co")
    note = org.records["ContentNote"][note_id]
    assert len(note["Title"]) == 255
    assert base64.b64decode(note["Content"]).decode() == "<p>&lt;b&gt;Acme&lt;/b&gt; &amp; co</p>"


def test_picklist_options_carry_words_for_people_and_ids_for_workflows(sandbox, org, connector):
    spec = PropertySpec(
        "pql_deal_size",
        "Deal size",
        "enumeration",
        options=("small", "mid"),
        option_labels=("Small", "Mid-size"),
    )
    assert connector.ensure_schema("Account", ("pql", "PQL"), [spec]) == [
        "Account.pql_deal_size__c"
    ]
    field = org.custom["Account"]["pql_deal_size__c"]
    assert field["values"] == ["small", "mid"] and field["value_labels"] == ["Small", "Mid-size"]
    # Read back as they were written: nothing to change on the next check.
    again = make_connector(sandbox, org)
    upserts = []
    real = again._upsert_fields
    again._upsert_fields = lambda sobject, specs: upserts.append(specs) or real(sobject, specs)
    assert again.ensure_schema("Account", ("pql", "PQL"), [spec]) == []
    assert upserts == []
