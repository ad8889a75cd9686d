"""The README's demo, piece by piece, against a live service and the HubSpot sandbox."""

import random

import pytest

from app.jobs.tenant_jobs import score_tenants
from app.sync.lifecycle import pull_tenant, sync_tenant
from sandbox.demo import (
    account_scores,
    account_summary,
    assign_salesforce_owner,
    backfill_history,
    crm_view,
    hubspot_tenant,
    install_in_salesforce_sandbox,
    install_in_sandbox,
    salesforce_tenant,
    send_batches,
    set_demo_fit_rules,
)
from sandbox.hubspot import app_env as hubspot_env
from sandbox.salesforce import SalesforceSandboxServer
from sandbox.salesforce import app_env as salesforce_env
from sandbox.sample_data import DEMO_ACCOUNTS, demo_messages


@pytest.fixture
def salesforce(tmp_path):
    with SalesforceSandboxServer(cert_dir=str(tmp_path)) as running:
        yield running


@pytest.fixture
def app(make_app, sandbox, salesforce, unused_port):
    return make_app(
        **hubspot_env(sandbox.url),
        **salesforce_env(salesforce.url, salesforce.ca_file),
        PUBLIC_URL=f"http://127.0.0.1:{unused_port}",
    )


def test_the_demo_loop_turns_events_into_hubspot_properties_and_a_cs_task(app, db, served, sandbox):
    svc = app.extensions["pql"]
    with app.app_context():
        key = install_in_sandbox(served)
        tenant_id = hubspot_tenant(1234567)
        set_demo_fit_rules(tenant_id)
        now = svc.clock()
        messages = demo_messages(random.Random("t"), now)
        assert send_batches(served, key, messages) == len(messages)
        summary = account_summary(tenant_id)
        assert [row["account"] for row in summary] == sorted(a.name for a in DEMO_ACCOUNTS)
        tracks = sum(1 for m in messages if m["type"] == "track")
        assert sum(sum(row["events"].values()) for row in summary) == tracks

        # What the worker does each round: score, then push.
        def worker_round():
            return score_tenants(svc.db, svc.clock, "w", push=lambda t: sync_tenant(svc, t))

        assert worker_round() == {tenant_id: "full"}
        assert len(sandbox.sandbox.portals[1234567].objects["companies"]) == len(DEMO_ACCOUNTS)
        # A rep owns Umbrella in HubSpot; the worker's pull learns it (the demo's webhook
        # needs the service reachable from the sandbox, which this test does not set up).
        companies = sandbox.sandbox.portals[1234567].objects["companies"]
        umbrella_company = next(
            c for c in companies.values() if c["properties"].get("name") == "Umbrella"
        )
        umbrella_company["properties"]["hubspot_owner_id"] = "101"
        pull_tenant(svc, tenant_id)
        backfill_history(tenant_id, now)
        worker_round()
        view = crm_view(tenant_id)
        scores = {row["account"]: row for row in account_scores(tenant_id)}
    assert "Ice Cold" in scores["Umbrella"]["segments"]
    [task] = view["tasks"]
    assert task["subject"] == "Engagement dropped: Umbrella" and task["crm_id"]
    assert task["owner"] == "101"
    umbrella = next(c for c in view["accounts"] if c["name"] == "Umbrella")
    assert umbrella["pql_trend"] == "Ice Cold"
    # Umbrella pays: it has converted, so no lead type; the trials have one.
    assert umbrella["pql_activation_rate"] is not None and not umbrella["pql_lead_type"]
    # The fit band and its reason are on the company.
    assert umbrella["pql_fit_band"] == "B"
    assert umbrella["pql_fit_reason"] == (
        "Fit B (70): 50 to 999 employees (+60); On a company domain (+10)."
    )
    globex = next(c for c in view["accounts"] if c["name"] == "Globex")
    assert globex["pql_fit_band"] == "A"  # size capped at 80, +10 for the domain
    acme = next(c for c in view["accounts"] if c["name"] == "Acme Analytics")
    assert acme["pql_lead_type"]


def test_the_demo_loop_for_salesforce_fields_owner_and_task(app, db, served, salesforce):
    svc = app.extensions["pql"]
    with app.app_context():
        key, org = install_in_salesforce_sandbox(served)
        tenant_id = salesforce_tenant(org)
        now = svc.clock()
        messages = demo_messages(random.Random("t"), now)
        assert send_batches(served, key, messages) == len(messages)

        def worker_round():
            return score_tenants(svc.db, svc.clock, "w", push=lambda t: sync_tenant(svc, t))

        assert worker_round() == {tenant_id: "full"}
        accounts = salesforce.sandbox.orgs[org].records["Account"]
        assert len(accounts) == len(DEMO_ACCOUNTS)
        rep = assign_salesforce_owner(svc, tenant_id, org, "Umbrella")
        backfill_history(tenant_id, now)
        worker_round()
        view = crm_view(tenant_id)
    [task] = view["tasks"]
    assert task["subject"] == "Engagement dropped: Umbrella" and task["owner"] == rep
    [sf_task] = salesforce.sandbox.orgs[org].records["Task"].values()
    assert sf_task["OwnerId"] == rep and sf_task["WhatId"] in accounts
    umbrella = next(a for a in view["accounts"] if a["name"] == "Umbrella")
    assert umbrella["pql_trend"] == "Ice Cold" and umbrella["owner_id"] == rep
    assert umbrella["pql_activation_rate"] is not None and not umbrella["pql_lead_type"]
    acme = next(a for a in view["accounts"] if a["name"] == "Acme Analytics")
    assert acme["pql_lead_type"]
