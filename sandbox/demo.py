"""The README's demo: the app installed into HubSpot and into Salesforce (the local sandboxes
by default), sample product events sent over HTTP to the running service exactly as a Segment
SDK would, and what the worker made of them in each CRM: properties (fields), an owner learnt
back from the CRM, a CS task."""

from __future__ import annotations

import base64
import gzip
import json
import random
import ssl
import time
import urllib.error
import urllib.request
from collections import defaultdict

import click
from sqlalchemy import func, select

from app import create_app
from app.models import (
    Account,
    AccountEventDay,
    AccountMembership,
    AccountScore,
    Tenant,
    utcnow,
)
from app.scores.scoring_pass import recompute
from app.services import services
from app.tenants import issue_write_key
from sandbox.browser import install_page, write_key_on
from sandbox.sample_data import demo_messages


def wait_until_ready(base_url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last_error = exc.read().decode(errors="replace")
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.3)
    raise click.ClickException(
        f"service at {base_url} not ready after {timeout:.0f}s: {last_error}"
    )


def send_batches(base_url: str, write_key: str, messages: list[dict], size: int = 100) -> int:
    """POST the messages to /v1/batch as RudderStack's SDK does (Basic auth, gzip)."""
    auth = base64.b64encode(f"{write_key}:".encode()).decode()
    sent = 0
    for start in range(0, len(messages), size):
        body = gzip.compress(json.dumps({"batch": messages[start : start + size]}).encode())
        request = urllib.request.Request(
            f"{base_url}/v1/batch",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "Authorization": f"Basic {auth}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                json.load(response)
        except urllib.error.HTTPError as exc:
            raise click.ClickException(
                f"/v1/batch answered {exc.code}: {exc.read().decode(errors='replace')}"
            ) from exc
        sent += len(messages[start : start + size])
    return sent


def account_scores(tenant_id: int) -> list[dict]:
    """The traits scoring produced per account: what goes into the CRM."""
    db = services().db
    with db.tenant_session(tenant_id) as session:
        rows = session.execute(
            select(Account.name, AccountScore)
            .join(AccountScore, AccountScore.account_id == Account.id)
            .order_by(AccountScore.engagement_score.desc())
        ).all()
    return [
        {
            "account": name,
            "activation_rate": score.activation_rate,
            "next_step": score.next_step,
            "engagement_score": score.engagement_score,
            "engagement_segment": score.engagement_segment,
            "active_users": f"{score.active_users} of {score.total_users}",
            "pql": score.pql,
            "pql_reason": score.pql_reason,
            "lead_type": (
                f"{score.lead_type} ({score.chance_to_convert}% to convert)"
                if score.lead_type
                else "none (a paying account has converted)"
            ),
            "segments": score.segments.get("names", []),
        }
        for name, score in rows
    ]


def account_summary(tenant_id: int) -> list[dict]:
    """What the service now knows per account: traits, members, event counts."""
    db = services().db
    with db.tenant_session(tenant_id) as session:
        accounts = session.scalars(select(Account).order_by(Account.name)).all()
        members = dict(
            session.execute(
                select(AccountMembership.account_id, func.count()).group_by(
                    AccountMembership.account_id
                )
            ).all()
        )
        counts: dict[int, dict[str, int]] = defaultdict(dict)
        for account_id, event, total in session.execute(
            select(
                AccountEventDay.account_id, AccountEventDay.event, func.sum(AccountEventDay.count)
            )
            .group_by(AccountEventDay.account_id, AccountEventDay.event)
            .order_by(AccountEventDay.event)
        ):
            counts[account_id][event] = int(total)
    return [
        {
            "account": a.name or a.external_id,
            "domain": a.domain,
            "plan": a.traits.get("plan"),
            "employees": a.traits.get("employees"),
            "users": members.get(a.id, 0),
            "last_seen": a.last_seen_at.isoformat(timespec="minutes"),
            "events": counts.get(a.id, {}),
        }
        for a in accounts
    ]


def install_in_sandbox(base_url: str, hub_id: int = 1234567) -> str:
    """Click through the install as an admin's browser would (service → sandbox consent, where
    the admin picks the portal → callback); returns the write key the install page shows."""
    try:
        return write_key_on(install_page(f"{base_url}/hubspot/install", {"hub_id": str(hub_id)}))
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc


def assign_owner_in_sandbox(svc, tenant_id: int, portal: int, name: str, owner: str) -> None:
    """A sales rep assigns a company to an owner in HubSpot: the sandbox notifies the app by
    a signed webhook, and the CS task for that company goes to that owner."""
    from app.models import CrmRecord

    with svc.db.tenant_session(tenant_id) as session:
        crm_id = session.scalar(
            select(CrmRecord.crm_id)
            .join(Account, Account.id == CrmRecord.subject_id)
            .where(CrmRecord.object_type == "account", Account.name == name)
        )
    body = {
        "hub_id": portal,
        "object_type": "companies",
        "object_id": crm_id,
        "property": "hubspot_owner_id",
        "value": owner,
    }
    request = urllib.request.Request(
        f"{svc.settings.hubspot_base_url}/_sandbox/change",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30):
        pass

    def applied():
        with svc.db.tenant_session(tenant_id) as session:
            fields = session.scalar(
                select(CrmRecord.crm_fields).where(
                    CrmRecord.object_type == "account", CrmRecord.crm_id == crm_id
                )
            )
        return (fields or {}).get("owner_id") == owner

    wait_for("the owner change webhook", applied, 30)
    click.echo(f"In HubSpot, {name} was assigned to owner {owner} (received by webhook).")


def hubspot_tenant(hub_id: int | None = None) -> int | None:
    with services().db.system_session() as session:
        query = select(Tenant.id).where(Tenant.crm == "hubspot", Tenant.status == "active")
        if hub_id is not None:
            query = query.where(Tenant.external_id == str(hub_id))
        return session.scalar(query.order_by(Tenant.id.desc()).limit(1))


def wait_for(what: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1.0)
    raise click.ClickException(f"timed out after {timeout:.0f}s waiting for {what}")


def backfill_history(tenant_id: int, now) -> None:
    """Score as on a week ago (a point of history for the engagement chart; the trend itself
    is recomputed from the rollups), then everyone again, under the scoring lease so the
    worker does not run the tenant meanwhile."""
    import datetime as dt

    from app.jobs import leases
    from app.jobs.tenant_jobs import SCORING_LEASE

    db = services().db
    wait_for(
        "the scoring lease",
        lambda: leases.acquire(db, tenant_id, "score", "demo", SCORING_LEASE, utcnow()),
        120,
    )
    try:
        week_ago = dt.datetime.combine((now - dt.timedelta(days=7)).date(), dt.time(23, 59), dt.UTC)
        recompute(db, tenant_id, week_ago, full=True)
        recompute(db, tenant_id, now, full=True)
    finally:
        leases.release(db, tenant_id, "score", "demo", utcnow())


# The fit rules the demo's admin sets up (a starting point for a B2B product; the README's
# fit section explains them): company size in one capped group, personal email domains out.
DEMO_FIT = {
    "rules": [
        {
            "label": "50 to 999 employees",
            "points": 60,
            "group": "size",
            "conditions": [{"field": "trait.employees", "op": "gte", "value": 50}],
        },
        {
            "label": "1,000+ employees",
            "points": 30,
            "group": "size",
            "conditions": [{"field": "trait.employees", "op": "gte", "value": 1000}],
        },
        {
            "label": "On a company domain",
            "points": 10,
            "conditions": [{"field": "domain", "op": "exists"}],
        },
    ],
    "group_caps": {"size": 80},
    "disqualifiers": [
        {
            "label": "personal email domain",
            "conditions": [
                {
                    "field": "domain",
                    "op": "ends_with",
                    "value": ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com"],
                }
            ],
        }
    ],
}


def set_demo_fit_rules(tenant_id: int) -> None:
    """The admin's fit rules (through the same store as the admin pages)."""
    from app.scores.definitions_store import (
        current_definitions,
        save_definitions,
        to_document,
    )

    db = services().db
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["fit"] = {**document["fit"], **DEMO_FIT}
    save_definitions(db, tenant_id, document, "demo", "fit rules")


SHOWN_TRAITS = (
    "activation_rate",
    "next_step",
    "engagement_score",
    "engagement_segment",
    "trend",
    "is_pql",
    "pql_reason",
    "lead_type",
    "active_users",
    "fit_band",
    "fit_reason",
)


def crm_view(tenant_id: int) -> dict:
    """What the CRM now shows: the accounts' properties (HubSpot companies, Salesforce
    Accounts) and the tasks, read back through the CRM's API."""
    from app.models import CrmRecord, CsTask
    from app.sync.lifecycle import connector_for

    svc = services()
    prefix = svc.settings.property_prefix
    with svc.db.tenant_session(tenant_id) as session:
        ids = list(
            session.scalars(
                select(CrmRecord.crm_id).where(
                    CrmRecord.object_type == "account", CrmRecord.crm_id.is_not(None)
                )
            )
        )
        tasks = session.scalars(select(CsTask)).all()
    connector = connector_for(svc, tenant_id)
    shown = ["name", "domain", "owner_id"] + [f"{prefix}{f}" for f in SHOWN_TRAITS]
    records = connector.read(connector.account_type, ids, shown)
    return {
        "accounts": [
            {name: r.properties.get(name) for name in shown} | {"crm_id": r.crm_id} for r in records
        ],
        "tasks": [
            {"subject": t.subject, "owner": t.owner_id, "crm_id": t.crm_task_id, "body": t.body}
            for t in tasks
        ],
    }


# --- Salesforce ------------------------------------------------------------------------------


def _sandbox_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    bundle = services().settings.salesforce_ca_bundle
    if bundle:
        context.load_verify_locations(bundle)
    return context


def install_in_salesforce_sandbox(base_url: str) -> tuple[str, str]:
    """The admin's browser: service → the Salesforce sandbox's login (HTTPS, a new org) →
    callback. Returns the write key and the org id the install page shows."""
    page = install_page(f"{base_url}/salesforce/install", {"org": "new"}, tls=_sandbox_tls())
    try:
        key = write_key_on(page)
    except RuntimeError as exc:
        raise click.ClickException(f"the Salesforce install: {exc}") from exc
    return key, page.split("Salesforce org ")[1].split("<")[0].strip()


def salesforce_tenant(org: str | None = None) -> int | None:
    with services().db.system_session() as session:
        query = select(Tenant.id).where(Tenant.crm == "salesforce", Tenant.status == "active")
        if org is not None:
            query = query.where(Tenant.external_id == org)
        return session.scalar(query.order_by(Tenant.id.desc()).limit(1))


def _sandbox_post(path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{services().settings.salesforce_login_url}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30, context=_sandbox_tls()) as response:
        return json.load(response)


def assign_salesforce_owner(svc, tenant_id: int, org: str, name: str) -> str:
    """A sales rep (a new Salesforce user) takes over an Account; the worker's next pull (every
    PULL_INTERVAL_SECONDS) learns it; the demo runs that pull now. Returns the user's id."""
    from app.models import CrmRecord
    from app.sync.lifecycle import pull_tenant

    rep = _sandbox_post(
        f"/_sandbox/orgs/{org}/change",
        {
            "sobject": "User",
            "fields": {
                "Name": "Sam Success",
                "Email": "sam@example.com",
                "IsActive": True,
                "UserType": "Standard",
            },
        },
    )["id"]
    with svc.db.tenant_session(tenant_id) as session:
        crm_id = session.scalar(
            select(CrmRecord.crm_id)
            .join(Account, Account.id == CrmRecord.subject_id)
            .where(CrmRecord.object_type == "account", Account.name == name)
        )
    _sandbox_post(
        f"/_sandbox/orgs/{org}/change",
        {"sobject": "Account", "id": crm_id, "fields": {"OwnerId": rep, "Type": "Customer"}},
    )
    pull_tenant(svc, tenant_id)
    click.echo(f"In Salesforce, {name} was assigned to Sam Success ({rep}); pulled back.")
    return rep


def _wait_for_push(svc, tenant_id: int, crm: str, now, timeout: float) -> None:
    from app.models import CrmRecord

    def pushed():
        with svc.db.tenant_session(tenant_id) as session:
            return session.scalar(
                select(func.count()).where(
                    CrmRecord.object_type == "account", CrmRecord.pushed_at.is_not(None)
                )
            )

    click.echo(f"Waiting for the worker to score the accounts and push them to {crm} ...")
    count = wait_for(f"the first push to {crm}", pushed, timeout)
    click.echo(f"{count} accounts written to {crm}.")
    return count


def _wait_for_task(svc, tenant_id: int, crm: str, now, timeout: float) -> None:
    from app.models import CsTask

    click.echo("Storing last week's scores for the engagement chart ...")
    backfill_history(tenant_id, now)

    def task_made():
        with svc.db.tenant_session(tenant_id) as session:
            return session.scalar(select(func.count()).select_from(CsTask))

    click.echo(f"Waiting for the worker to push the trend and open a task in {crm} ...")
    wait_for(f"the CS task in {crm}", task_made, timeout)
    click.echo(json.dumps(crm_view(tenant_id), indent=2))


def _installed_by_browser(base_url: str, path: str, find_tenant) -> tuple[int, str]:
    """With a real CRM app: the admin approves in a browser; the demo waits for the tenant and
    gives itself a write key."""
    click.echo(f"Open {base_url}{path} in a browser and approve the app ...")
    tenant_id = wait_for("the install", find_tenant, 600)
    click.echo(f"Installed: tenant {tenant_id}")
    return tenant_id, issue_write_key(services().db, tenant_id, label="demo").secret


def _send_sample_events(base_url: str, key: str):
    now = utcnow()
    messages = demo_messages(random.Random(f"demo-{now.date()}"), now)
    sent = send_batches(base_url, key, messages)
    click.echo(f"Sent {sent} product events (identify, group, track) to {base_url}/v1/batch")
    return now


def hubspot_demo(base_url: str, timeout: float) -> None:
    svc = services()
    sandbox = svc.settings.hubspot_client_id == "sandbox-client"
    if sandbox:
        # A new sandbox portal per run: the sandbox keeps nothing between runs.
        portal = 1_000_000 + int(time.time()) % 9_000_000
        key = install_in_sandbox(base_url, portal)
        tenant_id = hubspot_tenant(portal)
        click.echo(f"Installed into the HubSpot sandbox (portal {portal}): tenant {tenant_id}")
    else:
        tenant_id, key = _installed_by_browser(base_url, "/hubspot/install", hubspot_tenant)
    set_demo_fit_rules(tenant_id)
    now = _send_sample_events(base_url, key)
    click.echo(json.dumps(account_summary(tenant_id), indent=2))
    _wait_for_push(svc, tenant_id, "HubSpot", now, timeout)
    if sandbox:
        assign_owner_in_sandbox(svc, tenant_id, portal, "Umbrella", "101")
    _wait_for_task(svc, tenant_id, "HubSpot", now, timeout)
    if sandbox:
        click.echo(f"Browse the sandbox's records at {svc.settings.hubspot_base_url}/")
        click.echo(
            f"Admin pages for this portal: open {base_url}/hubspot/install and choose portal "
            f"{portal} (it signs you in and lands on /app/)"
        )


def salesforce_demo(base_url: str, timeout: float) -> None:
    svc = services()
    sandbox = svc.settings.salesforce_client_id == "sandbox-client"
    if sandbox:
        key, org = install_in_salesforce_sandbox(base_url)
        tenant_id = salesforce_tenant(org)
        click.echo(f"Installed into the Salesforce sandbox (org {org}): tenant {tenant_id}")
    else:
        tenant_id, key = _installed_by_browser(base_url, "/salesforce/install", salesforce_tenant)
    set_demo_fit_rules(tenant_id)
    now = _send_sample_events(base_url, key)
    _wait_for_push(svc, tenant_id, "Salesforce", now, timeout)
    if sandbox:
        assign_salesforce_owner(svc, tenant_id, org, "Umbrella")
    _wait_for_task(svc, tenant_id, "Salesforce", now, timeout)
    if sandbox:
        click.echo(
            f"Admin pages for this org: open {base_url}/salesforce/install (log in to {org}) "
            "(it signs you in and lands on /app/)"
        )


@click.command("demo", help="Run the demo against a running service (web + worker).")
@click.option("--url", "base_url", default="http://127.0.0.1:5000", show_default=True)
@click.option("--timeout", default=180.0, show_default=True, help="seconds to wait for the worker")
@click.option(
    "--crm",
    type=click.Choice(["both", "hubspot", "salesforce"]),
    default="both",
    show_default=True,
)
def main(base_url: str, timeout: float, crm: str) -> None:
    """``python -m sandbox.demo``: the demo with the service's configuration (the same
    environment as the web and worker processes)."""
    with create_app().app_context():
        run_demo(base_url, timeout, crm)


def run_demo(base_url: str, timeout: float, crm: str) -> None:
    """Install the app into HubSpot and Salesforce (the local sandboxes unless their client ids
    are set), send a fortnight of product events, and show the worker turning them into CRM
    properties and a CS task in each."""
    base_url = base_url.rstrip("/")
    wait_until_ready(base_url)
    if crm in ("both", "hubspot"):
        click.echo("== HubSpot")
        hubspot_demo(base_url, timeout)
    if crm in ("both", "salesforce"):
        click.echo("== Salesforce")
        salesforce_demo(base_url, timeout)


if __name__ == "__main__":
    main()
