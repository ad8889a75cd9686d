"""The admin UI in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
signing in through the install flow against the HubSpot sandbox, a definitions edit with a
validation error and then a valid save, the accounts list's sort and filter, the account
detail's chart."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import select

from app.models import Tenant
from app.scores.scoring_pass import recompute
from sandbox.hubspot import app_env as hubspot_env
from tests.helpers.hubspot import NOW, acme, send

CHROMIUM = os.environ.get("PQL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def app(make_app, sandbox, unused_port):
    return make_app(
        clock=lambda: NOW,
        **hubspot_env(sandbox.url),
        PUBLIC_URL=f"http://127.0.0.1:{unused_port}",
    )


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: scripts/test installs Debian's chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, served, app, db, sandbox):
    """Signed in: the browser went through the install (service → sandbox consent →
    callback), and the tenant has three scored accounts."""
    page = browser.new_page()
    sandbox.sandbox.portal(777)  # an account of the admin's, offered on the consent screen
    page.goto(f"{served}/hubspot/install")
    page.get_by_role("link", name="Portal 777").click()
    expect(page.locator("h1")).to_have_text("Installed in HubSpot portal 777")
    key = page.locator("pre").inner_text().strip()
    with db.system_session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.external_id == "777"))
    client = app.test_client()
    acme(client, key)
    for group, name, reports in (("globex", "Globex", 1), ("initech", "Initech", 6)):
        send(
            client,
            key,
            [
                {
                    "type": "group",
                    "userId": f"{group}-u",
                    "groupId": group,
                    "traits": {"name": name, "plan": "trial"},
                },
                *[
                    {
                        "type": "track",
                        "userId": f"{group}-u",
                        "event": "Report Created",
                        "context": {"groupId": group},
                    }
                    for _ in range(reports)
                ],
            ],
        )
    recompute(db, tenant_id, NOW)
    page.served = served
    yield page
    page.close()


def test_signing_in_through_the_install_reaches_the_admin_home(page):
    page.get_by_role("link", name="Open the admin pages").click()
    expect(page.locator("h1")).to_have_text("HubSpot portal 777")
    expect(page.locator("#events-today")).not_to_have_text("0")
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("h1")).to_have_text("Sign in")
    page.goto(f"{page.served}/app/accounts")
    expect(page.locator("h1")).to_have_text("Sign in")  # the session is gone


def test_a_definitions_error_then_a_valid_save(page):
    page.goto(f"{page.served}/app/definitions")
    bands = page.get_by_label("Engagement bands")
    bands.fill("most_engaged: 150\nengaged: 50\npassive: 25\n")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#has-errors")).to_be_visible()
    expect(page.locator("#e-score_bands")).to_contain_text("most_engaged")
    expect(page.get_by_label("Engagement bands")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Engagement bands").fill("most_engaged: 80\nengaged: 50\npassive: 25\n")
    page.get_by_label("Note for the history").fill("Stricter top band")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#saved")).to_contain_text("Saved as version 2")
    expect(page.get_by_role("table", name="Definitions history")).to_contain_text(
        "Stricter top band"
    )


def test_the_accounts_list_sorts_and_filters(page):
    page.goto(f"{page.served}/app/accounts")
    names = page.locator("#accounts tbody tr td:first-child")
    expect(names).to_have_count(3)
    page.locator('a[data-sort="name"]').click()  # descending first
    expect(names).to_have_text(["Initech", "Globex", "Acme"])
    page.locator('a[data-sort="name"]').click()
    expect(names).to_have_text(["Acme", "Globex", "Initech"])
    page.get_by_label("Name").fill("glob")
    page.get_by_role("button", name="Filter").click()
    expect(names).to_have_text(["Globex"])
    expect(page.locator("#count")).to_contain_text("1 accounts")
    expect(page.locator("#spectrum a circle")).to_have_count(1)
    expect(page.locator("#spectrum text.legend")).to_have_text(["PQL", "Not a PQL"])


def test_the_account_detail_chart_renders(page):
    page.goto(f"{page.served}/app/accounts")
    page.get_by_role("link", name="Acme", exact=True).click()
    chart = page.locator("svg#history")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 150
    expect(chart.locator("circle.line-a")).to_have_count(2)  # one day of history + legend
    expect(chart.locator("text.legend")).to_have_text(["Engagement score", "Activation rate"])
    expect(page.locator("svg#spectrum")).to_have_count(0)
    expect(page.locator("#checklist li.done")).to_contain_text(["Created a report"])


def test_the_event_catalogue_by_keyboard_on_a_narrow_window(page):
    page.set_viewport_size({"width": 380, "height": 800})
    page.goto(f"{page.served}/app/")
    nav = page.get_by_role("navigation", name="Main").get_by_role("link", name="Events")
    nav.focus()
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Event catalogue")
    expect(page.get_by_role("table").first).to_contain_text("Report Created")
    # The wide table scrolls inside its box: the page itself does not scroll sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= 380 + 1


def test_a_new_admin_sets_up_scoring_with_forms_not_yaml(page, app, db):
    """The trial checklist, the weights (through a preview) and the PQL thresholds, with the
    mouse and keyboard only; the saved document is the one the YAML path gives for the same
    changes, and the forms then show what the YAML page saves."""
    import copy

    from app.jobs.tenant_jobs import requested_scoring
    from app.scores.definitions_store import current_definitions, parse_document, to_document

    with db.system_session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.external_id == "777"))
    original = current_definitions(db, tenant_id).document
    page.goto(f"{page.served}/app/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Definitions").click()
    expect(page.locator("h1")).to_contain_text("Set up scoring")

    trial = page.locator("form#trial")
    trial.get_by_role("group", name="Step 1").get_by_label("Times or users (N)").fill("2")
    new = trial.get_by_role("group", name="Step 6")
    new.get_by_label("Step 6 (new)").fill("Company size known")
    new.get_by_label("Kind").select_option(label="a trait condition")
    new.get_by_label("Trait", exact=True).fill("employees")
    new.get_by_label("Condition").select_option(label="at least")
    new.get_by_label("Value", exact=True).fill("1")
    trial.get_by_role("button", name="Save without preview").click()
    expect(page.locator("#saved")).to_be_visible()

    weights = page.locator("form#profiles")
    weights.get_by_label("Logged In", exact=True).fill("3")
    weights.get_by_label("Another event (1)").fill("Alert Created")
    weights.get_by_label("Its weight (1)").fill("5")
    weights.get_by_label("Time frame", exact=True).select_option(label="30 days")
    weights.get_by_role("button", name="Preview the effect").click()
    expect(page.locator("#preview-pending")).to_be_visible()
    requested_scoring(db, lambda: NOW, "worker-1")  # the worker's round
    expect(page.locator("#preview")).to_be_visible(timeout=10_000)  # the page reloads itself
    page.get_by_role("button", name="Save this draft").click()
    expect(page.locator("#saved")).to_be_visible()

    pql = page.locator("form#pql")
    pql.get_by_label("Product complexity").select_option(value="intermediate")
    pql.get_by_label("Intermediate, mid deal: Activation %").fill("45")
    pql.get_by_role("button", name="Save without preview").click()
    expect(page.locator("#saved")).to_be_visible()

    expected = copy.deepcopy(original)
    expected["account_checklist_trial"][0]["min_count"] = 2
    expected["account_checklist_trial"].append(
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
    saved = current_definitions(db, tenant_id)
    assert saved.document == to_document(parse_document(expected))

    # The other way: a change made as YAML shows in the forms.
    page.get_by_role("link", name="Advanced: edit everything as YAML").click()
    page.get_by_label("Engagement bands").fill("most_engaged: 80\nengaged: 50\npassive: 25\n")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#saved")).to_be_visible()
    page.goto(f"{page.served}/app/definitions/setup")
    expect(page.get_by_label("Most engaged: above")).to_have_value("80.0")
    expect(page.locator("form#trial").get_by_role("group", name="Step 6")).to_be_visible()


def test_the_first_run_guide_from_install_to_the_first_crm_write(browser, served, app, db, sandbox):
    """A new admin: installs, opens the admin pages, reveals the key into the snippets, and
    watches the guide tick its steps by itself as the first events arrive, then the worker's
    pass and sync (run here), ending on a link to the record in HubSpot."""
    from app.sync.lifecycle import sync_tenant

    page = browser.new_page()
    sandbox.sandbox.portal(779)
    page.goto(f"{served}/hubspot/install")
    page.get_by_role("link", name="Portal 779").click()
    key = page.locator("pre").inner_text().strip()
    page.get_by_role("link", name="Open the admin pages").click()
    guide = page.locator("#first-run")
    expect(guide.locator("#step-installed")).to_have_class("done")
    expect(guide.locator("#step-event")).to_have_class("undone")
    expect(guide.locator("#step-event .detail")).to_contain_text("Nothing has arrived yet")
    page.get_by_role("button", name="Reveal").first.click()
    guide.get_by_text("Segment's Python SDK (analytics-python)").click()
    expect(guide.locator("pre").first).to_contain_text(f'analytics.write_key = "{key}"')

    with db.system_session() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.external_id == "779"))
    acme(app.test_client(), key)
    # No reload: the page asks every 5 seconds.
    expect(guide.locator("#step-event")).to_have_class("done", timeout=15_000)
    recompute(db, tenant_id, NOW)
    expect(guide.locator("#step-scored")).to_have_class("done", timeout=15_000)
    sync_tenant(app.extensions["pql"], tenant_id)
    expect(guide.locator("#step-written")).to_have_class("done", timeout=15_000)
    page.reload()
    link = page.locator("#step-written a")
    expect(link).to_have_attribute("href", re.compile(r"^https://app\.hubspot\.com/contacts/779/"))
    expect(page.locator("#first-run")).not_to_have_attribute("open", "")
    page.close()


SCREENS = (
    ("home", "/app/"),
    ("definitions-forms", "/app/definitions/setup"),
    ("definitions-yaml", "/app/definitions"),
    ("events", "/app/events"),
    ("accounts", "/app/accounts"),
    ("account", "/app/accounts/acme"),
    ("fit", "/app/fit"),
    ("segments", "/app/segments?name=Most%20engaged"),
    ("triggers", "/app/triggers"),
)


@pytest.mark.parametrize("width", [1280, 390])
def test_every_admin_page_at_desktop_and_narrow_widths(page, width, tmp_path):
    """Each page renders at both widths without the page scrolling sideways (wide tables
    scroll in their own box). Screenshots go to PQL_SCREENSHOTS (the README's come from
    there) or a temporary directory."""
    folder = os.environ.get("PQL_SCREENSHOTS") or str(tmp_path)
    page.set_viewport_size({"width": width, "height": 900})
    for name, path in SCREENS:
        answer = page.goto(f"{page.served}{path}")
        assert answer and answer.status == 200, path
        expect(page.locator("h1")).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width + 1, (path, overflow)
        page.screenshot(path=f"{folder}/{name}-{width}.png")
