"""The admin web UI: signed in through the CRM install, one tenant per session, CSRF on every
form; the pages show and change what the JSON API does."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from sqlalchemy import select

from app.jobs.tenant_jobs import requested_scoring
from app.models import (
    Account,
    AccountScore,
    CrmOwner,
    CrmRecord,
    DefinitionsVersion,
    Tenant,
    WriteKey,
)
from app.scores.definitions_store import current_definitions, save_definitions, to_document
from app.scores.scoring_pass import recompute
from app.sync.lifecycle import uninstall
from tests.helpers.apps import write_key_of
from tests.helpers.hubspot import NOW, acme, install, send


@pytest.fixture
def app(hubspot_app):
    return hubspot_app


def csrf(page) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True)).group(1)


@pytest.fixture
def admin(app, client, db):
    """A browser that installed the app into portal 777 and has data to look at."""
    page = install(client, 777)
    assert page.status_code == 200
    with db.system_session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.external_id == "777"))
    key = write_key_of(app, tenant_id)
    acme(client, key)
    recompute(db, tenant_id, NOW)
    return tenant_id, key


def test_pages_need_a_session_from_the_install(app, client):
    answer = client.get("/app/accounts")
    assert answer.status_code == 302 and "/app/login" in answer.headers["Location"]
    login = client.get("/app/login").get_data(as_text=True)
    assert "/hubspot/install" in login and "/salesforce/install" in login


def test_the_install_signs_the_admin_in_and_every_page_renders(admin, client):
    for path in (
        "/app/",
        "/app/definitions",
        "/app/accounts",
        "/app/accounts/acme",
        "/app/segments?name=Engaged&field=trait.plan",
    ):
        page = client.get(path)
        assert page.status_code == 200, (path, page.get_data(as_text=True)[:300])
    home = client.get("/app/").get_data(as_text=True)
    assert "HubSpot portal 777" in home or "HubSpot 777" in home
    assert 'id="events-today">8<' in home  # the eight messages acme() sent today


def test_signing_in_again_issues_no_new_write_key(admin, client, db):
    tenant_id, _ = admin
    again = install(client, 777)
    assert again.status_code == 302 and again.headers["Location"].endswith("/app/")
    with db.tenant_session(tenant_id) as session:
        assert len(session.scalars(select(WriteKey)).all()) == 1


def test_every_post_needs_the_sessions_csrf_token(admin, client):
    for path in (
        "/app/definitions",
        "/app/definitions/rollback",
        "/app/logout",
        "/app/keys/1/rotate",
        "/app/keys/1/reveal",
    ):
        refused = client.post(path, data={"action": "save"})
        assert refused.status_code == 400, path
        assert "CSRF" in refused.get_data(as_text=True)
        wrong = client.post(path, data={"csrf": "forged", "action": "save"})
        assert wrong.status_code == 400, path


def test_a_session_of_one_tenant_cannot_see_or_change_another(app, client, db, admin):
    other_browser = app.test_client()
    page = install(other_browser, 888)
    assert page.status_code == 200
    with db.system_session() as session:
        other_id = session.scalar(select(Tenant.id).where(Tenant.external_id == "888"))
    # Tenant 888 has no account "acme": tenant 777's account is not visible to it.
    assert other_browser.get("/app/accounts/acme").status_code == 404
    assert "Acme" not in other_browser.get("/app/accounts").get_data(as_text=True)
    assert "Acme" not in other_browser.get("/app/segments?name=Engaged").get_data(as_text=True)
    # Nor are its keys: 777's key id answers 404 in 888's session.
    with db.tenant_session(admin[0]) as session:
        key_id = session.scalar(select(WriteKey.id))
    token = csrf(other_browser.get("/app/"))
    assert other_browser.post(f"/app/keys/{key_id}/rotate", data={"csrf": token}).status_code == 404
    assert other_browser.post(f"/app/keys/{key_id}/reveal", data={"csrf": token}).status_code == 404
    # A definitions save lands in the session's own tenant only.
    before = client.get("/app/definitions").get_data(as_text=True)
    with db.tenant_session(admin[0]) as session:
        versions = len(session.scalars(select(DefinitionsVersion)).all())
    texts = sections_of(other_browser.get("/app/definitions"))
    other_browser.post("/app/definitions", data={**texts, "csrf": token, "action": "save"})
    with db.tenant_session(admin[0]) as session:
        assert len(session.scalars(select(DefinitionsVersion)).all()) == versions
    with db.tenant_session(other_id) as session:
        assert len(session.scalars(select(DefinitionsVersion)).all()) == 2
    assert client.get("/app/definitions").get_data(as_text=True) == before


def sections_of(page) -> dict[str, str]:
    import html

    text = page.get_data(as_text=True)
    return {
        name: html.unescape(body)
        for name, body in re.findall(
            r'<textarea id="f-\w+" name="(\w+)"[^>]*>(.*?)</textarea>', text, re.S
        )
    }


def test_a_definitions_error_is_shown_next_to_its_field_and_nothing_is_saved(admin, client, db):
    tenant_id, _ = admin
    page = client.get("/app/definitions")
    texts = sections_of(page)
    texts["score_bands"] = "most_engaged: 175\nengaged: 50\npassive: 25\n"
    texts["trend"] = "points: [unclosed\n"
    answer = client.post("/app/definitions", data={**texts, "csrf": csrf(page), "action": "save"})
    body = answer.get_data(as_text=True)
    assert answer.status_code == 422 and "Nothing was saved" in body
    bands = re.search(r'<ul class="field-errors" id="e-score_bands">(.*?)</ul>', body, re.S)
    assert bands and "most_engaged" in bands.group(1)
    assert 'id="e-trend"' in body and "not valid YAML" in body
    assert 'aria-invalid="true" aria-describedby="e-score_bands"' in body
    with db.tenant_session(tenant_id) as session:
        assert len(session.scalars(select(DefinitionsVersion)).all()) == 1


def test_a_yaml_alias_bomb_in_the_form_is_refused_and_nothing_is_saved(admin, client, db):
    tenant_id, _ = admin
    page = client.get("/app/definitions")
    texts = sections_of(page)
    texts["trend"] = "x: &a [1, 1, 1, 1, 1, 1, 1, 1]\ny: &b [*a, *a, *a, *a, *a, *a, *a]\n"
    answer = client.post("/app/definitions", data={**texts, "csrf": csrf(page), "action": "save"})
    body = answer.get_data(as_text=True)
    assert answer.status_code == 422 and "anchors and aliases are not allowed" in body
    with db.tenant_session(tenant_id) as session:
        assert len(session.scalars(select(DefinitionsVersion)).all()) == 1


def test_preview_then_save_then_roll_back(admin, client, db):
    tenant_id, _ = admin
    page = client.get("/app/definitions")
    texts = sections_of(page)
    # Every plan counts as a trial, the thresholds drop to 1: Acme becomes a PQL.
    texts["pql"] = texts["pql"].replace("small: 80", "small: 1").replace("mid: 60", "mid: 1")
    texts["pql"] = re.sub(r"(simple:\n\s+small: )\d+", r"\g<1>1", texts["pql"])
    token = csrf(page)
    asked = client.post("/app/definitions", data={**texts, "csrf": token, "action": "preview"})
    # The preview is the worker's job: the page shows the draft and reloads until it is done.
    assert asked.status_code == 302 and "preview=" in asked.headers["Location"]
    waiting = client.get(asked.headers["Location"]).get_data(as_text=True)
    assert 'id="preview-pending"' in waiting and 'http-equiv="refresh"' in waiting
    assert "small: 1" in waiting  # the draft, not what is stored
    requested_scoring(db, lambda: NOW, "worker-1")
    body = client.get(asked.headers["Location"]).get_data(as_text=True)
    assert 'id="preview"' in body and 'http-equiv="refresh"' not in body
    assert re.search(r"<strong>1</strong> would become PQLs \(Acme\)", body), body[:2000]
    with db.tenant_session(tenant_id) as session:
        assert len(session.scalars(select(DefinitionsVersion)).all()) == 1  # not saved
    saved = client.post(
        "/app/definitions", data={**texts, "csrf": token, "action": "save", "note": "easier"}
    )
    assert saved.status_code == 302
    history = client.get(saved.headers["Location"]).get_data(as_text=True)
    assert "Saved as version 2" in history and "easier" in history
    back = client.post("/app/definitions/rollback", data={"csrf": token, "version": "1"})
    assert back.status_code == 302
    assert "Saved as version 3" in client.get(back.headers["Location"]).get_data(as_text=True)


def test_write_keys_are_revealed_and_rotated(app, admin, client, db):
    tenant_id, key = admin
    home = client.get("/app/")
    token = csrf(home)
    with db.tenant_session(tenant_id) as session:
        key_id = session.scalar(select(WriteKey.id))
    shown = client.post(f"/app/keys/{key_id}/reveal", data={"csrf": token})
    assert f'<code id="revealed-key">{key}</code>' in shown.get_data(as_text=True)
    assert shown.headers["Cache-Control"] == "no-store"
    # Shown in that answer only: not kept in the (signed, not encrypted) session cookie.
    cookie = client.get_cookie("pql_session").value
    kept = app.session_interface.get_signing_serializer(app).loads(cookie)
    assert key not in str(kept)
    assert key not in client.get("/app/").get_data(as_text=True)
    rotated = client.post(f"/app/keys/{key_id}/rotate", data={"csrf": token})
    page = rotated.get_data(as_text=True)
    fresh = re.search(r'<code id="revealed-key">([^<]+)</code>', page).group(1)
    assert fresh != key and f"Key {key_id} is revoked" in page
    with db.tenant_session(tenant_id) as session:
        keys = {k.id: k.revoked_at for k in session.scalars(select(WriteKey))}
    assert keys[key_id] is not None and len(keys) == 2


def test_accounts_sort_filter_and_detail(admin, client):
    listing = client.get("/app/accounts?sort=name&dir=asc&q=acm").get_data(as_text=True)
    assert "Acme" in listing and '<svg id="spectrum"' in listing
    assert "1 accounts" in listing
    assert "0 accounts" in client.get("/app/accounts?q=zzz").get_data(as_text=True)
    for wildcard in ("_", "%", "a_m"):  # matched every account before they were escaped
        page = client.get("/app/accounts", query_string={"q": wildcard})
        assert "0 accounts" in page.get_data(as_text=True), wildcard
    assert "0 accounts" in client.get("/app/accounts?pql=yes").get_data(as_text=True)
    detail = client.get("/app/accounts/acme").get_data(as_text=True)
    assert '<svg id="history"' in detail and "Created a report" in detail
    assert 'class="done">Created a report' in detail
    assert "https://app.hubspot.com/contacts/777/company/" not in detail  # not synced yet
    assert client.get("/app/accounts/nope").status_code == 404


def test_accounts_sort_by_the_crm_owner_and_stage(admin, client, db):
    from app.models import Account, CrmOwner, CrmRecord

    tenant_id, _ = admin
    with db.tenant_transaction(tenant_id) as session:
        for external_id, name in (("globex", "Globex"), ("initech", "Initech")):
            session.add(
                Account(
                    tenant_id=tenant_id,
                    external_id=external_id,
                    name=name,
                    traits={},
                    trait_times={},
                    first_seen_at=NOW,
                    last_seen_at=NOW,
                    changed_at=NOW,
                )
            )
        acme_id = session.scalar(select(Account.id).where(Account.external_id == "acme"))
        session.add(CrmOwner(tenant_id=tenant_id, owner_id="7", email="zed@x.test", name="Zed"))
        session.add(
            CrmRecord(
                tenant_id=tenant_id,
                object_type="account",
                subject_id=acme_id,
                crm_id="1",
                pushed={},
                failures=0,
                crm_fields={"owner_id": "7", "lifecycle_stage": "customer"},
            )
        )
    page = client.get("/app/accounts?sort=owner&dir=asc").get_data(as_text=True)
    assert "Zed" in page and 'data-sort="owner"' in page
    filtered = client.get("/app/accounts?owner=7&stage=customer").get_data(as_text=True)
    assert "1 accounts" in filtered and "Acme" in filtered
    assert "0 accounts" in client.get("/app/accounts?stage=lead").get_data(as_text=True)


def test_segments_show_members_and_a_distribution(admin, client):
    page = client.get("/app/segments?name=Most engaged&field=trait.plan").get_data(as_text=True)
    assert "Most engaged: 1 accounts" in page
    assert re.search(r"<td>trial</td><td>1</td>", page)


def test_an_admin_uninstalls_from_the_admin_pages_after_confirming(admin, client, db, sandbox):
    home = client.get("/app/")
    assert "Uninstall" in home.get_data(as_text=True)
    token = csrf(home)
    refused = client.post("/app/uninstall", data={"csrf": token})
    assert refused.status_code == 400
    done = client.post("/app/uninstall", data={"csrf": token, "confirm": "yes"})
    assert done.status_code == 200 and "uninstalled" in done.get_data(as_text=True)
    with db.system_session() as session:
        tenant = session.scalars(select(Tenant).where(Tenant.external_id == "777")).one()
    assert tenant.status == "uninstalled"
    assert sandbox.sandbox.stats["uninstalls"] == 1  # the app left the portal too
    assert client.get("/app/").status_code == 302  # this session is over


def test_the_uninstall_box_removes_the_apps_properties_from_hubspot(admin, client, db, sandbox):
    home = client.get("/app/")
    assert 'name="remove_crm_properties"' in home.get_data(as_text=True)
    portal = sandbox.sandbox.portals[777]
    assert portal.properties["companies"]  # created at the install
    done = client.post(
        "/app/uninstall",
        data={"csrf": csrf(home), "confirm": "yes", "remove_crm_properties": "yes"},
    )
    page = done.get_data(as_text=True)
    assert done.status_code == 200 and "properties and their values were deleted" in page
    assert not portal.properties["companies"] and not portal.properties["contacts"]
    assert not portal.groups["companies"]


def test_a_copied_session_cookie_stops_working_after_logout_and_after_a_reinstall(
    app, admin, client, db, sandbox
):
    copied = client.get_cookie("pql_session").value
    thief = app.test_client()
    thief.set_cookie("pql_session", copied)
    assert thief.get("/app/").status_code == 200
    client.post("/app/logout", data={"csrf": csrf(client.get("/app/"))})
    assert thief.get("/app/").status_code == 302  # the copy ended with the logout
    # Signed in again, then the app is uninstalled and installed again: old sessions end.
    install(client, 777)
    copied = client.get_cookie("pql_session").value
    thief.set_cookie("pql_session", copied)
    assert thief.get("/app/").status_code == 200
    tenant_id, _ = admin
    uninstall(app.extensions["pql"], tenant_id)
    install(client, 777)
    assert client.get("/app/").status_code == 200  # the new install's session works
    assert thief.get("/app/").status_code == 302


def test_the_event_catalogue_page_lists_events_traits_and_unknown_names(admin, client):
    page = client.get("/app/events")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'aria-current="page">Events</a>' in html
    assert "<code>Report Created</code>" in html and "weight 8 in profile Default" in html
    assert "<code>plan</code>" in html
    assert "Event <code>Demo Requested</code>: no event with this name has arrived yet" in html


def _yaml_sections(document) -> dict[str, str]:
    from app.web.admin.definitions import SECTIONS

    return {
        name: yaml.safe_dump(document.get(name), sort_keys=False, allow_unicode=True)
        for name, _ in SECTIONS
    }


def test_the_forms_save_what_the_yaml_page_saves(admin, client, db):
    tenant_id, _ = admin
    original = current_definitions(db, tenant_id).document
    page = client.get("/app/definitions/setup")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="trial-0-label"' in html and "Created a report" in html
    token = csrf(page)
    # Forms: the trial checklist loses its dashboard step, needs 2 reports within 14 days and
    # gains a trait step; then weights, time frame and the thresholds table.
    form = {"csrf": token, "section": "trial", "action": "save", "trial-rows": "7"}
    for i, step in enumerate(original["account_checklist_trial"]):
        prefix = f"trial-{i}"
        form.update(
            {
                f"{prefix}-key": step["key"],
                f"{prefix}-label": step["label"],
                f"{prefix}-kind": step["kind"],
                f"{prefix}-event": step["event"] or "",
                f"{prefix}-min_count": str(step["min_count"]),
            }
        )
    form["trial-0-min_count"], form["trial-0-within_days"] = "2", "14"
    form["trial-4-remove"] = "yes"
    form.update(
        {
            "trial-5-label": "Company size known",
            "trial-5-kind": "trait",
            "trial-5-trait": "employees",
            "trial-5-op": "gte",
            "trial-5-value": "1",
        }
    )
    assert client.post("/app/definitions/setup", data=form).status_code == 302
    profile = {"csrf": token, "section": "profiles", "action": "save", "p0-wrows": "8"}
    profile["p0-prows"] = "1"
    for i, (event, weight) in enumerate(original["profiles"][0]["weights"].items()):
        profile[f"p0-w{i}-event"], profile[f"p0-w{i}-weight"] = event, str(weight)
    profile["p0-w0-weight"] = "3"  # Logged In
    profile["p0-w7-event"], profile["p0-w7-weight"] = "Alert Created", "5"
    profile.update({"p0-time_frame_days": "30", "p0-pen0-points": "-5", "p0-pen0-days": "7"})
    profile["p0-pen0-event"] = "Logged In"
    assert client.post("/app/definitions/setup", data=profile).status_code == 302
    pql = {"csrf": token, "section": "pql", "action": "save", "complexity": "intermediate"}
    for complexity, row in original["pql"]["thresholds"].items():
        for size, value in row.items():
            pql[f"t-{complexity}-{size}"] = str(value)
    pql["t-intermediate-mid"] = "45"
    deal = original["deal_size"]
    pql.update({"deal-trait": deal["trait"], "deal-unknown": deal["unknown"]})
    pql.update({"deal-mid_from": str(deal["mid_from"]), "deal-large_from": "500"})
    for field in ("hand_raiser_events", "limit_events", "purchase_events"):
        pql[field] = "\n".join(original["pql"][field])
    pql["stage_trait"] = original["pql"]["stage_trait"]
    pql["trial_values"] = ", ".join(original["pql"]["trial_values"])
    pql["paid_values"] = ", ".join(original["pql"]["paid_values"])
    for size, value in deal["values"].items():
        pql[f"deal-value-{size}"] = str(value)
    pql["deal-value-large"] = "150000"
    assert client.post("/app/definitions/setup", data=pql).status_code == 302
    by_forms = current_definitions(db, tenant_id)

    # The YAML page, from the same starting point, saying the same.
    expected = copy.deepcopy(original)
    steps = expected["account_checklist_trial"]
    steps[0].update(min_count=2, within_days=14)
    del steps[4]
    steps.append(
        {
            "key": "company_size_known",
            "label": "Company size known",
            "kind": "trait",
            "trait": "employees",
            "op": "gte",
            "value": 1,
        }
    )
    expected["profiles"][0]["weights"].update({"Logged In": 3, "Alert Created": 5})
    expected["profiles"][0]["time_frame_days"] = 30
    expected["pql"]["complexity"] = "intermediate"
    expected["pql"]["thresholds"]["intermediate"]["mid"] = 45
    expected["deal_size"]["large_from"] = 500
    expected["deal_size"]["values"]["large"] = 150000
    page = client.get("/app/definitions")
    answer = client.post(
        "/app/definitions",
        data={"csrf": csrf(page), "action": "save", **_yaml_sections(expected)},
    )
    assert answer.status_code == 302
    by_yaml = current_definitions(db, tenant_id)
    assert by_yaml.version == by_forms.version + 1
    assert by_forms.document == by_yaml.document
    assert by_forms.document != original


def test_a_form_mistake_is_shown_next_to_its_field_and_nothing_is_saved(admin, client, db):
    tenant_id, _ = admin
    version = current_definitions(db, tenant_id).version
    page = client.get("/app/definitions/setup")
    form = {
        "csrf": csrf(page),
        "section": "trial",
        "action": "save",
        "trial-rows": "1",
        "trial-0-label": "Created reports",
        "trial-0-kind": "event_count",
        "trial-0-event": "Report Created",
        "trial-0-min_count": "0",
    }
    answer = client.post("/app/definitions/setup", data=form)
    html = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert re.search(r'id="trial-0-min_count"[^>]*aria-invalid="true"', html)
    assert 'id="e-trial-0-min_count"' in html
    assert current_definitions(db, tenant_id).version == version


def test_a_form_preview_is_a_job_and_saves_the_draft_it_scored(admin, client, db):
    tenant_id, _ = admin
    page = client.get("/app/definitions/setup")
    form = {"csrf": csrf(page), "section": "bands", "action": "preview"}
    form.update({"bands-most_engaged": "90", "bands-engaged": "50", "bands-passive": "25"})
    form.update({"trend-points": "10", "trend-new_days": "30", "trend-mature_days": "182"})
    form.update({"trend-recently_inactive_from_days": "30"})
    form.update({"trend-recently_inactive_to_days": "60"})
    answer = client.post("/app/definitions/setup", data=form)
    assert answer.status_code == 302 and "preview=" in answer.headers["Location"]
    assert current_definitions(db, tenant_id).document["score_bands"]["most_engaged"] == 75
    requested_scoring(db, lambda: NOW, "worker-1")
    shown = client.get(answer.headers["Location"])
    html = shown.get_data(as_text=True)
    assert "what saving this draft would change" in html
    job = re.search(r'name="job" value="(\d+)"', html).group(1)
    saved = client.post(
        "/app/definitions/setup/save-preview", data={"csrf": csrf(shown), "job": job}
    )
    assert saved.status_code == 302
    assert current_definitions(db, tenant_id).document["score_bands"]["most_engaged"] == 90


def test_the_first_run_guide_follows_the_install_to_the_first_crm_write(app, client, db):
    from app.sync.lifecycle import sync_tenant

    assert install(client, 778).status_code == 200
    with db.system_session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.external_id == "778"))

    def steps():
        status = client.get("/app/first-run").get_json()
        return status["done"], {s["key"]: s for s in status["steps"]}

    done, by_key = steps()
    assert not done
    assert by_key["installed"]["done"] and by_key["key"]["done"]
    assert not by_key["event"]["done"] and "Nothing has arrived yet" in by_key["event"]["detail"]
    home = client.get("/app/").get_data(as_text=True)
    assert '<details id="first-run" open>' in home and "analytics.host" in home
    assert 'id="step-event" class="undone"' in home

    acme(client, write_key_of(app, tenant_id))
    done, by_key = steps()
    assert by_key["event"]["done"] and not by_key["scored"]["done"]
    assert "waiting for the next scoring pass" in by_key["scored"]["detail"]

    recompute(db, tenant_id, NOW)
    done, by_key = steps()
    assert by_key["scored"]["done"] and not by_key["written"]["done"]
    assert "The next sync writes" in by_key["written"]["detail"]

    sync_tenant(app.extensions["pql"], tenant_id)
    done, by_key = steps()
    assert done and by_key["written"]["done"]
    assert by_key["written"]["link"].startswith("https://app.hubspot.com/contacts/778/company/")
    home = client.get("/app/").get_data(as_text=True)
    assert '<details id="first-run" >' in home and "is_pql" in home


def test_the_accounts_list_is_a_reps_worklist_with_a_csv_export(admin, app, client, db):
    tenant_id, key = admin
    send(
        client,
        key,
        [
            {
                "type": "group",
                "userId": "z-u",
                "groupId": "zeta",
                "traits": {"name": '=HYPERLINK("http://x")', "plan": "paid"},
            },
            {
                "type": "track",
                "userId": "z-u",
                "event": "Logged In",
                "context": {"groupId": "zeta"},
            },
        ],
    )
    recompute(db, tenant_id, NOW)
    with db.tenant_transaction(tenant_id) as session:
        accounts = select(CrmRecord).where(CrmRecord.object_type == "account")
        record = session.scalars(accounts).first()
        acme_id = session.scalar(select(Account.id).where(Account.external_id == "acme"))
        if record is None or record.subject_id != acme_id:
            record = CrmRecord(tenant_id=tenant_id, object_type="account", subject_id=acme_id)
            session.add(record)
        record.crm_id, record.crm_fields = "9001", {"owner_id": "101"}
        # Acme is a PQL with little engagement; zeta is busier but not a PQL.
        for score in session.scalars(select(AccountScore)):
            is_acme = score.account_id == acme_id
            score.pql, score.engagement_score = is_acme, 5.0 if is_acme else 90.0
            score.pql_reason = "Reached the 60% threshold" if is_acme else "Not a trial"
        session.merge(CrmOwner(tenant_id=tenant_id, owner_id="101", name="Sam Rep", email="sam@x"))
    html = client.get("/app/accounts").get_data(as_text=True)
    rows = re.findall(r'<tr>\s*<td><a href="/app/accounts/([^"]+)"', html)
    assert rows[0] == "acme"  # the PQL first, whatever its engagement
    assert 'class="muted reason">Reached the 60% threshold' in html  # why it is a PQL
    assert '<span title="Owner id 101">Sam Rep</span>' in html
    assert 'href="https://app.hubspot.com/contacts/777/company/9001"' in html
    assert re.search(
        r'<time datetime="[^"]+" title="[^"]+ UTC">(\d+ \w+ ago|just now)</time>', html
    )
    # Owner names on the account page and in a segment's distribution, ids on hover.
    detail = client.get("/app/accounts/acme").get_data(as_text=True)
    assert '<span title="Owner id 101" id="owner">Sam Rep</span>' in detail
    with db.tenant_session(tenant_id) as session:
        [name, *_] = session.get(AccountScore, acme_id).segments["names"]
    segment = client.get(f"/app/segments?name={name}&field=crm.owner_id")
    assert '<span title="Owner id 101">Sam Rep</span>' in segment.get_data(as_text=True)
    csv_answer = client.get("/app/accounts.csv?pql=no")
    assert csv_answer.mimetype == "text/csv"
    lines = csv_answer.get_data(as_text=True).splitlines()
    assert lines[0].startswith("account_id,name,pql,pql_reason")
    assert all(",yes," not in line for line in lines[1:])  # the filter applies
    assert any(line.startswith("zeta,\"'=HYPERLINK") for line in lines)  # no formula runs


def test_relative_times_read_like_people_say_them():
    import datetime as dt

    from app.web.timefmt import relative

    now = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    assert relative(now - dt.timedelta(seconds=20), now) == "just now"
    assert relative(now - dt.timedelta(minutes=3), now) == "3 minutes ago"
    assert relative(now - dt.timedelta(hours=1), now) == "1 hour ago"
    assert relative(now - dt.timedelta(days=9), now) == "1 week ago"
    assert relative(now + dt.timedelta(hours=2), now) == "in 2 hours"
    assert relative((now - dt.timedelta(days=1)).date(), now) == "yesterday"


def test_sync_now_writes_and_says_what_it_did_and_waits_for_a_running_worker(
    admin, app, client, db, sandbox
):
    import datetime as dt

    from app.jobs import leases

    tenant_id, _ = admin
    home = client.get("/app/")
    html = home.get_data(as_text=True)
    assert "No sync yet: the worker writes" in html
    # The worker holds the tenant's scoring lease: the button does not sync over it.
    assert leases.acquire(db, tenant_id, "score", "worker-1/push", dt.timedelta(minutes=1), NOW)
    busy = client.post("/app/sync", data={"csrf": csrf(home)}).get_data(as_text=True)
    assert "The worker is scoring or syncing this portal right now" in busy
    assert not sandbox.sandbox.portals[777].objects["companies"]
    leases.release(db, tenant_id, "score", "worker-1/push", NOW)
    done = client.post("/app/sync", data={"csrf": csrf(home)}).get_data(as_text=True)
    # Acme and its two users.
    assert 'id="sync-result">Synced just now: 3 records created and 0 updated in HubSpot' in done
    assert sandbox.sandbox.portals[777].objects["companies"]
    assert re.search(r"Last sync <time [^>]+>just now</time>: 3 records created", done)
    # The lease is free again for the worker.
    assert leases.acquire(db, tenant_id, "score", "worker-1/push", dt.timedelta(minutes=1), NOW)


def test_segments_and_lead_types_with_forms_equal_their_yaml(admin, client, db):
    tenant_id, _ = admin
    original = current_definitions(db, tenant_id).document
    page = client.get("/app/definitions/setup")
    html = page.get_data(as_text=True)
    assert 'id="s0-c0-field"' in html and '<option value="trait.plan">' in html
    form = {"csrf": csrf(page), "section": "segments", "action": "save", "segments-rows": "1"}
    form.update({"s0-name": "Busy trials", "s0-applies_to": "account", "s0-crows": "3"})
    form.update({"s0-c0-field": "engagement_score", "s0-c0-op": "gte", "s0-c0-value": "50"})
    form.update({"s0-c1-field": "trait.plan", "s0-c1-op": "in", "s0-c1-value": "trial, free"})
    form.update({"s0-c2-field": "crm.owner_id", "s0-c2-op": "exists"})
    assert client.post("/app/definitions/setup", data=form).status_code == 302
    lead = {"csrf": csrf(page), "section": "lead_types", "action": "save"}
    lead.update({"lead-activation_high": "80", "lead-activation_medium": "40"})
    lead.update({"lead-engagement_high": "60", "lead-engagement_medium": "30"})
    lead.update({"lead-fit_trait": "fit", "lead-poor_fit_value": "poor"})
    assert client.post("/app/definitions/setup", data=lead).status_code == 302
    by_forms = current_definitions(db, tenant_id).document

    expected = copy.deepcopy(original)
    expected["segments"] = [
        {
            "name": "Busy trials",
            "applies_to": "account",
            "conditions": [
                {"field": "engagement_score", "op": "gte", "value": 50},
                {"field": "trait.plan", "op": "in", "value": ["trial", "free"]},
                {"field": "crm.owner_id", "op": "exists"},
            ],
        }
    ]
    expected["lead_types"]["activation_high"] = 80
    page = client.get("/app/definitions")
    answer = client.post(
        "/app/definitions",
        data={"csrf": csrf(page), "action": "save", **_yaml_sections(expected)},
    )
    assert answer.status_code == 302
    assert current_definitions(db, tenant_id).document == by_forms

    # The forms show it back, and a mistake lands next to its field.
    shown = client.get("/app/definitions/setup").get_data(as_text=True)
    assert 'value="trial, free"' in shown and 'value="Busy trials"' in shown
    bad = {**lead, "csrf": csrf(page), "lead-activation_medium": "90"}
    refused = client.post("/app/definitions/setup", data=bad)
    assert refused.status_code == 422
    assert re.search(
        r'id="lead-activation_medium"[^>]*aria-invalid="true"', refused.get_data(as_text=True)
    )


def test_fit_on_the_accounts_page_and_the_fit_page(admin, client, db):
    tenant_id, _ = admin
    empty = client.get("/app/fit").get_data(as_text=True)
    assert 'id="empty"' in empty and "No fit rules yet" in empty
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["fit"]["rules"] = [
        {
            "label": "Company domain",
            "points": 90,
            "conditions": [{"field": "domain", "op": "ends_with", "value": ".example"}],
        }
    ]
    document["fit"]["disqualifiers"] = [
        {
            "label": "a competitor",
            "conditions": [{"field": "trait.name", "op": "equals", "value": "Rival"}],
        }
    ]
    save_definitions(db, tenant_id, document, "test")
    recompute(db, tenant_id, NOW)
    listing = client.get("/app/accounts?fit=A").get_data(as_text=True)
    assert '<span title="Fit A (90): Company domain (+90).">A' in listing
    assert "1 accounts" in listing
    assert "0 accounts" in client.get("/app/accounts?fit=D").get_data(as_text=True)
    page = client.get("/app/fit").get_data(as_text=True)
    assert "+90</strong> Company domain" in page and "Disqualifies:</strong> a competitor" in page
    assert 'id="backtest"' in page
    csv_text = client.get("/app/accounts.csv").get_data(as_text=True)
    assert ",90.0,A,Fit A (90): Company domain (+90).," in csv_text
    # The spectrum can colour its points by fit band, with a legend of the bands.
    coloured = client.get("/app/accounts?colour=fit").get_data(as_text=True)
    assert 'class="point group-0"' in coloured and ">Fit A</text>" in coloured
    assert ">Fit D</text>" in coloured and ">No fit band</text>" in coloured
    assert 'class="point group-0"' not in client.get("/app/accounts").get_data(as_text=True)


def test_fit_rules_with_the_form_equal_their_yaml(admin, client, db):
    tenant_id, _ = admin
    original = current_definitions(db, tenant_id).document
    page = client.get("/app/definitions/setup")
    assert 'id="fr0-label"' in page.get_data(as_text=True)
    form = {"csrf": csrf(page), "section": "fit", "action": "save"}
    form.update({"fr-rows": "2", "fd-rows": "1", "cap-rows": "1", "band-rows": "3"})
    form.update({"fr0-label": "Mid-size", "fr0-points": "60", "fr0-group": "size"})
    form.update({"fr0-crows": "1", "fr0-c0-field": "trait.employees", "fr0-c0-op": "gte"})
    form.update({"fr0-c0-value": "50"})
    form.update({"fr1-label": "Company domain", "fr1-points": "10", "fr1-crows": "1"})
    form.update({"fr1-c0-field": "domain", "fr1-c0-op": "exists"})
    form.update({"fd0-label": "personal email", "fd0-crows": "1", "fd0-c0-field": "domain"})
    form.update({"fd0-c0-op": "ends_with", "fd0-c0-value": "gmail.com, yahoo.com"})
    form.update({"cap0-group": "size", "cap0-points": "50"})
    form.update({"band0-name": "Good", "band0-min_score": "50"})
    form.update({"band1-name": "Weak", "band1-min_score": "0", "min_fit_band": "Good"})
    assert client.post("/app/definitions/setup", data=form).status_code == 302
    by_forms = current_definitions(db, tenant_id).document

    expected = copy.deepcopy(original)
    expected["fit"] = {
        "rules": [
            {
                "label": "Mid-size",
                "points": 60,
                "group": "size",
                "conditions": [{"field": "trait.employees", "op": "gte", "value": 50}],
            },
            {
                "label": "Company domain",
                "points": 10,
                "conditions": [{"field": "domain", "op": "exists"}],
            },
        ],
        "group_caps": {"size": 50},
        "disqualifiers": [
            {
                "label": "personal email",
                "conditions": [
                    {"field": "domain", "op": "ends_with", "value": ["gmail.com", "yahoo.com"]}
                ],
            }
        ],
        "bands": [{"name": "Good", "min_score": 50}, {"name": "Weak", "min_score": 0}],
    }
    expected["pql"]["min_fit_band"] = "Good"
    page = client.get("/app/definitions")
    answer = client.post(
        "/app/definitions",
        data={"csrf": csrf(page), "action": "save", **_yaml_sections(expected)},
    )
    assert answer.status_code == 302
    assert current_definitions(db, tenant_id).document == by_forms

    # A band order mistake, and a minimum band that is not a band, are shown where they are.
    bad = {**form, "band0-min_score": "0", "band1-min_score": "50"}
    refused = client.post("/app/definitions/setup", data=bad)
    assert refused.status_code == 422
    assert 'id="e-fit-bands"' in refused.get_data(as_text=True)
    bad = {**form, "min_fit_band": "Gold"}
    refused = client.post("/app/definitions/setup", data=bad).get_data(as_text=True)
    assert re.search(r'id="min_fit_band"[^>]*aria-invalid="true"', refused)


def test_a_preview_made_before_another_save_cannot_undo_it(admin, client, db):
    tenant_id, _ = admin
    page = client.get("/app/definitions/setup")
    form = {"csrf": csrf(page), "section": "bands", "action": "preview"}
    form.update({"bands-most_engaged": "90", "bands-engaged": "50", "bands-passive": "25"})
    form.update({"trend-points": "10", "trend-new_days": "30", "trend-mature_days": "182"})
    form.update({"trend-recently_inactive_from_days": "30"})
    form.update({"trend-recently_inactive_to_days": "60"})
    asked = client.post("/app/definitions/setup", data=form)
    job = asked.headers["Location"].split("preview=")[1]
    # Meanwhile another part is saved.
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["key_features"] = ["Report Created"]
    saved = save_definitions(db, tenant_id, document, "someone else")
    answer = client.post(
        "/app/definitions/setup/save-preview", data={"csrf": csrf(page), "job": job}
    )
    assert answer.status_code == 409
    assert "changed since this preview" in answer.get_data(as_text=True)
    assert current_definitions(db, tenant_id).version == saved.version
