"""The README's demo: a development tenant, sample product events sent over HTTP to the running
service exactly as a Segment SDK would, and what the service made of them."""

from __future__ import annotations

import base64
import gzip
import json
import random
import time
import urllib.error
import urllib.request
from collections import defaultdict

import click
from flask.cli import with_appcontext
from sqlalchemy import func, select

from app import services
from app.models import (
    Account,
    AccountEventDay,
    AccountMembership,
    AccountScore,
    Tenant,
    WriteKey,
    utcnow,
)
from app.sample_data import demo_messages
from app.scoring_jobs import recompute
from app.tenants import create_tenant, issue_write_key

DEMO_TENANT_NAME = "Demo workspace"


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


def demo_tenant_with_fresh_key() -> tuple[int, str]:
    """The demo tenant (made on first run) and a new write key; earlier demo keys are revoked."""
    db = services().db
    with db.system_session() as session:
        tenant = session.scalar(select(Tenant).where(Tenant.name == DEMO_TENANT_NAME))
    if tenant is None:
        tenant = create_tenant(db, DEMO_TENANT_NAME)
    with db.tenant_transaction(tenant.id) as session:
        for key in session.scalars(
            select(WriteKey).where(WriteKey.label == "demo", WriteKey.revoked_at.is_(None))
        ):
            key.revoked_at = utcnow()
    return tenant.id, issue_write_key(db, tenant.id, label="demo").secret


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
            "lead_type": f"{score.lead_type} ({score.chance_to_convert}% to convert)",
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


@click.command("demo", help="Run the demo against a running service.")
@click.option("--url", "base_url", default="http://127.0.0.1:5000", show_default=True)
@with_appcontext
def demo_command(base_url: str) -> None:
    base_url = base_url.rstrip("/")
    wait_until_ready(base_url)
    tenant_id, write_key = demo_tenant_with_fresh_key()
    click.echo(f"Demo tenant {tenant_id}; write key: {write_key}")
    now = utcnow()
    # Seeded by the date: re-running the demo on one day re-sends the same messageIds, which
    # the service stores once, as it would an SDK's retries.
    messages = demo_messages(random.Random(f"demo-{now.date()}"), now)
    sent = send_batches(base_url, write_key, messages)
    click.echo(f"Sent {sent} messages (identify, group, track) to {base_url}/v1/batch")
    click.echo("Accounts, users and event counts the service built from them:")
    click.echo(json.dumps(account_summary(tenant_id), indent=2))
    summary = recompute(services().db, tenant_id, services().clock())
    click.echo(
        f"Scored {summary.accounts} accounts and {summary.users} users "
        f"(definitions version {summary.definitions_version}). Per account:"
    )
    click.echo(json.dumps(account_scores(tenant_id), indent=2))
