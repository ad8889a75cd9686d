"""The README's demo: a development tenant, sample product events sent over HTTP to the running
service exactly as a Segment SDK would, and what the service made of them."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from app import services
from app.models import Tenant, WriteKey, utcnow
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


@click.command("demo", help="Run the demo against a running service.")
@click.option("--url", "base_url", default="http://127.0.0.1:5000", show_default=True)
@with_appcontext
def demo_command(base_url: str) -> None:
    base_url = base_url.rstrip("/")
    wait_until_ready(base_url)
    tenant_id, write_key = demo_tenant_with_fresh_key()
    click.echo(f"Demo tenant {tenant_id}; write key: {write_key}")
    click.echo(
        json.dumps({"healthz": f"{base_url}/healthz", "readyz": f"{base_url}/readyz"}, indent=2)
    )
