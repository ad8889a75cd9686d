"""The HubSpot app end to end against the local sandbox: install, push, pull, webhooks, tasks."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import urlsplit

import pytest
import urllib3
from sqlalchemy import select

from app.models import Account, AccountScore, CrmRecord, CsTask, Tenant, UserScore, WriteKey
from app.scores.scoring_pass import recompute
from app.sync.access import SharedRateBudget, TenantTokens
from app.sync.lifecycle import pull_tenant, purge_uninstalled, sync_tenant, uninstall
from app.sync.pull import pull
from app.sync.push import push_changed_traits
from app.sync.schema import ensure_schema
from connectors.base import AuthorizationLost, CrmError, CrmUnavailable
from connectors.hubspot.provider import connector_for
from tests.helpers.apps import config_for, write_key_of
from tests.helpers.hubspot import (
    HUB,
    NOW,
    account_owner,
    acme,
    dropping,
    install,
    owner_change,
    portal,
    requests_made,
    webhook,
)
from tests.helpers.tracking import post


@pytest.fixture
def app(hubspot_app):
    return hubspot_app


# --- install ---------------------------------------------------------------------------------


def test_install_creates_the_tenant_keeps_tokens_encrypted_and_creates_properties(
    installed, db, sandbox
):
    tenant_id, key = installed
    assert key.startswith("wk_")
    with db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
        assert (tenant.crm, tenant.status) == ("hubspot", "active")
        stored = tenant.refresh_token_encrypted
    assert stored and stored not in sandbox.sandbox.refresh_tokens  # not in plain text
    companies = portal(sandbox).properties["companies"]
    assert companies["pql_account_key"]["hasUniqueValue"] is True
    assert companies["pql_activation_rate"]["type"] == "number"
    assert companies["pql_is_pql"]["type"] == "bool"
    assert companies["pql_is_pql"]["label"] == "Is a PQL"
    # Options read as words; their values stay the ids workflows compare.
    kinds = {o["value"]: o["label"] for o in companies["pql_pql_kind"]["options"]}
    assert kinds["hand_raiser"] == "Hand-raiser"
    sizes = {o["value"]: o["label"] for o in companies["pql_deal_size"]["options"]}
    assert sizes == {"small": "Small", "mid": "Mid-size", "large": "Large"}
    assert companies["pql_last_active_at"]["type"] == "datetime"
    assert "Golden Lead" in [o["value"] for o in companies["pql_lead_type"]["options"]]
    assert "pql_user_key" in portal(sandbox).properties["contacts"]


def test_reinstalling_reactivates_the_same_tenant(installed, app, client, db):
    tenant_id, _ = installed
    uninstall(app.extensions["pql"], tenant_id)
    page = install(client)
    assert page.status_code == 200
    with db.system_session() as session:
        tenants = session.scalars(select(Tenant)).all()
    assert [(t.id, t.status) for t in tenants] == [(tenant_id, "active")]


def test_a_callback_with_a_forged_state_is_refused(app, client):
    started = client.get("/hubspot/install")
    assert started.status_code == 302
    page = client.get("/hubspot/oauth-callback?code=abc&state=forged")
    assert page.status_code == 400 and "state does not match" in page.get_data(as_text=True)


def test_a_callback_from_another_browser_is_refused(app, client, sandbox):
    started = client.get(f"/hubspot/install?hub_id={HUB}")
    consent = urllib3.PoolManager().request("GET", started.headers["Location"], redirect=False)
    back = urlsplit(consent.headers["Location"])
    stranger = app.test_client()
    page = stranger.get(f"{back.path}?{back.query}")
    assert page.status_code == 400 and "another browser" in page.get_data(as_text=True)


def test_the_admin_denying_access_gets_a_clear_page(app, client):
    page = client.get("/hubspot/oauth-callback?error=access_denied&error_description=Denied")
    assert page.status_code == 400 and "Denied" in page.get_data(as_text=True)


# --- push ------------------------------------------------------------------------------------


def scored_and_synced(app, client, db, tenant_id, key):
    acme(client, key)
    recompute(db, tenant_id, NOW)
    return sync_tenant(app.extensions["pql"], tenant_id)


def test_push_creates_companies_and_contacts_with_their_traits(app, client, db, installed, sandbox):
    tenant_id, key = installed
    report = scored_and_synced(app, client, db, tenant_id, key)
    assert report.subjects["account"].created == 1
    assert report.subjects["user"].created == 2
    [company] = portal(sandbox).objects["companies"].values()
    props = company["properties"]
    assert props["pql_account_key"] == "acme" and props["domain"] == "acme.example"
    assert props["name"] == "Acme"
    assert float(props["pql_activation_rate"]) == 20.0
    assert props["pql_is_pql"] == "false" and props["pql_lead_type"]
    contacts = portal(sandbox).objects["contacts"]
    emails = {c["properties"]["email"] for c in contacts.values()}
    assert emails == {"ada@acme.example", "bob@acme.example"}
    for contact in contacts.values():
        assert ("contacts", contact["id"], "companies", company["id"]) in portal(
            sandbox
        ).associations


def test_unchanged_traits_cost_no_api_call(app, client, db, installed, sandbox):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    before = requests_made(sandbox)
    recompute(db, tenant_id, NOW + dt.timedelta(minutes=1))  # everyone scored again, same values
    # The pass wrote nothing (same values), so the push does not even read them.
    report = sync_tenant(app.extensions["pql"], tenant_id)
    assert requests_made(sandbox) == before
    assert report.subjects["account"].unchanged == 0 and report.subjects["user"].unchanged == 0
    # A score flagged without a change in what the CRM shows is read, costs no call, and
    # is settled.
    with db.tenant_transaction(tenant_id) as session:
        session.scalars(select(AccountScore)).one().crm_pending = True
    report = sync_tenant(app.extensions["pql"], tenant_id)
    assert report.subjects["account"].unchanged == 1 and requests_made(sandbox) == before
    again = sync_tenant(app.extensions["pql"], tenant_id)
    assert again.subjects["account"].unchanged == 0 and requests_made(sandbox) == before


def test_a_changed_trait_sends_only_that_property_in_one_call(app, client, db, installed, sandbox):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    with db.tenant_transaction(tenant_id) as session:
        score = session.scalars(select(AccountScore)).one()
        score.activation_rate, score.crm_pending = 80.0, True  # as a scoring pass writes it
    before = requests_made(sandbox)
    report = sync_tenant(app.extensions["pql"], tenant_id)
    assert requests_made(sandbox) - before == 1
    assert dict(report.subjects["account"].properties) == {"pql_activation_rate": 1}
    [company] = portal(sandbox).objects["companies"].values()
    assert company["properties"]["pql_activation_rate"] == "80"


def test_an_existing_company_is_matched_by_domain_not_duplicated(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    existing = sandbox.sandbox.create_object(
        HUB, "companies", {"name": "Acme Inc (by sales)", "domain": "acme.example"}
    )
    report = scored_and_synced(app, client, db, tenant_id, key)
    assert report.subjects["account"].matched_by_natural_key == 1
    assert list(portal(sandbox).objects["companies"]) == [existing["id"]]
    props = portal(sandbox).objects["companies"][existing["id"]]["properties"]
    assert props["name"] == "Acme Inc (by sales)"  # the CRM's own name is left alone
    assert props["pql_account_key"] == "acme"


def test_a_company_created_before_a_crash_is_found_by_key_not_created_again(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    # Created in HubSpot by an earlier sync that died before storing the id.
    earlier = sandbox.sandbox.create_object(
        HUB, "companies", {"pql_account_key": "acme", "domain": "other.example"}
    )
    report = scored_and_synced(app, client, db, tenant_id, key)
    assert report.subjects["account"].matched_by_key == 1
    assert list(portal(sandbox).objects["companies"]) == [earlier["id"]]


def test_a_record_deleted_in_hubspot_fails_alone_and_is_created_again_later(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    contacts = portal(sandbox).objects["contacts"]
    gone = next(c for c in contacts.values() if c["properties"]["email"] == "ada@acme.example")
    del contacts[gone["id"]]
    with db.tenant_transaction(tenant_id) as session:
        for score in session.scalars(select(UserScore)):
            score.engagement_score, score.crm_pending = 55.0, True
    report = sync_tenant(app.extensions["pql"], tenant_id)
    assert (report.subjects["user"].updated, report.subjects["user"].failed) == (1, 1)
    with db.tenant_session(tenant_id) as session:
        failed = session.scalars(select(CrmRecord).where(CrmRecord.last_error.is_not(None))).one()
        assert "OBJECT_NOT_FOUND" in failed.last_error and failed.crm_id is None
    again = sync_tenant(app.extensions["pql"], tenant_id)
    assert again.subjects["user"].created == 1
    assert len(contacts) == 2


def test_a_batch_interrupted_by_an_outage_resumes_without_duplicates(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    acme(client, key)
    recompute(db, tenant_id, NOW)
    # Companies land, then HubSpot goes away for longer than the retries last.
    sandbox.sandbox.faults.next_statuses = []
    services = app.extensions["pql"]
    connector = connector_for(services, tenant_id)
    connector.caller.sleep = lambda s: None
    ensure_schema(db, tenant_id, connector, "pql_")
    original = connector.create

    def create_then_fail(object_type, writes):
        if object_type == "contacts":
            sandbox.sandbox.faults.next_statuses = [502] * 20
        return original(object_type, writes)

    connector.create = create_then_fail
    with pytest.raises(CrmUnavailable):
        push_changed_traits(db, tenant_id, connector, "pql_", NOW)
    sandbox.sandbox.faults.next_statuses = []
    report = sync_tenant(services, tenant_id)
    assert report.subjects["account"].created == 0  # landed before the outage
    assert report.subjects["user"].created == 2
    assert len(portal(sandbox).objects["companies"]) == 1
    assert len(portal(sandbox).objects["contacts"]) == 2


def test_creating_missing_records_is_a_tenant_setting(app, client, db, installed, sandbox):
    tenant_id, key = installed
    with db.system_transaction() as session:
        tenant = session.get(Tenant, tenant_id)
        tenant.settings = {**tenant.settings, "create_missing": False}
    report = scored_and_synced(app, client, db, tenant_id, key)
    assert report.subjects["account"].skipped == 1
    assert portal(sandbox).objects["companies"] == {}


def test_a_dry_run_reports_the_plan_and_writes_nothing(app, client, db, installed, sandbox):
    tenant_id, key = installed
    acme(client, key)
    recompute(db, tenant_id, NOW)
    report = sync_tenant(app.extensions["pql"], tenant_id, dry_run=True)
    assert report.subjects["account"].would_create == 1
    assert report.subjects["user"].would_create == 2
    assert report.subjects["account"].properties["pql_activation_rate"] == 1
    assert portal(sandbox).objects["companies"] == {}
    assert sync_tenant(app.extensions["pql"], tenant_id).subjects["account"].created == 1


# --- rate budget and tokens -------------------------------------------------------------------


def test_the_rate_budget_is_shared_by_every_process(db):
    clock = [1000.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds

    first = SharedRateBudget(db, "hubspot:1", 5, window=10, clock=lambda: clock[0], sleep=sleep)
    second = SharedRateBudget(db, "hubspot:1", 5, window=10, clock=lambda: clock[0], sleep=sleep)
    granted = []
    for n in range(12):
        (first if n % 2 else second).acquire()
        granted.append(clock[0])
    for t in granted:
        assert sum(1 for u in granted if t - 10 < u <= t) <= 5
    assert granted[-1] - granted[0] >= 20  # 12 requests at 5 per 10 s
    other = SharedRateBudget(db, "hubspot:2", 5, window=10, clock=lambda: clock[0], sleep=sleep)
    before = len(slept)
    other.acquire()
    assert len(slept) == before  # another portal has its own budget


def test_a_pause_after_a_429_holds_every_process_back(db):
    clock = [50.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds

    budget = SharedRateBudget(db, "hubspot:9", 100, clock=lambda: clock[0], sleep=sleep)
    SharedRateBudget(db, "hubspot:9", 100, clock=lambda: clock[0]).pause(3.0)
    budget.acquire()
    assert sum(slept) >= 3.0


def test_an_expired_token_is_refreshed_once_for_all_workers(installed, app, db):
    tenant_id, _ = installed
    svc = app.extensions["pql"]
    calls = []

    def refresh(token):
        from connectors.hubspot.oauth import Tokens

        calls.append(token)
        return Tokens(f"fresh-{len(calls)}", token, 1800)

    later = [NOW + dt.timedelta(hours=1)]  # past the install token's 30 minutes
    workers = [
        TenantTokens(db, tenant_id, svc.token_cipher, refresh, lambda: later[0]) for _ in "ab"
    ]
    tokens = {w.access_token() for w in workers}
    assert tokens == {"fresh-1"} and len(calls) == 1


def test_a_revoked_refresh_token_marks_the_tenant_for_reinstall(installed, app, db, sandbox, cli):
    tenant_id, _ = installed
    sandbox.sandbox.revoke_refresh_tokens()
    sandbox.sandbox.expire_access_tokens()
    svc = app.extensions["pql"]
    svc.clock = lambda: NOW + dt.timedelta(hours=1)
    with pytest.raises(AuthorizationLost):
        pull_tenant(svc, tenant_id)
    with db.system_session() as session:
        assert session.get(Tenant, tenant_id).status == "needs_reauth"
    with pytest.raises(AuthorizationLost):
        connector_for(svc, tenant_id)  # no retrying forever
    listing = cli.invoke(args=["tenant", "list"])
    assert "needs_reauth" in listing.output


# --- uninstall --------------------------------------------------------------------------------


def test_uninstall_stops_syncs_forgets_tokens_and_later_deletes_the_data(installed, app, db):
    tenant_id, _ = installed
    uninstall(app.extensions["pql"], tenant_id)
    with db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant.status == "uninstalled" and tenant.refresh_token_encrypted is None
    with pytest.raises(AuthorizationLost):
        connector_for(app.extensions["pql"], tenant_id)
    assert purge_uninstalled(db, NOW + dt.timedelta(days=29), dt.timedelta(days=30)) == []
    assert purge_uninstalled(db, NOW + dt.timedelta(days=31), dt.timedelta(days=30)) == [tenant_id]
    with db.system_session() as session:
        assert session.get(Tenant, tenant_id) is None


# --- pull and webhooks ------------------------------------------------------------------------


def test_pull_reads_owners_and_each_records_owner_and_stage(app, client, db, installed, sandbox):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [company] = portal(sandbox).objects["companies"].values()
    company["properties"].update(
        hubspot_owner_id="101",
        lifecyclestage="opportunity",
        notes_last_contacted=str(int((NOW - dt.timedelta(days=2)).timestamp() * 1000)),
    )
    svc = app.extensions["pql"]
    counts = pull(db, tenant_id, connector_for(svc, tenant_id), NOW)
    assert counts["owners"] == 3
    with db.tenant_session(tenant_id) as session:
        record = session.scalars(select(CrmRecord).where(CrmRecord.object_type == "account")).one()
        fields = record.crm_fields
    assert (fields["owner_id"], fields["lifecycle_stage"]) == ("101", "opportunity")
    # Scoring reads it: the account's communication is active, segments see the stage.
    recompute(db, tenant_id, NOW)
    # Nothing changed since: the next pull reads only what changed (none).
    before = requests_made(sandbox)
    pull(db, tenant_id, connector_for(svc, tenant_id), NOW)
    assert requests_made(sandbox) - before == 3  # owners, one search per object type


def test_a_signed_webhook_applies_an_owner_change_once(app, client, db, installed, sandbox):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [company_id] = portal(sandbox).objects["companies"]
    answer = webhook(client, [owner_change(company_id, "102")])
    assert answer.status_code == 200 and answer.get_json()["applied"] == 1
    assert account_owner(db, tenant_id) == "102"
    again = webhook(client, [owner_change(company_id, "102")])
    assert again.get_json()["applied"] == 0  # the same delivery, retried
    # An older change delivered late does not win.
    webhook(client, [owner_change(company_id, "103", event_id=2, minutes_ago=30)])
    assert account_owner(db, tenant_id) == "102"


def test_a_webhook_with_a_bad_signature_is_refused_and_nothing_applied(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [company_id] = portal(sandbox).objects["companies"]
    answer = webhook(client, [owner_change(company_id, "102")], secret="wrong")
    assert answer.status_code == 401 and answer.get_json()["code"] == "invalid_signature"
    old = str(int((NOW - dt.timedelta(minutes=10)).timestamp() * 1000))
    stale = webhook(client, [owner_change(company_id, "102")], timestamp=old)
    assert stale.status_code == 401 and "window" in stale.get_json()["message"]
    assert account_owner(db, tenant_id) is None


def test_a_webhook_body_that_is_not_events_is_a_400(app, client, installed):
    answer = webhook(client, {"not": "a list"})
    assert answer.status_code == 400 and answer.get_json()["code"] == "invalid_json"


def test_the_sandbox_delivers_signed_webhooks_the_app_accepts(
    app, client, db, installed, sandbox, live_server
):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    app.extensions["pql"].clock = lambda: dt.datetime.now(dt.UTC)
    [company_id] = portal(sandbox).objects["companies"]
    # The signature covers the public URL; the live server stands behind it.
    sandbox.sandbox.webhook_target = f"{live_server}/hubspot/webhooks"
    svc = app.extensions["pql"]
    svc.settings = type(svc.settings)(**{**svc.settings.__dict__, "public_url": live_server})
    sandbox.sandbox.change_property(HUB, "companies", company_id, "lifecyclestage", "customer")
    with db.tenant_session(tenant_id) as session:
        record = session.scalars(select(CrmRecord).where(CrmRecord.object_type == "account")).one()
        assert record.crm_fields["lifecycle_stage"] == "customer"


# --- CS tasks ---------------------------------------------------------------------------------


def test_a_paying_accounts_drop_creates_one_task_for_the_owner(app, client, db, installed, sandbox):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [company_id] = portal(sandbox).objects["companies"]
    webhook(client, [owner_change(company_id, "101")])
    dropping(db, tenant_id)
    svc = app.extensions["pql"]
    assert sync_tenant(svc, tenant_id).tasks_created == 1
    [task] = portal(sandbox).objects["tasks"].values()
    props = task["properties"]
    assert props["hubspot_owner_id"] == "101"
    assert "fell from 70 to 40" in props["hs_task_body"]
    assert "Not done yet" in props["hs_task_body"]
    assert ("tasks", task["id"], "companies", company_id) in portal(sandbox).associations
    # The same drop, next sync and next week: no second task.
    assert sync_tenant(svc, tenant_id).tasks_created == 0
    svc.clock = lambda: NOW + dt.timedelta(days=8)
    assert sync_tenant(svc, tenant_id).tasks_created == 0
    with db.tenant_session(tenant_id) as session:
        assert len(session.scalars(select(CsTask)).all()) == 1


def test_a_new_drop_after_recovery_and_cooldown_gets_a_new_task(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    svc = app.extensions["pql"]
    pull_tenant(svc, tenant_id)
    dropping(db, tenant_id)
    assert sync_tenant(svc, tenant_id).tasks_created == 1
    with db.tenant_transaction(tenant_id) as session:
        session.scalars(select(AccountScore)).one().trend_segment = None
    svc.clock = lambda: NOW + dt.timedelta(days=2)
    sync_tenant(svc, tenant_id)  # recovered: the drop is over
    dropping(db, tenant_id)
    assert sync_tenant(svc, tenant_id).tasks_created == 0  # within the 7-day cool-down
    svc.clock = lambda: NOW + dt.timedelta(days=9)
    assert sync_tenant(svc, tenant_id).tasks_created == 1


def test_a_drop_made_by_a_rule_change_opens_no_task(app, client, db, installed, sandbox):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    pull_tenant(app.extensions["pql"], tenant_id)
    dropping(db, tenant_id)
    with db.tenant_transaction(tenant_id) as session:
        session.scalars(select(AccountScore)).one().drop_excused = True
    assert sync_tenant(app.extensions["pql"], tenant_id).tasks_created == 0
    assert not portal(sandbox).objects["tasks"]


def test_a_drop_task_waits_until_the_owner_is_known(app, client, db, installed, sandbox):
    """A company matched in the CRM may have an owner the app has not read yet: no task goes
    to the default owner before the first pull (or an owner webhook) says who it is."""
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [company_id] = portal(sandbox).objects["companies"]
    sandbox.sandbox.portals[HUB].objects["companies"][company_id]["properties"][
        "hubspot_owner_id"
    ] = "101"
    dropping(db, tenant_id)
    svc = app.extensions["pql"]
    assert sync_tenant(svc, tenant_id).tasks_created == 0
    pull_tenant(svc, tenant_id)
    assert sync_tenant(svc, tenant_id).tasks_created == 1
    [task] = portal(sandbox).objects["tasks"].values()
    assert task["properties"]["hubspot_owner_id"] == "101"


def test_a_trial_accounts_drop_is_a_signal_not_a_task(app, client, db, installed, sandbox):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    dropping(db, tenant_id, plan="trial")
    assert sync_tenant(app.extensions["pql"], tenant_id).tasks_created == 0


# --- CLI and API ------------------------------------------------------------------------------


def test_the_cli_shows_a_dry_run_plan_then_syncs(app, client, db, installed, sandbox, cli):
    tenant_id, key = installed
    acme(client, key)
    recompute(db, tenant_id, NOW)
    plan = cli.invoke(args=["sync", "--tenant", str(tenant_id), "--dry-run"])
    assert plan.exit_code == 0, plan.output
    assert "accounts: 0 unchanged, 0 to update, 1 to create" in plan.output
    assert "pql_activation_rate: 1 would change" in plan.output
    assert portal(sandbox).objects["companies"] == {}
    done = cli.invoke(args=["sync", "--tenant", str(tenant_id)])
    assert done.exit_code == 0 and "1 created" in done.output
    assert len(portal(sandbox).objects["companies"]) == 1


def test_the_cli_says_when_a_tenant_must_reinstall(app, db, installed, sandbox, cli):
    tenant_id, _ = installed
    uninstall(app.extensions["pql"], tenant_id)
    result = cli.invoke(args=["sync", "--tenant", str(tenant_id)])
    assert result.exit_code == 1 and "reinstall" in result.output


def test_tenant_configure_sets_sync_settings_and_refuses_nothing(app, db, installed, cli):
    tenant_id, _ = installed
    result = cli.invoke(
        args=[
            "tenant",
            "configure",
            str(tenant_id),
            "--no-create-missing",
            "--default-cs-owner",
            "101",
        ]
    )
    assert result.exit_code == 0
    assert json.loads(result.output) == {"create_missing": False, "default_cs_owner_id": "101"}
    assert cli.invoke(args=["tenant", "configure", str(tenant_id)]).exit_code == 2


def test_the_api_shows_crm_status_and_runs_a_sync(app, client, db, installed, sandbox):
    from app.jobs import leases
    from app.tenants import issue_write_key

    def app_clock(app):
        return app.extensions["pql"].clock()

    tenant_id, key = installed
    acme(client, key)
    recompute(db, tenant_id, NOW)
    admin = issue_write_key(db, tenant_id, label="admin", scope="admin").secret
    headers = {"Authorization": f"Bearer {admin}"}
    # A worker is scoring or pushing the tenant: the API does not sync over it.
    worker = dt.timedelta(minutes=1)
    assert leases.acquire(db, tenant_id, "score", "worker-1/push", worker, app_clock(app))
    busy = client.post("/api/v1/crm/sync", json={"dry_run": False}, headers=headers)
    assert busy.status_code == 409 and busy.get_json()["code"] == "sync_in_progress"
    assert not sandbox.sandbox.portals[HUB].objects["companies"]
    leases.release(db, tenant_id, "score", "worker-1/push", app_clock(app))
    # Nor over another API request of the same tenant still syncing.
    assert leases.acquire(db, tenant_id, "score", f"api/{tenant_id}", worker, app_clock(app))
    again = client.post("/api/v1/crm/sync", json={"dry_run": False}, headers=headers)
    assert again.status_code == 409 and again.get_json()["code"] == "sync_in_progress"
    leases.release(db, tenant_id, "score", f"api/{tenant_id}", app_clock(app))
    ran = client.post("/api/v1/crm/sync", json={"dry_run": False}, headers=headers)
    assert ran.status_code == 200 and ran.get_json()["account"]["created"] == 1
    # Released after the sync: the worker gets it again.
    assert leases.acquire(db, tenant_id, "score", "worker-1/push", worker, app_clock(app))
    status = client.get("/api/v1/crm", headers=headers).get_json()
    assert status["status"] == "active" and status["records"]["account"]["linked"] == 1
    bad = client.post("/api/v1/crm/sync", json={"dry_run": "yes"}, headers=headers)
    assert bad.status_code == 400


def test_a_deletion_webhook_unlinks_the_record_so_it_is_matched_again(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [company_id] = portal(sandbox).objects["companies"]
    deleted = {**owner_change(company_id, ""), "subscriptionType": "company.deletion"}
    deleted.pop("propertyName"), deleted.pop("propertyValue")
    assert webhook(client, [deleted]).get_json()["applied"] == 1
    with db.tenant_session(tenant_id) as session:
        record = session.scalars(select(CrmRecord).where(CrmRecord.object_type == "account")).one()
        assert record.crm_id is None and record.pushed == {}


def test_an_admin_can_uninstall_through_the_api(app, client, db, installed):
    from app.tenants import issue_write_key

    tenant_id, key = installed
    admin = issue_write_key(db, tenant_id, label="admin", scope="admin").secret
    headers = {"Authorization": f"Bearer {admin}"}
    answer = client.post("/api/v1/crm/uninstall", headers=headers)
    assert answer.status_code == 200 and answer.get_json()["status"] == "uninstalled"
    assert client.get("/api/v1/crm", headers=headers).status_code == 401  # keys revoked
    assert post(client, "batch", {"batch": []}, key).status_code == 401


def test_uninstall_keeps_the_properties_unless_the_admin_asks_to_remove_them(
    app, client, db, installed, sandbox
):
    from app.tenants import issue_write_key

    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    hub = portal(sandbox)
    [company] = hub.objects["companies"].values()
    ours = [n for kind in ("companies", "contacts") for n in hub.properties[kind]]
    assert "pql_engagement_score" in ours and company["properties"]["pql_engagement_score"]
    admin = issue_write_key(db, tenant_id, label="admin", scope="admin").secret
    headers = {"Authorization": f"Bearer {admin}"}
    refused = client.post(
        "/api/v1/crm/uninstall", headers=headers, json={"remove_crm_properties": "yes"}
    )
    assert refused.status_code == 400 and "remove_crm_properties" in refused.get_json()["message"]
    answer = client.post(
        "/api/v1/crm/uninstall", headers=headers, json={"remove_crm_properties": True}
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert sorted(answer.get_json()["crm_properties_removed"]) == sorted(ours)
    for kind in ("companies", "contacts"):
        assert not hub.properties[kind] and not hub.groups[kind], kind
        for record in hub.objects[kind].values():
            assert not [n for n in record["properties"] if n.startswith("pql_")]
    # The app's own records stay (only its properties went), and the app is uninstalled.
    assert company["properties"]["name"]
    with db.system_session() as session:
        assert session.get(Tenant, tenant_id).status == "uninstalled"


def test_removing_the_properties_fails_whole_when_hubspot_refuses(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    sandbox.sandbox.faults.portal_statuses[HUB] = [403]
    with pytest.raises(CrmError):
        uninstall(app.extensions["pql"], tenant_id, remove_from_crm=True)
    with db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant.status == "active" and tenant.refresh_token_encrypted


def test_pulled_owner_and_stage_feed_custom_segments_and_lead_types(
    app, client, db, installed, sandbox
):
    from app.scores.definitions_store import current_definitions, save_definitions, to_document

    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["segments"].append(
        {
            "name": "Sam's opportunities",
            "conditions": [
                {"field": "crm.owner_id", "op": "equals", "value": "101"},
                {"field": "crm.lifecycle_stage", "op": "equals", "value": "opportunity"},
            ],
        }
    )
    save_definitions(db, tenant_id, document, "test")
    [company] = portal(sandbox).objects["companies"].values()
    company["properties"].update(
        hubspot_owner_id="101",
        lifecyclestage="opportunity",
        notes_last_contacted=str(int((NOW - dt.timedelta(days=2)).timestamp() * 1000)),
    )
    pull(db, tenant_id, connector_for(app.extensions["pql"], tenant_id), NOW)
    recompute(db, tenant_id, NOW)
    with db.tenant_session(tenant_id) as session:
        score = session.scalars(select(AccountScore)).one()
    assert "Sam's opportunities" in score.segments["names"]
    # Contacted two days ago: communication is active, which the lead type reads.
    from scoring.engine import LEAD_TYPES

    assert LEAD_TYPES[score.lead_type][2] == "active"


def test_without_hubspot_credentials_installs_and_webhooks_are_refused(migrated_url):
    from app import create_app

    settings = config_for(migrated_url, HUBSPOT_CLIENT_ID="", HUBSPOT_CLIENT_SECRET="")
    client = create_app(settings).test_client()
    assert client.get("/hubspot/install").status_code == 404
    assert "Sign in with HubSpot" not in client.get("/app/login").get_data(as_text=True)
    # An empty client secret would let anyone sign: nothing is verified, nothing applied.
    refused = webhook(client, [owner_change("1", "7")], secret="")
    assert refused.status_code == 401


def test_the_api_shows_what_was_pulled_back_and_segments_spread_by_crm_fields(
    app, client, db, installed, sandbox
):
    tenant_id, _, _, _ = _owned_and_pulled(app, client, db, installed, sandbox)
    from app.tenants import issue_write_key

    admin = issue_write_key(db, tenant_id, scope="admin").secret
    headers = {"Authorization": f"Bearer {admin}"}
    crm = client.get("/api/v1/accounts/acme", headers=headers).get_json()["crm"]
    assert (crm["owner_id"], crm["owner"], crm["lifecycle_stage"]) == (
        "101",
        "Sam Owner",
        "opportunity",
    )
    segment = client.get("/api/v1/accounts/acme", headers=headers).get_json()["engagement_segment"]
    spread = client.get(
        f"/api/v1/segments/{segment}?field=crm.lifecycle_stage", headers=headers
    ).get_json()
    assert spread["distribution"] == [{"value": "opportunity", "count": 1, "share": 100.0}]


def test_the_install_page_shows_the_write_key_once_issued(app, client, db):
    page = install(client).get_data(as_text=True)
    with db.system_session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.external_id == str(HUB)))
    assert f"<pre>{write_key_of(app, tenant_id)}</pre>" in page


def merge_event(primary: str, merged: list[str], new: str, event_id: int = 50) -> dict:
    return {
        "eventId": event_id,
        "subscriptionId": 9,
        "portalId": HUB,
        "appId": 1,
        "occurredAt": int(NOW.timestamp() * 1000),
        "subscriptionType": "company.merge",
        "attemptNumber": 0,
        "objectId": int(primary),
        "primaryObjectId": int(primary),
        "mergedObjectIds": [int(m) for m in merged],
        "newObjectId": int(new),
        "numberOfPropertiesMoved": 3,
        "changeSource": "CRM_UI",
    }


def account_crm_id(db, tenant_id):
    with db.tenant_session(tenant_id) as session:
        return session.scalars(
            select(CrmRecord.crm_id).where(CrmRecord.object_type == "account")
        ).one()


def test_a_merge_moves_our_stored_id_to_the_surviving_company(app, client, db, installed, sandbox):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [company_id] = portal(sandbox).objects["companies"]
    answer = webhook(client, [merge_event("424242", [company_id], "515151")])
    assert answer.status_code == 200 and answer.get_json()["applied"] == 1
    assert account_crm_id(db, tenant_id) == "515151"
    # The merged-away id is never written to again; what the survivor holds is pushed afresh.
    with db.tenant_session(tenant_id) as session:
        record = session.scalars(select(CrmRecord).where(CrmRecord.object_type == "account")).one()
        assert record.pushed == {}


def test_notifications_sharing_an_event_id_are_each_applied_once(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [company_id] = portal(sandbox).objects["companies"]
    first = owner_change(company_id, "101", event_id=7, minutes_ago=3)
    second = owner_change(company_id, "102", event_id=7, minutes_ago=1)  # same id, later
    assert webhook(client, [first, second]).get_json()["applied"] == 2
    assert account_owner(db, tenant_id) == "102"
    assert webhook(client, [first, second]).get_json()["applied"] == 0  # a retried delivery


def test_searches_are_charged_to_the_portals_shared_search_budget_not_the_10s_one(
    app, client, db, installed, sandbox
):
    from app.models import RateWindow

    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    svc = app.extensions["pql"]
    connector = connector_for(svc, tenant_id)
    with db.system_session() as session:
        before = {w.key: len(w.grants) for w in session.scalars(select(RateWindow))}
    changed = list(connector.changed_since("companies", NOW - dt.timedelta(days=1), ["owner_id"]))
    assert len(changed) == 1
    with db.system_session() as session:
        after = {w.key: len(w.grants) for w in session.scalars(select(RateWindow))}
    assert after[f"hubspot-search:{HUB}"] == before.get(f"hubspot-search:{HUB}", 0) + 1
    assert after[f"hubspot:{HUB}"] == before[f"hubspot:{HUB}"]  # searches are not in it
    assert connector.search_budget.limit == svc.settings.hubspot_searches_per_second


def test_names_from_product_events_are_escaped_in_the_task_body(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    with db.tenant_transaction(tenant_id) as session:
        session.scalars(select(Account)).one().name = '<img src=x onerror="alert(1)">'
    pull_tenant(app.extensions["pql"], tenant_id)
    dropping(db, tenant_id)
    assert sync_tenant(app.extensions["pql"], tenant_id).tasks_created == 1
    [task] = portal(sandbox).objects["tasks"].values()
    body = task["properties"]["hs_task_body"]
    assert "<img" not in body and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in body
    assert body.startswith("<p>") and "fell from" in body


def _consent(client, user_id: int):
    """A user of the portal (not necessarily the one who installed) approves the consent."""
    started = client.get("/hubspot/install")
    chosen = f"{started.headers['Location']}&hub_id={HUB}&user_id={user_id}"
    consent = urllib3.PoolManager().request("GET", chosen, redirect=False)
    back = urlsplit(consent.headers["Location"])
    return client.get(f"{back.path}?{back.query}")


def _tokens(db, tenant_id):
    with db.system_session() as session:
        tenant = session.get(Tenant, tenant_id)
        return tenant.access_token_encrypted, tenant.refresh_token_encrypted


def test_a_user_who_is_not_a_super_admin_is_refused_and_changes_nothing(
    installed, app, client, db, sandbox
):
    tenant_id, _ = installed
    before = _tokens(db, tenant_id)
    sandbox.sandbox.add_user(HUB, 77, super_admin=False)
    browser = app.test_client()  # the rep's own browser
    page = _consent(browser, 77)
    assert page.status_code == 403
    assert "Only a Super Admin of HubSpot account" in page.get_data(as_text=True)
    assert _tokens(db, tenant_id) == before
    assert len(sandbox.sandbox.refresh_tokens) == 1  # the rep's grant was revoked
    assert browser.get("/app/").status_code != 200
    # Nor can such a user install the app into a portal of their own.
    with db.system_session() as session:
        assert len(session.scalars(select(Tenant)).all()) == 1


def test_another_super_admin_signs_in_without_replacing_the_tenants_tokens(
    installed, app, client, db, sandbox
):
    tenant_id, _ = installed
    before = _tokens(db, tenant_id)
    sandbox.sandbox.add_user(HUB, 78, super_admin=True)
    browser = app.test_client()
    page = _consent(browser, 78)
    assert page.status_code == 302 and page.headers["Location"] == "/app/"
    assert _tokens(db, tenant_id) == before
    assert len(sandbox.sandbox.refresh_tokens) == 1  # only the tenant's own grant is alive
    assert browser.get("/app/").status_code == 200
    with db.system_session() as session:
        assert session.scalar(select(Tenant.status).where(Tenant.id == tenant_id)) == "active"


def _owned_and_pulled(app, client, db, installed, sandbox):
    """Synced; then Sam (owner 101) takes the company as an opportunity, and it is pulled."""
    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [company] = portal(sandbox).objects["companies"].values()
    company["properties"].update(hubspot_owner_id="101", lifecyclestage="opportunity")
    svc = app.extensions["pql"]
    pull(db, tenant_id, connector_for(svc, tenant_id), NOW)
    return tenant_id, key, company, svc


def test_a_pull_that_brings_nothing_new_marks_nothing_changed(app, client, db, installed, sandbox):
    tenant_id, _, company, svc = _owned_and_pulled(app, client, db, installed, sandbox)

    def changed_at():
        with db.tenant_session(tenant_id) as session:
            return session.scalar(select(Account.changed_at))

    before = changed_at()
    # Someone edits the company's description: HubSpot returns it as modified, but the owner,
    # stage and activity the app pulls are the same.
    later = NOW + dt.timedelta(hours=1)
    sandbox.sandbox.change_property(HUB, "companies", company["id"], "description", "New text")
    pull(db, tenant_id, connector_for(svc, tenant_id), later)
    assert changed_at() == before


def test_a_definitions_change_that_leaves_the_schema_alone_costs_one_read_per_object(
    app, client, db, installed, sandbox
):
    from app.scores.definitions_store import current_definitions, save_definitions, to_document

    tenant_id, _ = installed
    svc = app.extensions["pql"]
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["frequency_days"] = 14  # no property depends on it
    save_definitions(db, tenant_id, document, "test")
    before = len(sandbox.sandbox.requests_seen)
    assert ensure_schema(db, tenant_id, connector_for(svc, tenant_id), "pql_") == []
    calls = sandbox.sandbox.requests_seen[before:]
    assert [m for m, _ in calls] == ["GET", "GET"]  # companies, contacts; no 409s
    # Someone dropped an option of one enumeration in HubSpot: one PATCH puts it back.
    portal(sandbox).properties["companies"]["pql_deal_size"]["options"].pop()
    before = len(sandbox.sandbox.requests_seen)
    ensure_schema(db, tenant_id, connector_for(svc, tenant_id), "pql_", force=True)
    calls = sandbox.sandbox.requests_seen[before:]
    assert calls == [
        ("GET", "/crm/properties/2026-03/companies"),
        ("PATCH", "/crm/properties/2026-03/companies/pql_deal_size"),
        ("GET", "/crm/properties/2026-03/contacts"),
    ]
    assert len(portal(sandbox).properties["companies"]["pql_deal_size"]["options"]) == 3


def test_a_reinstall_keeps_the_key_and_reads_the_crm_afresh(app, client, db, installed, sandbox):
    tenant_id, key, _, _ = _owned_and_pulled(app, client, db, installed, sandbox)
    assert account_owner(db, tenant_id) == "101"
    # The portal is wiped, the app's access is lost, an admin installs it again.
    portal(sandbox).objects["companies"].clear()
    with db.system_transaction() as session:
        session.get(Tenant, tenant_id).status = "needs_reauth"
    page = install(client)
    assert page.status_code == 200 and key in page.get_data(as_text=True)
    with db.tenant_session(tenant_id) as session:
        active = session.scalars(
            select(WriteKey).where(WriteKey.scope == "write", WriteKey.revoked_at.is_(None))
        ).all()
        record = session.scalars(select(CrmRecord).where(CrmRecord.object_type == "account")).one()
    assert len(active) == 1  # the same key, no second one
    # Nothing of the wiped portal's owner or stage is kept.
    assert record.crm_fields.get("owner_id") is None
    assert record.crm_fields.get("lifecycle_stage") is None


def test_contacts_end_associated_with_their_company_even_when_it_came_later(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    svc = app.extensions["pql"]
    # The company's create fails this round (HubSpot refuses its name); the contacts are
    # created without a company to associate with.
    sandbox.sandbox.faults.invalid_values = {"Acme"}
    acme(client, key)
    recompute(db, tenant_id, NOW)
    sync_tenant(svc, tenant_id)
    contacts = portal(sandbox).objects["contacts"]
    assert len(contacts) == 2 and not portal(sandbox).objects["companies"]
    # Next round the company is created; every contact ends associated with it.
    sandbox.sandbox.faults.invalid_values = set()
    recompute(db, tenant_id, NOW + dt.timedelta(hours=1))
    report = sync_tenant(svc, tenant_id)
    [company_id] = portal(sandbox).objects["companies"]
    linked = {
        c
        for kind, c, to, firm in portal(sandbox).associations
        if kind == "contacts" and to == "companies" and firm == company_id
    }
    assert linked == set(contacts)
    assert report.subjects["user"].associated == 2
    # Converged: the next sync asks nothing more.
    assert sync_tenant(svc, tenant_id).subjects["user"].associated == 0


def test_fit_reaches_the_company_with_its_reason_and_is_pushed_only_when_it_changes(
    app, client, db, installed, sandbox
):
    from app.scores.definitions_store import current_definitions, save_definitions, to_document

    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [company] = portal(sandbox).objects["companies"].values()
    assert not company["properties"].get("pql_fit_band")  # no fit rules yet
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["fit"]["rules"] = [
        {
            "label": "Company domain",
            "points": 60,
            "conditions": [{"field": "domain", "op": "ends_with", "value": ".example"}],
        }
    ]
    document["fit"]["bands"] = [
        {"name": "Ideal", "min_score": 50},
        {"name": "Other", "min_score": 0},
    ]
    save_definitions(db, tenant_id, document, "test")
    recompute(db, tenant_id, NOW + dt.timedelta(minutes=1))
    sync_tenant(app.extensions["pql"], tenant_id)
    props = company["properties"]
    assert (props["pql_fit_score"], props["pql_fit_band"]) == ("60", "Ideal")
    assert props["pql_fit_reason"] == "Fit Ideal (60): Company domain (+60)."
    # Its contacts carry the account's fit (their rows went to the push with it).
    contacts = portal(sandbox).objects["contacts"].values()
    assert {c["properties"]["pql_fit_band"] for c in contacts} == {"Ideal"}
    # The enumeration's options follow the tenant's band names.
    spec = portal(sandbox).properties["companies"]["pql_fit_band"]
    assert [o["value"] for o in spec["options"]] == ["Ideal", "Other"]
    before = requests_made(sandbox)
    recompute(db, tenant_id, NOW + dt.timedelta(minutes=2))
    sync_tenant(app.extensions["pql"], tenant_id)
    assert requests_made(sandbox) == before  # nothing changed: no call


def test_the_pull_reads_the_firmographic_fields_fit_rules_use_and_only_those(
    app, client, db, installed, sandbox
):
    from app.scores.definitions_store import current_definitions, save_definitions, to_document

    tenant_id, key = installed
    scored_and_synced(app, client, db, tenant_id, key)
    [company] = portal(sandbox).objects["companies"].values()
    company["properties"].update(industry="COMPUTER_SOFTWARE", numberofemployees="5000")
    svc = app.extensions["pql"]
    pull_tenant(svc, tenant_id)

    def crm_fields():
        with db.tenant_session(tenant_id) as session:
            record = session.scalars(
                select(CrmRecord).where(CrmRecord.object_type == "account")
            ).one()
            return dict(record.crm_fields or {})

    assert "industry" not in crm_fields()  # no fit rule reads it: not pulled
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["fit"]["rules"] = [
        {
            "label": "Software",
            "points": 40,
            "conditions": [{"field": "crm.industry", "op": "equals", "value": "COMPUTER_SOFTWARE"}],
        },
        {
            "label": "1,000+ employees (CRM)",
            "points": 40,
            "conditions": [{"field": "crm.employees", "op": "gte", "value": 1000}],
        },
    ]
    save_definitions(db, tenant_id, document, "test")
    # The record was pulled before the rules existed: the next pull reads it again for them.
    pull_tenant(svc, tenant_id)
    fields = crm_fields()
    assert (fields["industry"], fields["employees"]) == ("COMPUTER_SOFTWARE", "5000")
    assert "annual_revenue" not in fields and "country" not in fields
    recompute(db, tenant_id, NOW + dt.timedelta(minutes=1))
    with db.tenant_session(tenant_id) as session:
        score = session.scalars(select(AccountScore)).one()
    assert (score.fit_score, score.fit_band) == (80.0, "A")
