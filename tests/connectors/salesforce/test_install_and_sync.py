"""The Salesforce app end to end: OAuth install with PKCE, then the sync engine (the same one
as HubSpot's) pushing, pulling and creating CS tasks through the Salesforce connector, against
the sandbox org mounted under ``responses``."""

from __future__ import annotations

import base64
import datetime as dt
import math
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from app.models import AccountScore, CrmRecord, CsTask, Tenant
from app.scores.scoring_pass import recompute
from app.sync import lifecycle
from app.tenants import issue_write_key
from connectors.base import CrmPaused
from tests.helpers.apps import write_key_of
from tests.helpers.hubspot import NOW, acme, dropping, send
from tests.helpers.salesforce import INSTANCE, LOGIN, MY_DOMAIN, install


@pytest.fixture
def app(salesforce_app):
    return salesforce_app


@pytest.fixture
def installed(app, client, db, org_server):
    page, org = install(client, org_server)
    assert page.status_code == 200, page.get_data(as_text=True)
    with db.system_session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.external_id == org.org_id))
    return tenant_id, write_key_of(app, tenant_id), org


def sync(app, tenant_id):
    return lifecycle.sync_tenant(app.extensions["pql"], tenant_id)


def scored_and_synced(app, client, db, tenant_id, key):
    acme(client, key)
    recompute(db, tenant_id, NOW)
    return sync(app, tenant_id)


# --- install ---------------------------------------------------------------------------------


def test_install_keeps_the_org_instance_and_tokens_and_creates_the_schema(installed, db):
    tenant_id, key, org = installed
    assert key.startswith("wk_")
    with db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
    assert (tenant.crm, tenant.external_id, tenant.status) == ("salesforce", org.org_id, "active")
    assert tenant.settings["instance_url"] == INSTANCE
    assert tenant.settings["integration_user_id"] == org.admin_id
    assert tenant.refresh_token_encrypted and b"5Aep" not in tenant.refresh_token_encrypted.encode()
    assert "pql_activation_rate__c" in org.custom["Account"]
    assert {"Contact.pql_user_key__c", "Lead.pql_user_key__c"} <= org.visible(org.admin_id)
    assert org.custom["Account"]["pql_activation_rate__c"]["type"] == "Percent"


def test_a_wrong_pkce_verifier_or_state_is_refused(app, client, org_server):
    started = client.get("/salesforce/install")
    query = parse_qs(urlsplit(started.headers["Location"]).query)
    org = org_server.org()
    # A code bound to another challenge: Salesforce refuses the exchange.
    code = org_server.grant_code(org, "x" * 43, query["redirect_uri"][0])
    page = client.get(f"/salesforce/oauth-callback?code={code}&state={query['state'][0]}")
    assert page.status_code == 502 and "invalid code verifier" in page.get_data(as_text=True)
    forged = client.get("/salesforce/oauth-callback?code=abc&state=forged")
    assert forged.status_code == 400 and "possible forgery" in forged.get_data(as_text=True)
    assert client.get("/salesforce/install?environment=staging").status_code == 400


def test_a_sandbox_org_installs_through_the_sandbox_login_host(app, client, org_server, db):
    started = client.get("/salesforce/install?environment=sandbox")
    assert started.headers["Location"].startswith(LOGIN + "/services/oauth2/authorize?")
    page, _ = install(client, org_server, environment="sandbox")
    assert page.status_code == 200
    with db.system_session() as session:
        tenant = session.scalars(select(Tenant)).one()
    assert tenant.settings["environment"] == "sandbox"


# --- push ------------------------------------------------------------------------------------


def test_push_creates_the_account_and_contacts_then_costs_nothing_unchanged(
    app, client, db, installed, org_server
):
    tenant_id, key, org = installed
    report = scored_and_synced(app, client, db, tenant_id, key)
    assert report.subjects["account"].created == 1 and report.subjects["user"].created == 2
    [account] = org.records["Account"].values()
    assert account["Name"] == "Acme" and account["pql_account_key__c"] == "acme"
    assert account["pql_activation_rate__c"] is not None
    contacts = org.records["Contact"].values()
    assert {c["Email"] for c in contacts} == {"ada@acme.example", "bob@acme.example"}
    assert {c["AccountId"] for c in contacts} == {account["Id"]}
    calls = org_server.api_calls()
    recompute(db, tenant_id, NOW)  # nothing new: the same values
    again = sync(app, tenant_id)
    assert org_server.api_calls() == calls and again.calls.get("requests", 0) == 0


def test_existing_salesforce_records_are_matched_not_duplicated(
    app, client, db, installed, org_server
):
    tenant_id, key, org = installed
    existing = org.insert("Account", {"Name": "ACME Inc", "Website": "https://www.acme.example"})
    lead = org.insert(
        "Lead", {"LastName": "Lovelace", "Company": "ACME", "Email": "ada@acme.example"}
    )
    contact = org.convert_lead(lead, existing)
    report = scored_and_synced(app, client, db, tenant_id, key)
    assert report.subjects["account"].matched_by_natural_key == 1
    assert len(org.records["Account"]) == 1
    assert org.records["Account"][existing]["pql_account_key__c"] == "acme"
    # The converted lead's contact got Ada's traits; no new contact for her.
    assert org.records["Contact"][contact]["pql_user_key__c"] == "ada"
    assert len(org.records["Contact"]) == 2


def changed_accounts(client, db, tenant_id, key, count, offset=0):
    send(
        client,
        key,
        [
            {
                "type": "group",
                "userId": f"u{i}",
                "groupId": f"acct-{i}",
                "traits": {"name": f"Account {i}", "plan": "trial"},
            }
            for i in range(offset, offset + count)
        ]
        + [
            {
                "type": "track",
                "userId": f"u{i}",
                "event": "Report Created",
                "context": {"groupId": f"acct-{i}"},
            }
            for i in range(offset, offset + count)
        ],
    )
    recompute(db, tenant_id, NOW)


def test_n_changed_accounts_cost_ceil_n_over_200_collection_calls(
    app, client, db, installed, org_server
):
    tenant_id, key, _org = installed
    changed_accounts(client, db, tenant_id, key, 250)
    sync(app, tenant_id)  # created
    with db.tenant_transaction(tenant_id) as session:
        for score in session.scalars(select(AccountScore)):
            score.engagement_score = 99.0
            score.crm_pending = True
    before = list(org_server.requests)
    report = sync(app, tenant_id)
    sent = org_server.requests[len(before) :]
    assert report.subjects["account"].updated == 250
    writes = [r for r in sent if r == "PATCH composite/sobjects"]
    assert len(writes) == math.ceil(250 / 200) and len(sent) == len(writes)


def test_above_the_threshold_one_bulk_job_carries_the_push(app, client, db, installed, org_server):
    tenant_id, key, _org = installed
    changed_accounts(client, db, tenant_id, key, 320)  # threshold 300 in this app
    before = len(org_server.requests)
    report = sync(app, tenant_id)
    assert report.subjects["account"].created == 320
    jobs = [r for r in org_server.requests[before:] if r == "POST jobs/ingest"]
    assert len(jobs) == 1 and report.calls["bulk_jobs"] == 1
    with db.tenant_session(tenant_id) as session:
        ids = session.scalars(
            select(CrmRecord.crm_id).where(CrmRecord.object_type == "account")
        ).all()
    assert len(ids) == 320 and all(i.startswith("001") for i in ids)


def test_a_record_deleted_in_salesforce_is_created_again(app, client, db, installed, org_server):
    tenant_id, key, org = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [account_id] = org.records["Account"]
    org.delete("Account", account_id)
    with db.tenant_transaction(tenant_id) as session:
        session.scalars(select(AccountScore)).one().engagement_score = 11.0
        session.scalars(select(AccountScore)).one().crm_pending = True
    report = sync(app, tenant_id)
    assert report.subjects["account"].failed == 1  # answered ENTITY_IS_DELETED
    sync(app, tenant_id)  # still pending: matched by key (none), created
    [again] = org.records["Account"].values()
    assert again["pql_account_key__c"] == "acme"


# --- the org's limits, sessions and permissions ---------------------------------------------


def crm_status(client, db, tenant_id):
    admin = issue_write_key(db, tenant_id, label="admin", scope="admin").secret
    return client.get("/api/v1/crm", headers={"Authorization": f"Bearer {admin}"}).get_json()


def test_the_api_reserve_pauses_syncing_with_a_visible_reason(
    app, client, db, installed, org_server
):
    tenant_id, key, org = installed
    org.daily_limit, org.api_used = 1000, 797  # the default reserve keeps 20%: stop at 800
    acme(client, key)
    recompute(db, tenant_id, NOW)
    with pytest.raises(CrmPaused):
        sync(app, tenant_id)
    assert org.api_used <= 800
    status = crm_status(client, db, tenant_id)
    assert "20% of the allowance is kept" in status["sync_paused"]["reason"]
    assert status["api_usage"]["ceiling"] == 800
    # While paused: no calls at all, the report says why.
    calls = org_server.api_calls()
    report = sync(app, tenant_id)
    assert report.paused and org_server.api_calls() == calls
    # An hour later (the pause setting), usage has rolled off: syncing resumes.
    org.api_used = 100
    app.extensions["pql"].clock = lambda: NOW + dt.timedelta(minutes=61)
    resumed = sync(app, tenant_id)
    assert resumed.paused is None
    assert len(org.records["Account"]) == 1 and len(org.records["Contact"]) == 2
    assert crm_status(client, db, tenant_id)["sync_paused"] is None


def test_request_limit_exceeded_pauses_and_the_cli_says_so(app, client, db, installed, cli):
    tenant_id, key, org = installed
    org.api_used = org.daily_limit
    acme(client, key)
    recompute(db, tenant_id, NOW)
    result = cli.invoke(args=["sync", "--tenant", str(tenant_id)])
    assert result.exit_code == 1 and "daily API request limit" in result.output
    again = cli.invoke(args=["sync", "--tenant", str(tenant_id)])
    assert again.exit_code == 0 and "syncing is paused until" in again.output


def test_an_expired_session_is_refreshed_through_the_token_endpoint(
    app, client, db, installed, org_server
):
    tenant_id, key, _org = installed
    with db.system_session() as session:
        before = session.get(Tenant, tenant_id).access_token_encrypted
    org_server.expire_sessions()
    used = set(org_server.refresh)
    report = scored_and_synced(app, client, db, tenant_id, key)
    assert report.calls["token_refreshes"] == 1
    with db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
    assert tenant.access_token_encrypted != before and tenant.status == "active"
    # The refresh token was rotated: the one kept is the new one, the old one is dead.
    kept = app.extensions["pql"].token_cipher.decrypt(tenant.refresh_token_encrypted)
    assert kept in org_server.refresh and kept not in used


def test_a_revoked_refresh_token_asks_for_reauthorisation(app, client, db, installed, org_server):
    tenant_id, key, _org = installed
    org_server.refresh.clear()
    org_server.expire_sessions()
    acme(client, key)
    recompute(db, tenant_id, NOW)
    with pytest.raises(lifecycle.AuthorizationLost):
        sync(app, tenant_id)
    assert crm_status(client, db, tenant_id)["needs_reauthorisation"] is True


def test_fields_hidden_from_the_integration_user_are_granted_again(
    app, client, db, installed, org_server
):
    tenant_id, key, org = installed
    org.permission_sets["PQL_Engine"] = set()  # an admin emptied the permission set
    acme(client, key)
    recompute(db, tenant_id, NOW)
    with pytest.raises(lifecycle.CrmError, match="permission set PQL_Engine"):
        sync(app, tenant_id)
    assert "permission set" in crm_status(client, db, tenant_id)["last_sync_error"]["error"]
    report = sync(app, tenant_id)  # the schema check grants the fields again
    assert report.subjects["account"].created == 1
    assert "Account.pql_is_pql__c" in org.visible(org.admin_id)


# --- pull and tasks --------------------------------------------------------------------------


def test_pull_brings_owners_types_lead_status_and_opportunity_stages(
    app, client, db, installed, org_server
):
    tenant_id, key, org = installed
    scored_and_synced(app, client, db, tenant_id, key)
    rep = org.insert(
        "User",
        {"Name": "Rita Rep", "Email": "rita@acme.test", "IsActive": True, "UserType": "Standard"},
    )
    [account_id] = org.records["Account"]
    org.change("Account", account_id, OwnerId=rep, Type="Customer - Direct")
    org.insert(
        "Opportunity",
        {"Name": "Expansion", "AccountId": account_id, "StageName": "Proposal/Price Quote"},
    )
    counts = lifecycle.pull_tenant(app.extensions["pql"], tenant_id)
    assert counts["owners"] == 2
    with db.tenant_session(tenant_id) as session:
        fields = session.scalars(
            select(CrmRecord.crm_fields).where(CrmRecord.object_type == "account")
        ).one()
    assert fields["owner_id"] == rep and fields["lifecycle_stage"] == "Customer - Direct"
    assert fields["opportunity_stage"] == "Proposal/Price Quote"


def test_fit_rules_on_crm_fields_pull_the_accounts_industry_and_size(
    app, client, db, installed, org_server
):
    from app.scores.definitions_store import current_definitions, save_definitions, to_document

    tenant_id, key, org = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [account_id] = org.records["Account"]
    org.change("Account", account_id, Industry="Technology", NumberOfEmployees=2500)
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["fit"]["rules"] = [
        {
            "label": "Technology",
            "points": 70,
            "conditions": [{"field": "crm.industry", "op": "equals", "value": "technology"}],
        }
    ]
    save_definitions(db, tenant_id, document, "test")
    lifecycle.pull_tenant(app.extensions["pql"], tenant_id)
    with db.tenant_session(tenant_id) as session:
        fields = session.scalars(
            select(CrmRecord.crm_fields).where(CrmRecord.object_type == "account")
        ).one()
    assert fields["industry"] == "Technology" and "employees" not in fields  # only what is used
    recompute(db, tenant_id, NOW + dt.timedelta(minutes=1))
    assert sync(app, tenant_id).subjects["account"].updated == 1
    account = org.records["Account"][account_id]
    assert account["pql_fit_band__c"] == "B" and account["pql_fit_score__c"] == 70
    assert account["pql_fit_reason__c"] == "Fit B (70): Technology (+70)."


def test_a_paying_accounts_drop_creates_one_task_with_account_contact_and_owner(
    app, client, db, installed, org_server
):
    tenant_id, key, org = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [account_id] = org.records["Account"]
    rep = org.insert(
        "User",
        {"Name": "Rita Rep", "Email": "rita@acme.test", "IsActive": True, "UserType": "Standard"},
    )
    org.change("Account", account_id, OwnerId=rep)
    lifecycle.pull_tenant(app.extensions["pql"], tenant_id)
    dropping(db, tenant_id)
    assert sync(app, tenant_id).tasks_created == 1
    [task] = org.records["Task"].values()
    assert task["WhatId"] == account_id and task["OwnerId"] == rep
    assert task["WhoId"] in org.records["Contact"]
    assert "fell from 70 to 40" in task["Description"]
    assert sync(app, tenant_id).tasks_created == 0  # the same drop: no second task
    app.extensions["pql"].clock = lambda: NOW + dt.timedelta(days=8)
    assert sync(app, tenant_id).tasks_created == 0
    with db.tenant_session(tenant_id) as session:
        assert len(session.scalars(select(CsTask)).all()) == 1


# --- uninstall -------------------------------------------------------------------------------


def test_uninstall_revokes_the_tokens_at_salesforce(app, client, db, installed, org_server):
    tenant_id, _key, _org = installed
    assert len(org_server.refresh) == 1
    admin = issue_write_key(db, tenant_id, label="admin", scope="admin").secret
    answer = client.post("/api/v1/crm/uninstall", headers={"Authorization": f"Bearer {admin}"})
    assert answer.status_code == 200
    assert org_server.refresh == {} and org_server.access == {}
    with db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
    assert tenant.status == "uninstalled" and tenant.refresh_token_encrypted is None


def test_uninstall_can_delete_the_apps_fields_from_salesforce(
    app, client, db, installed, org_server
):
    tenant_id, key, org = installed
    scored_and_synced(app, client, db, tenant_id, key)
    ours = {
        f"{sobject}.{name}"
        for sobject in ("Account", "Contact", "Lead")
        for name in org.custom[sobject]
    }
    [account] = org.records["Account"].values()
    assert "pql_engagement_score__c" in account and "Account.pql_engagement_score__c" in ours
    admin = issue_write_key(db, tenant_id, label="admin", scope="admin").secret
    answer = client.post(
        "/api/v1/crm/uninstall",
        headers={"Authorization": f"Bearer {admin}"},
        json={"remove_crm_properties": True},
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert set(answer.get_json()["crm_properties_removed"]) == ours
    assert not any(org.custom[sobject] for sobject in ("Account", "Contact", "Lead"))
    assert not [k for k in account if k.endswith("__c")] and account["Name"]
    assert org_server.refresh == {}


def test_reinstalling_the_same_org_reactivates_its_tenant(app, client, db, installed, org_server):
    tenant_id, key, org = installed
    scored_and_synced(app, client, db, tenant_id, key)
    lifecycle.uninstall(app.extensions["pql"], tenant_id)
    page, _ = install(client, org_server, org=org)
    assert page.status_code == 200
    with db.system_session() as session:
        tenants = session.scalars(select(Tenant)).all()
    assert [(t.id, t.status) for t in tenants] == [(tenant_id, "active")]
    # Everything is pushed once more (Salesforce may have changed meanwhile), onto the
    # records it already has.
    report = sync(app, tenant_id)
    assert report.subjects["account"].updated == 1 and len(org.records["Account"]) == 1


def test_the_handoff_note_lands_on_the_salesforce_account(app, client, db, installed, org_server):
    tenant_id, key, org = installed
    scored_and_synced(app, client, db, tenant_id, key)  # a trial
    acme(client, key, plan="paid")
    recompute(db, tenant_id, NOW)
    assert sync(app, tenant_id).handoffs_written == 1
    [account_id] = org.records["Account"]
    [note] = org.records["ContentNote"].values()  # what Lightning's Notes list shows
    [link] = org.records["ContentDocumentLink"].values()
    assert (link["ContentDocumentId"], link["LinkedEntityId"]) == (note["Id"], account_id)
    assert note["Title"] == "Handoff to Customer Success"
    content = base64.b64decode(note["Content"]).decode()
    assert "Acme is now a paying customer" in content and "Left to onboard" in content
    assert org.records["Note"] == {}


def test_a_bulk_job_over_hidden_fields_fails_whole_and_the_next_sync_grants_them_again(
    app, client, db, installed, org_server
):
    tenant_id, key, org = installed
    changed_accounts(client, db, tenant_id, key, 320)  # above this app's bulk threshold
    assert sync(app, tenant_id).subjects["account"].created == 320
    org.permission_sets["PQL_Engine"] = set()  # an admin emptied the permission set
    with db.tenant_transaction(tenant_id) as session:
        for score in session.scalars(select(AccountScore)):
            score.engagement_score, score.crm_pending = 99.0, True
    with pytest.raises(lifecycle.CrmError, match="permission set PQL_Engine") as caught:
        sync(app, tenant_id)  # one bulk update job of 320 rows
    assert caught.value.category == "INVALID_FIELD"
    failed = [j for j in org_server.jobs.values() if j["state"] == "Failed"]
    assert len(failed) == 1 and "Field name not found" in failed[0]["errorMessage"]
    report = sync(app, tenant_id)  # the schema check grants the fields again
    assert report.subjects["account"].updated == 320


def test_a_user_without_metadata_and_permission_set_rights_is_told_and_nothing_is_kept(
    app, client, db, org_server
):
    org = org_server.org()
    rep = org.add_user("Rita")  # a rep: neither Modify Metadata nor Assign Permission Sets
    page, _ = install(client, org_server, org=org, user=rep)
    text = page.get_data(as_text=True)
    assert page.status_code == 403
    assert "Modify Metadata Through Metadata API Functions" in text
    assert "Assign Permission Sets" in text
    with db.system_session() as session:
        assert session.scalars(select(Tenant)).all() == []
    assert not [u for _, u in org_server.refresh.values() if u == rep]  # revoked at once


def test_a_user_with_the_two_permissions_but_not_modify_all_data_installs(
    app, client, db, org_server
):
    org = org_server.org()
    ops = org.add_user("Olga", modify_metadata=True, assign_permission_sets=True)
    page, _ = install(client, org_server, org=org, user=ops)
    assert page.status_code == 200, page.get_data(as_text=True)


@pytest.mark.parametrize(
    "answer",
    [
        (400, "invalid_grant", "token request is already being processed"),
        (400, "unknown_error", "retry your request"),
    ],
)
def test_a_transient_token_error_is_retried_not_a_reinstall(
    app, client, db, installed, org_server, answer
):
    tenant_id, key, _org = installed
    org_server.expire_sessions()
    org_server.token_failures.append(answer)
    acme(client, key)
    recompute(db, tenant_id, NOW)
    with pytest.raises(lifecycle.CrmError) as caught:
        sync(app, tenant_id)
    assert not isinstance(caught.value, lifecycle.AuthorizationLost)
    assert crm_status(client, db, tenant_id)["needs_reauthorisation"] is False
    assert sync(app, tenant_id).subjects["account"].created == 1  # the next round goes through


def test_an_org_that_blocks_the_global_login_host_installs_through_its_my_domain(
    app, client, db, org_server
):
    started = client.get("/salesforce/install?my_domain=acme.my.salesforce.com")
    assert started.headers["Location"].startswith(f"{MY_DOMAIN}/services/oauth2/authorize?")
    page, org = install(client, org_server, my_domain="acme.my.salesforce.com")
    assert page.status_code == 200, page.get_data(as_text=True)
    with db.system_session() as session:
        tenant = session.scalars(select(Tenant).where(Tenant.external_id == org.org_id)).one()
    assert tenant.settings["login_url"] == MY_DOMAIN  # refreshes go there too


@pytest.mark.parametrize(
    "host", ["evil.example.com", "acme.my.salesforce.com.evil.io", "http://acme.my.salesforce.com"]
)
def test_a_login_host_that_is_not_a_my_domain_is_refused(app, client, host):
    answer = client.get(f"/salesforce/install?my_domain={host}")
    assert answer.status_code == 400 and "My Domain" in answer.get_data(as_text=True)


def test_another_admin_signing_in_keeps_the_orgs_user_and_tokens(
    app, client, db, installed, org_server
):
    tenant_id, _key, org = installed
    with db.system_session() as session:
        before = session.get(Tenant, tenant_id)
        tokens = (before.access_token_encrypted, before.refresh_token_encrypted)
    ops = org.add_user("Olga", modify_metadata=True, assign_permission_sets=True)
    browser = app.test_client()
    page, _ = install(browser, org_server, org=org, user=ops)
    assert page.status_code == 302 and page.headers["Location"] == "/app/"  # signed in
    with db.system_session() as session:
        after = session.get(Tenant, tenant_id)
    # The sync still runs as the user who installed it, with its own tokens.
    assert after.settings["integration_user_id"] == org.admin_id
    assert (after.access_token_encrypted, after.refresh_token_encrypted) == tokens
    # Olga's own grant is not kept anywhere: revoked at once.
    assert not [u for _, u in org_server.refresh.values() if u == ops]
    assert [u for _, u in org_server.refresh.values() if u == org.admin_id]
    assert browser.get("/app/").status_code == 200


def test_a_rep_cannot_take_over_an_installed_org(app, client, db, installed, org_server):
    tenant_id, _key, org = installed
    rep = org.add_user("Rita")
    browser = app.test_client()  # the rep's own browser
    page, _ = install(browser, org_server, org=org, user=rep)
    assert page.status_code == 403
    with db.system_session() as session:
        assert session.get(Tenant, tenant_id).settings["integration_user_id"] == org.admin_id
    assert browser.get("/app/").status_code != 200
