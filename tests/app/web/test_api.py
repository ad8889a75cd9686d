"""The admin JSON API: auth, definitions, scores, PQLs, segments."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from app.jobs import leases
from app.jobs.tenant_jobs import requested_scoring
from app.models import AccountScore
from app.scores.definitions_store import current_definitions, to_document
from app.scores.scoring_pass import recompute
from app.tenants import create_tenant, issue_write_key
from tests.helpers.events import NOW, acme_trial, ev, group, send


@pytest.fixture
def admin(db, tenant_key):
    tenant_id, _ = tenant_key
    return {"Authorization": "Bearer " + issue_write_key(db, tenant_id, scope="admin").secret}


@pytest.fixture
def scored(client, db, tenant_key):
    tenant_id, key = tenant_key
    acme_trial(client, key)
    send(
        client,
        key,
        [
            group("cy", "initech", plan="trial", employees=5000, name="Initech"),
            *ev("cy", "Logged In", "initech"),
        ],
    )
    send(
        client,
        key,
        [
            group("di", "umbrella", plan="paid", employees=30, name="Umbrella"),
            *ev("di", "Report Created", "umbrella", n=2),
        ],
    )
    recompute(db, tenant_id, NOW)
    return tenant_id


def test_api_needs_an_admin_key_not_a_write_key(client, tenant_key):
    _, write_key = tenant_key
    assert client.get("/api/v1/definitions").status_code == 401
    response = client.get("/api/v1/definitions", headers={"Authorization": f"Bearer {write_key}"})
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_token"


def test_get_definitions_starts_with_the_defaults(client, admin):
    body = client.get("/api/v1/definitions", headers=admin).get_json()
    assert body["version"] == 1
    assert body["document"]["pql"]["complexity"] == "simple"


def test_put_invalid_definitions_gets_422_naming_the_field(client, admin):
    document = client.get("/api/v1/definitions", headers=admin).get_json()["document"]
    document["profiles"][0]["weights"]["Logged In"] = 42
    response = client.put("/api/v1/definitions", json={"document": document}, headers=admin)
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == "invalid_definitions"
    assert "weights" in body["errors"]["profiles"]["0"]
    assert client.get("/api/v1/definitions", headers=admin).get_json()["version"] == 1


def test_put_valid_definitions_adds_a_version_and_rollback_restores(client, admin):
    document = client.get("/api/v1/definitions", headers=admin).get_json()["document"]
    document["frequency_days"] = 14
    response = client.put(
        "/api/v1/definitions", json={"document": document, "note": "two weeks"}, headers=admin
    )
    assert response.status_code == 200 and response.get_json()["version"] == 2
    versions = client.get("/api/v1/definitions/versions", headers=admin).get_json()["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert (
        client.get("/api/v1/definitions/versions/1", headers=admin).get_json()["document"][
            "frequency_days"
        ]
        == 30
    )
    restored = client.post(
        "/api/v1/definitions/rollback", json={"version": 1}, headers=admin
    ).get_json()
    assert restored["version"] == 3 and restored["document"]["frequency_days"] == 30
    assert (
        client.post("/api/v1/definitions/rollback", json={"version": 99}, headers=admin).status_code
        == 404
    )


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"version": "one"}'])
def test_bad_bodies_get_400(client, admin, body):
    response = client.post(
        "/api/v1/definitions/rollback",
        data=body,
        headers={**admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.get_json()["message"]


def test_accounts_are_listed_by_engagement_and_filtered(client, admin, scored):
    body = client.get("/api/v1/accounts", headers=admin).get_json()
    assert body["total"] == 3
    scores = [a["engagement_score"] for a in body["accounts"]]
    assert scores == sorted(scores, reverse=True)
    pqls = client.get("/api/v1/accounts?pql=true", headers=admin).get_json()["accounts"]
    assert {a["account"] for a in pqls} == {"acme"}
    ascending = client.get("/api/v1/accounts?sort=-activation_rate", headers=admin).get_json()[
        "accounts"
    ]
    rates = [a["activation_rate"] for a in ascending]
    assert rates == sorted(rates)
    assert client.get("/api/v1/accounts?sort=owner", headers=admin).status_code == 400
    assert client.get("/api/v1/accounts?limit=0", headers=admin).status_code == 400


def test_pqls_are_ranked_by_engagement_with_reasons(client, admin, scored):
    pqls = client.get("/api/v1/pqls", headers=admin).get_json()["pqls"]
    assert [p["account"] for p in pqls] == ["acme"]
    assert pqls[0]["pql_reason"].startswith("Reached 60% Activation")


def test_account_detail_lists_its_users(client, admin, scored):
    body = client.get("/api/v1/accounts/acme", headers=admin).get_json()
    assert body["name"] == "Acme"
    assert {u["user"] for u in body["users"]} == {"ada", "bob"}
    assert client.get("/api/v1/accounts/nope", headers=admin).status_code == 404


def test_segment_members_and_trait_distribution(client, admin, scored):
    body = client.get("/api/v1/segments/Least engaged?field=trait.plan", headers=admin).get_json()
    assert body["count"] == len(body["members"]) >= 1
    assert sum(d["count"] for d in body["distribution"]) == body["count"]
    users = client.get(
        "/api/v1/segments/Least engaged?subject=user&field=engagement_segment", headers=admin
    ).get_json()
    assert users["subject"] == "user" and users["count"] >= 1
    assert users["distribution"] == [
        {"value": "Least engaged", "count": users["count"], "share": 100.0}
    ]
    assert client.get("/api/v1/segments/X?subject=team", headers=admin).status_code == 400


def test_an_admin_key_sees_only_its_own_tenant(client, db, scored, admin):
    other = create_tenant(db, "Other")
    other_admin = {"Authorization": "Bearer " + issue_write_key(db, other.id, scope="admin").secret}
    assert client.get("/api/v1/accounts", headers=other_admin).get_json()["total"] == 0
    assert client.get("/api/v1/accounts/acme", headers=other_admin).status_code == 404
    document = to_document(current_definitions(db, other.id).definitions)
    document["frequency_days"] = 7
    client.put("/api/v1/definitions", json={"document": document}, headers=other_admin)
    assert (
        client.get("/api/v1/definitions", headers=admin).get_json()["document"]["frequency_days"]
        == 30
    )


def test_scoring_is_run_by_the_worker_when_asked_through_the_api(
    app, client, db, admin, tenant_key
):
    tenant_id, key = tenant_key
    acme_trial(client, key)
    clock = lambda: NOW + dt.timedelta(hours=1)  # noqa: E731
    app.extensions["pql"].clock = clock
    asked = client.post("/api/v1/scoring/run", json={"full": True}, headers=admin)
    assert asked.status_code == 202 and asked.get_json()["status"] == "queued"
    status_url = asked.headers["Location"]
    # Asking again while it waits is the same job.
    again = client.post("/api/v1/scoring/run", json={"full": True}, headers=admin).get_json()
    assert again["id"] == asked.get_json()["id"]
    # Nothing was scored in the request.
    with db.tenant_session(tenant_id) as session:
        assert session.scalar(select(func.count()).select_from(AccountScore)) == 0
    # While another worker holds the tenant's scoring lease, this one leaves the job waiting.
    with leases.held(db, tenant_id, "score", "worker-2", dt.timedelta(minutes=1), clock):
        assert requested_scoring(db, clock, "worker-1") == {tenant_id: "busy"}
    assert client.get(status_url, headers=admin).get_json()["status"] == "queued"
    assert requested_scoring(db, clock, "worker-1") == {tenant_id: "1 jobs"}
    done = client.get(status_url, headers=admin).get_json()
    assert done["status"] == "done" and (done["result"]["full"], done["result"]["accounts"]) == (
        True,
        1,
    )
    assert client.get("/api/v1/scoring/jobs/999999", headers=admin).status_code == 404


def test_a_deeply_nested_definitions_document_is_refused_with_a_422_not_a_crash(client, admin):
    document = client.get("/api/v1/definitions", headers=admin).get_json()["document"]
    nested: object = 1
    for _ in range(900):
        nested = [nested]
    document["pql"]["limit_traits"] = [{"field": "plan", "op": "eq", "value": nested}]
    response = client.put("/api/v1/definitions", json={"document": document}, headers=admin)
    assert response.status_code == 422
    assert "nested deeper" in str(response.get_json()["errors"])
    assert client.get("/api/v1/definitions", headers=admin).get_json()["version"] == 1


def test_a_condition_value_must_be_plain(client, admin):
    document = client.get("/api/v1/definitions", headers=admin).get_json()["document"]
    document["pql"]["limit_traits"] = [{"field": "plan", "op": "eq", "value": {"a": 1}}]
    response = client.put("/api/v1/definitions", json={"document": document}, headers=admin)
    assert response.status_code == 422
    assert "plain value" in str(response.get_json()["errors"])


def test_definitions_history_is_paged(client, admin):
    document = client.get("/api/v1/definitions", headers=admin).get_json()["document"]
    for days in (8, 9, 10):
        document["frequency_days"] = days
        client.put("/api/v1/definitions", json={"document": document}, headers=admin)
    url = "/api/v1/definitions/versions"
    first = client.get(url, query_string={"limit": 2}, headers=admin).get_json()["versions"]
    assert [v["version"] for v in first] == [4, 3]
    rest = client.get(url, query_string={"limit": 2, "before": 3}, headers=admin).get_json()
    assert [v["version"] for v in rest["versions"]] == [2, 1]
    refused = client.get(url, query_string={"limit": 100000}, headers=admin)
    assert refused.status_code == 400 and "limit" in refused.get_json()["message"]


def test_segment_members_are_paged_and_read_a_chunk_at_a_time(client, admin, scored, monkeypatch):
    from app.web import read_model

    everyone = client.get("/api/v1/segments/Least engaged", headers=admin).get_json()
    assert everyone["count"] >= 2
    # One subject per chunk: the same answer, read in pieces.
    monkeypatch.setattr(read_model, "SEGMENT_CHUNK", 1)
    first = client.get("/api/v1/segments/Least engaged?limit=1", headers=admin).get_json()
    second = client.get("/api/v1/segments/Least engaged?limit=1&offset=1", headers=admin).get_json()
    assert first["count"] == second["count"] == everyone["count"]
    assert first["members"] + second["members"] == everyone["members"][:2]
    too_many = client.get("/api/v1/segments/Least engaged?limit=501", headers=admin)
    assert too_many.status_code == 400 and "limit" in too_many.get_json()["message"]


def test_the_forecast_says_what_deal_size_it_assumed(client, db, admin, scored, tenant_key):
    _, key = tenant_key
    acme = client.get("/api/v1/accounts/acme", headers=admin).get_json()
    assert acme["forecast_basis"] == "a mid-size deal"  # 120 employees
    umbrella = client.get("/api/v1/accounts/umbrella", headers=admin).get_json()
    assert umbrella["lead_type"] is None and umbrella["forecast_basis"] is None  # paying
    send(
        client,
        key,
        [group("zoe", "nosize", plan="trial", name="No size"), *ev("zoe", "Logged In", "nosize")],
    )
    recompute(db, scored, NOW)
    nosize = client.get("/api/v1/accounts/nosize", headers=admin).get_json()
    assert nosize["forecast_basis"].startswith("deal size unknown (no employees)")
    assert "no employees known, so counted as small" in nosize["pql_reason"]


def test_the_event_catalogue_counts_events_and_traits_and_flags_unknown_names(
    app, client, db, tenant_key, admin, scored
):
    app.extensions["pql"].clock = lambda: NOW
    _, key = tenant_key
    send(client, key, [*ev("ada", "Report Created", "acme", days_ago=20)])
    body = client.get("/api/v1/events", headers=admin).get_json()
    events = {e["name"]: e for e in body["events"]}
    report = events["Report Created"]
    # acme's ada: 2 yesterday and 1 twenty days ago; umbrella's di: 2 yesterday.
    assert (report["last_7_days"], report["last_30_days"], report["total"]) == (4, 5, 5)
    assert (report["users"], report["accounts"]) == (2, 2)
    assert report["last_seen"] == (NOW - dt.timedelta(days=1)).date().isoformat()
    assert "weight 8 in profile Default" in report["used_in"] and "key feature" in report["used_in"]
    assert events["Logged In"]["accounts"] == 2  # bob at acme, cy at initech
    traits = {t["name"]: t for t in body["traits"]}
    assert (
        traits["plan"]["accounts"] == 3
        and "trial or paid (PQL stage trait)" in (traits["plan"]["used_in"])
    )
    assert traits["employees"]["used_in"] == ["deal size"]
    unknown = {u["name"]: u["used_in"] for u in body["unknown_events"]}
    # The default definitions name events this product never sent.
    assert "PQL signal: hand-raiser" in unknown["Demo Requested"]
    assert "Report Created" not in unknown
    assert {u["name"] for u in body["unknown_traits"]} >= {"fit"}


def test_the_event_catalogue_is_empty_for_a_new_tenant(client, admin):
    body = client.get("/api/v1/events", headers=admin).get_json()
    assert body["events"] == [] and body["traits"] == []
    assert any(u["name"] == "Report Created" for u in body["unknown_events"])


def test_the_fit_backtest_shows_how_the_bands_separate_known_outcomes(
    app, client, db, tenant_key, admin
):
    """A generated tenant: 40 accounts, big ones (A) mostly converted, small ones (D) mostly
    lost; the backtest's counts and rates are those of the generator."""
    import random

    from app.models import Account, CrmRecord
    from app.scores.definitions_store import save_definitions

    tenant_id, key = tenant_key
    rng = random.Random(7)
    truth = {}
    messages = []
    for n in range(40):
        big = n % 2 == 0
        outcome = rng.choices(
            ["customer", "other", "lead"], weights=[6, 2, 2] if big else [1, 7, 2]
        )[0]
        truth[f"acct-{n}"] = ("A" if big else "D", outcome)
        messages.append(
            group(f"u{n}", f"acct-{n}", plan="paid", employees=2000 if big else 5, name=f"A{n}")
        )
        messages += ev(f"u{n}", "Logged In", f"acct-{n}")
    send(client, key, messages)
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["fit"]["rules"] = [
        {
            "label": "1000+ employees",
            "points": 80,
            "conditions": [{"field": "trait.employees", "op": "gte", "value": 1000}],
        }
    ]
    save_definitions(db, tenant_id, document, "test")
    recompute(db, tenant_id, NOW)
    with db.tenant_transaction(tenant_id) as session:
        for account in session.scalars(select(Account)):
            stage = truth[account.external_id][1]
            session.add(
                CrmRecord(
                    tenant_id=tenant_id,
                    object_type="account",
                    subject_id=account.id,
                    crm_id=f"c{account.id}",
                    crm_fields={"lifecycle_stage": stage},
                )
            )
    body = client.get("/api/v1/fit/backtest", headers=admin).get_json()
    by_band = {b["band"]: b for b in body["bands"]}
    for band in ("A", "D"):
        outcomes = [o for b, o in truth.values() if b == band]
        row = by_band[band]
        converted, lost = outcomes.count("customer"), outcomes.count("other")
        assert (row["accounts"], row["converted"], row["lost"], row["open"]) == (
            20,
            converted,
            lost,
            outcomes.count("lead"),
        )
        assert row["conversion_rate"] == round(100 * converted / (converted + lost), 1)
    assert by_band["A"]["conversion_rate"] > 60 > by_band["D"]["conversion_rate"]
    assert by_band["B"]["accounts"] == 0 and by_band["B"]["conversion_rate"] is None
    assert body["decided"] == sum(1 for _, o in truth.values() if o != "lead")
