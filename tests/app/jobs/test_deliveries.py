"""Triggers fire in the scoring pass (once per record within the cap), deliveries go out with
retries and a log; the CS handoff note; the HubSpot CRM card."""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest
import requests
import responses
from sqlalchemy import select

from app.jobs.deliveries import MAX_ATTEMPTS, deliver_pending, sign
from app.jobs.tenant_jobs import deliver_tenants
from app.models import AccountScore, CrmRecord, Delivery, Handoff, Trigger
from app.scores.scoring_pass import recompute
from app.sync import lifecycle
from app.tenants import create_tenant
from scoring.triggers import Snapshot, check, fires
from tests.helpers.drip import DripServer
from tests.helpers.hubspot import NOW, acme, portal


@pytest.fixture
def app(hubspot_app):
    return hubspot_app


# The HubSpot app's fixtures: a sandbox portal, the app on it, an installed tenant.

# --- the rules ------------------------------------------------------------------------------


def snap(engagement=50.0, activation=40.0, segments=(), pql=False):
    return Snapshot(engagement, activation, frozenset(segments), pql)


def test_rules_fire_on_the_change_they_name_and_only_then():
    assert fires("new", {}, None, snap()) == "first seen"
    assert fires("new", {}, snap(), snap()) is None
    assert fires("score_change", {"min_change": 10}, snap(50), snap(61)).startswith(
        "engagement score rose from 50 to 61"
    )
    assert "fell" in fires("score_change", {"min_change": 10}, snap(50), snap(39))
    assert fires("score_change", {"min_change": 10}, snap(50), snap(59)) is None
    crossed = fires(
        "activation_crossed", {"threshold": 80}, snap(activation=60), snap(activation=80)
    )
    assert crossed == "Activation reached 80% (threshold 80%)"
    assert (
        fires("activation_crossed", {"threshold": 80}, snap(activation=85), snap(activation=90))
        is None
    )
    assert fires("segment_entered", {"segment": "Hot"}, snap(), snap(segments=["Hot"]))
    assert (
        fires("segment_entered", {"segment": "Hot"}, snap(segments=["Hot"]), snap(segments=["Hot"]))
        is None
    )
    assert fires("became_pql", {}, snap(), snap(pql=True))
    assert fires("became_pql", {}, snap(pql=True), snap(pql=True)) is None
    assert check("user", "became_pql", {}) == {"event": "only accounts become PQLs"}
    assert "threshold" in check("account", "activation_crossed", {"threshold": 150})


# --- firing in the scoring pass -------------------------------------------------------------


def add_trigger(db, tenant_id, **values):
    base = {
        "name": "Hot account",
        "subject": "account",
        "event": "new",
        "params": {},
        "action": "slack",
        "action_params": {"url": "https://hooks.slack.com/services/T1/B1/x"},
        "cap_hours": 24,
    }
    with db.tenant_transaction(tenant_id) as session:
        rule = Trigger(tenant_id=tenant_id, enabled=True, **{**base, **values})
        session.add(rule)
        session.flush()
        return rule.id


def deliveries(db, tenant_id):
    with db.tenant_session(tenant_id) as session:
        return session.scalars(select(Delivery).order_by(Delivery.id)).all()


def test_a_pass_queues_one_delivery_per_firing_and_the_cap_holds(app, client, db, installed):
    tenant_id, key = installed
    add_trigger(db, tenant_id, event="new")
    changed = add_trigger(
        db, tenant_id, name="Moved", event="score_change", params={"min_change": 5}, cap_hours=24
    )
    acme(client, key)
    recompute(db, tenant_id, NOW)
    [first] = deliveries(db, tenant_id)
    assert first.payload["reason"] == "first seen" and first.payload["name"] == "Acme"
    assert first.status == "pending"
    recompute(db, tenant_id, NOW)  # nothing changed: nothing fires
    assert len(deliveries(db, tenant_id)) == 1
    # The score moves twice within the cap: one delivery.
    for value in (5.0, 95.0):
        with db.tenant_transaction(tenant_id) as session:
            session.scalars(select(AccountScore)).one().engagement_score = value
        recompute(db, tenant_id, NOW + dt.timedelta(hours=1))
    moved = [d for d in deliveries(db, tenant_id) if d.trigger_id == changed]
    assert len(moved) == 1 and "engagement score rose" in moved[0].payload["reason"]
    # After the cap, the next change fires again.
    with db.tenant_transaction(tenant_id) as session:
        session.scalars(select(AccountScore)).one().engagement_score = 5.0
    recompute(db, tenant_id, NOW + dt.timedelta(hours=30))
    assert len([d for d in deliveries(db, tenant_id) if d.trigger_id == changed]) == 2


def test_disabled_triggers_and_other_tenants_rules_do_not_fire(app, client, db, installed):
    tenant_id, key = installed
    rule = add_trigger(db, tenant_id)
    with db.tenant_transaction(tenant_id) as session:
        session.get(Trigger, rule).enabled = False
    acme(client, key)
    recompute(db, tenant_id, NOW)
    assert deliveries(db, tenant_id) == []


# --- delivery ---------------------------------------------------------------------------------


def test_slack_and_signed_webhook_deliveries_with_retries_and_a_log(app, client, db, installed):
    tenant_id, key = installed
    add_trigger(db, tenant_id)
    secret = "s" * 24
    add_trigger(
        db,
        tenant_id,
        name="To our CRM bridge",
        action="webhook",
        action_params={"url": "https://bridge.test/pql", "secret": secret},
    )
    acme(client, key)
    recompute(db, tenant_id, NOW)
    with responses.RequestsMock() as mock:
        mock.add(
            responses.POST,
            "https://hooks.slack.com/services/T1/B1/x",
            status=500,
            body="internal detail from the target",
        )
        mock.add(responses.POST, "https://bridge.test/pql", status=200)
        counts = deliver_pending(db, tenant_id, NOW)
        assert counts == {"delivered": 1, "retrying": 1, "failed": 0, "deferred": 0}
        hook = next(c for c in mock.calls if c.request.url == "https://bridge.test/pql")
        body, headers = hook.request.body, hook.request.headers
        assert headers["X-PQL-Signature"] == sign(secret, headers["X-PQL-Timestamp"], body)
        assert json.loads(body)["name"] == "Acme"
    slack = next(d for d in deliveries(db, tenant_id) if d.payload["trigger"] == "Hot account")
    assert (slack.status, slack.attempts) == ("pending", 1)
    # Only the host and status: the URL's path is Slack's credential, the body the target's.
    assert slack.last_error == "hooks.slack.com answered HTTP 500"
    assert slack.next_attempt_at == NOW + dt.timedelta(minutes=1)
    # Not due yet: nothing is sent; when due, it goes out.
    with responses.RequestsMock() as mock:
        assert deliver_pending(db, tenant_id, NOW)["delivered"] == 0
        mock.add(responses.POST, "https://hooks.slack.com/services/T1/B1/x", status=200)
        assert deliver_pending(db, tenant_id, NOW + dt.timedelta(minutes=2))["delivered"] == 1
        assert "Acme: first seen" in json.loads(mock.calls[0].request.body)["text"]


def test_a_delivery_that_keeps_failing_is_given_up_after_the_last_attempt(
    app, client, db, installed
):
    tenant_id, key = installed
    add_trigger(db, tenant_id)
    acme(client, key)
    recompute(db, tenant_id, NOW)
    moment = NOW
    with responses.RequestsMock() as mock:
        mock.add(
            responses.POST,
            "https://hooks.slack.com/services/T1/B1/x",
            body=requests.ConnectionError("down"),
        )
        for _ in range(MAX_ATTEMPTS):
            deliver_pending(db, tenant_id, moment)
            moment += dt.timedelta(hours=1)
    [row] = deliveries(db, tenant_id)
    assert (row.status, row.attempts) == ("failed", MAX_ATTEMPTS)
    assert "no answer" in row.last_error


def test_crm_task_and_note_actions_go_to_the_account_owner(app, client, db, installed, sandbox):
    tenant_id, key = installed
    add_trigger(db, tenant_id, name="Call them", action="crm_task", action_params={})
    add_trigger(db, tenant_id, name="Log it", action="crm_note", action_params={})
    acme(client, key)
    recompute(db, tenant_id, NOW)
    svc = app.extensions["pql"]
    # Before the account is in HubSpot: retried later, not lost.
    factory = lambda: lifecycle.connector_for(svc, tenant_id)  # noqa: E731
    assert deliver_pending(db, tenant_id, NOW, connector_factory=factory)["retrying"] == 2
    lifecycle.sync_tenant(svc, tenant_id)
    with db.tenant_transaction(tenant_id) as session:
        record = session.scalars(select(CrmRecord).where(CrmRecord.object_type == "account")).one()
        record.crm_fields = {**record.crm_fields, "owner_id": "101"}
    later = NOW + dt.timedelta(minutes=5)
    assert deliver_pending(db, tenant_id, later, connector_factory=factory)["delivered"] == 2
    [task] = portal(sandbox).objects["tasks"].values()
    assert task["properties"]["hubspot_owner_id"] == "101"
    assert "Acme: first seen" in task["properties"]["hs_task_subject"]
    [note] = portal(sandbox).objects["notes"].values()
    assert "Log it" in note["properties"]["hs_note_body"]
    assert ("notes", note["id"], "companies", record.crm_id) in portal(sandbox).associations


def post_trigger_form(client, **fields):
    """The Triggers page's form, posted with the page's CSRF token."""
    page = client.get("/app/triggers").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return client.post("/app/triggers", data={"csrf": token, **fields})


def test_the_triggers_page_creates_lists_and_logs(app, client, db, installed):
    tenant_id, key = installed
    bad = post_trigger_form(
        client,
        name="",
        subject="account",
        event="activation_crossed",
        threshold="150",
        action="webhook",
        url="ftp://x",
        secret="short",
        cap_hours="24",
    )
    body = bad.get_data(as_text=True)
    assert bad.status_code == 422
    for field in ("name", "threshold", "url", "secret"):
        assert f'id="p-{field}"' in body, field
    good = post_trigger_form(
        client,
        name="Activated",
        subject="account",
        event="activation_crossed",
        threshold="20",
        action="slack",
        url="https://hooks.slack.com/services/a",
        cap_hours="12",
    )
    assert good.status_code == 302
    acme(client, key)
    recompute(db, tenant_id, NOW)
    listing = client.get("/app/triggers").get_data(as_text=True)
    assert "Activated" in listing and "Activation reached" in listing and "pending" in listing


def test_a_webhooks_signing_secret_is_stored_encrypted_and_still_signs(app, client, db, installed):
    tenant_id, key = installed
    secret = "a-signing-secret-of-ours"
    made = post_trigger_form(
        client,
        name="Bridge",
        subject="account",
        event="new",
        action="webhook",
        url="https://bridge.test/pql",
        secret=secret,
        cap_hours="24",
    )
    assert made.status_code == 302
    with db.tenant_session(tenant_id) as session:
        params = session.scalar(select(Trigger.action_params).where(Trigger.name == "Bridge"))
    assert secret not in json.dumps(params) and params["secret_encrypted"]
    acme(client, key)
    recompute(db, tenant_id, NOW)
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, "https://bridge.test/pql", status=200)
        counts = deliver_pending(db, tenant_id, NOW, cipher=app.extensions["pql"].token_cipher)
        assert counts["delivered"] == 1
        headers, body = mock.calls[0].request.headers, mock.calls[0].request.body
        assert headers["X-PQL-Signature"] == sign(secret, headers["X-PQL-Timestamp"], body)


# --- handoff ----------------------------------------------------------------------------------


def test_the_handoff_note_is_written_once_when_a_trial_becomes_paying(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    svc = app.extensions["pql"]
    acme(client, key)  # a trial
    recompute(db, tenant_id, NOW)
    assert lifecycle.sync_tenant(svc, tenant_id).handoffs_written == 0
    acme(client, key, plan="paid")
    recompute(db, tenant_id, NOW)
    report = lifecycle.sync_tenant(svc, tenant_id)
    assert report.handoffs_written == 1
    [note] = portal(sandbox).objects["notes"].values()
    text = note["properties"]["hs_note_body"]
    assert "Handoff to Customer Success" in text and "Acme is now a paying customer" in text
    assert "Used: Report Created" in text and "Not used yet:" in text
    assert "Who engaged:" in text and "Left to onboard:" in text
    assert lifecycle.sync_tenant(svc, tenant_id).handoffs_written == 0
    with db.tenant_session(tenant_id) as session:
        assert session.scalars(select(Handoff)).one().note_id == note["id"]


def test_accounts_already_paying_when_first_seen_get_no_handoff(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    svc = app.extensions["pql"]
    acme(client, key, plan="paid")
    recompute(db, tenant_id, NOW)
    lifecycle.sync_tenant(svc, tenant_id)
    assert lifecycle.sync_tenant(svc, tenant_id).handoffs_written == 0
    assert portal(sandbox).objects["notes"] == {}


def test_disabling_a_trigger_stops_what_it_had_queued(app, client, db, installed):
    tenant_id, key = installed
    rule = add_trigger(db, tenant_id)
    acme(client, key)
    recompute(db, tenant_id, NOW)
    assert len(deliveries(db, tenant_id)) == 1
    with db.tenant_transaction(tenant_id) as session:
        session.get(Trigger, rule).enabled = False
    with responses.RequestsMock():  # no request may leave
        assert deliver_pending(db, tenant_id, NOW) == {
            "delivered": 0,
            "retrying": 0,
            "failed": 0,
            "deferred": 0,
        }
    assert deliveries(db, tenant_id)[0].attempts == 0
    # Disabled from the triggers page (the install signed this browser in), the queue is
    # cancelled too.
    with db.tenant_transaction(tenant_id) as session:
        session.get(Trigger, rule).enabled = True
    page = client.get("/app/triggers").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    client.post(f"/app/triggers/{rule}/disable", data={"csrf": token})
    assert [d.status for d in deliveries(db, tenant_id)] == ["cancelled"]


def test_a_target_is_checked_again_at_send_time(app, client, db, installed, monkeypatch):
    """A host that resolved to a public address when the trigger was saved and to a private
    one now: nothing is sent, the log says why."""
    from app.jobs import outbound

    tenant_id, key = installed
    add_trigger(
        db,
        tenant_id,
        action="webhook",
        action_params={"url": "https://bridge.test/pql", "secret": "s" * 24},
    )
    acme(client, key)
    recompute(db, tenant_id, NOW)
    monkeypatch.setattr(
        outbound,
        "_getaddrinfo",
        lambda host, port: [(2, 1, 6, "", ("169.254.169.254", port))],
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, "https://bridge.test/pql", status=200)
        assert deliver_pending(db, tenant_id, NOW)["retrying"] == 1
        assert len(mock.calls) == 0
    (row,) = deliveries(db, tenant_id)
    assert "169.254.169.254, which is not a public address" in row.last_error


def test_the_triggers_page_refuses_a_target_inside_the_network(app, client, db, installed):
    tenant_id, _ = installed
    answer = post_trigger_form(
        client,
        name="Metadata",
        subject="account",
        event="new",
        action="webhook",
        url="https://169.254.169.254/latest/meta-data",
        secret="s" * 24,
        cap_hours="24",
    )
    body = answer.get_data(as_text=True)
    assert answer.status_code == 422 and "not a public address" in body
    with db.tenant_session(tenant_id) as session:
        assert session.scalars(select(Trigger)).all() == []


def _queued(db, name: str, url: str, count: int, due: dt.datetime) -> int:
    tenant_id = create_tenant(db, name).id
    rule = add_trigger(
        db, tenant_id, action="webhook", action_params={"url": url, "secret": "s" * 24}
    )
    with db.tenant_transaction(tenant_id) as session:
        for n in range(count):
            session.add(
                Delivery(
                    tenant_id=tenant_id,
                    trigger_id=rule,
                    subject="account",
                    subject_id=n + 1,
                    payload={"name": f"{name} {n}"},
                    next_attempt_at=due,
                    created_at=due,
                )
            )
    return tenant_id


def test_a_slow_target_spends_its_own_tenants_turn_not_everyones(db, target):
    quick_port, _ = target
    drip = DripServer(interval=0.2, total=8.0)
    try:
        slow = _queued(
            db, "Slow", f"http://127.0.0.1:{drip.port}/hook", 5, NOW - dt.timedelta(hours=1)
        )
        quick = _queued(db, "Quick", f"http://127.0.0.1:{quick_port}/hook", 1, NOW)

        def one_tenant(tenant_id, now):
            deliver_pending(db, tenant_id, now, allow_loopback=True, budget=1.0, deadline=0.5)

        started = time.monotonic()
        outcome = deliver_tenants(db, lambda: NOW, "worker-1", one_tenant)
        elapsed = time.monotonic() - started
    finally:
        drip.close()
    # The tenant that waited longest went first, and its turn ended with its budget.
    assert list(outcome) == [slow, quick]
    assert elapsed < 4.0
    tried = [d for d in deliveries(db, slow) if d.attempts]
    assert 1 <= len(tried) <= 3 and len(deliveries(db, slow)) - len(tried) >= 2
    assert all("no answer within 0.5 s" in d.last_error for d in tried)
    [sent] = deliveries(db, quick)
    assert sent.status == "delivered"


def test_delivered_at_is_when_the_delivery_went_out(db, target):
    quick_port, _ = target
    drip = DripServer(interval=0.2, total=8.0)
    try:
        tenant_id = _queued(db, "Both", f"http://127.0.0.1:{drip.port}/hook", 1, NOW)
        add_trigger(
            db,
            tenant_id,
            name="Quick",
            action="webhook",
            action_params={"url": f"http://127.0.0.1:{quick_port}/hook", "secret": "s" * 24},
        )
        with db.tenant_transaction(tenant_id) as session:
            rule = session.scalar(select(Trigger.id).where(Trigger.name == "Quick"))
            session.add(
                Delivery(
                    tenant_id=tenant_id,
                    trigger_id=rule,
                    subject="account",
                    subject_id=9,
                    payload={"name": "Quick"},
                    next_attempt_at=NOW,
                    created_at=NOW,
                )
            )
        deliver_pending(db, tenant_id, NOW, allow_loopback=True, deadline=0.5)
    finally:
        drip.close()
    slow, sent = deliveries(db, tenant_id)
    assert slow.attempts == 1 and sent.status == "delivered"
    # It went out after the slow target's half second, not at the round's start.
    assert sent.delivered_at >= NOW + dt.timedelta(seconds=0.5)
