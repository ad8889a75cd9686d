"""Salesforce push benchmark: N accounts against the local Salesforce sandbox (HTTPS, its own
process).

    .venv/bin/python bench/salesforce_sync.py                  # 10,000 accounts
    .venv/bin/python bench/salesforce_sync.py --accounts 30000

A fresh PostgreSQL database gets a Salesforce tenant, installed through the real OAuth code
path (PKCE included) against the sandbox, and N accounts with scores. Then, timed, with the real
connector (simple-salesforce over requests):

1. first sync: every account is new (matching reads, then one Bulk API 2.0 upsert job);
2. a sync with nothing changed (must cost zero calls);
3. every account's Activation rate changed, above the bulk threshold (one bulk job);
4. the same below the threshold (must cost ceil(N/200) sObject Collections calls).

For each: the API requests the sandbox answered, by kind; wall time; and the part of it the
sandbox spent answering (the rest is ours: database, connector, network).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from app import create_app, migrate  # noqa: E402
from app.sync.push import push_changed_traits  # noqa: E402
from bench.ingest import drop_database, free_port, fresh_database  # noqa: E402
from bench.sync import seed  # noqa: E402
from connectors.salesforce.auth import pkce_pair  # noqa: E402
from connectors.salesforce.install import complete_install  # noqa: E402
from connectors.salesforce.provider import connector_for  # noqa: E402
from sandbox.salesforce import app_env as salesforce_env  # noqa: E402


def stats(url: str, ca: str) -> dict:
    return requests.get(f"{url}/_sandbox/stats", verify=ca, timeout=10).json()


def run(label: str, svc, tenant_id: int, url: str, ca: str) -> None:
    connector = connector_for(svc, tenant_id)
    before = stats(url, ca)
    began = time.perf_counter()
    report = push_changed_traits(svc.db, tenant_id, connector, "pql_", svc.clock())
    seconds = time.perf_counter() - began
    after = stats(url, ca)
    kinds: dict[str, int] = {}
    for kind, count in after["by_kind"].items():
        if count - before["by_kind"].get(kind, 0):
            name = re.sub(r"jobs/ingest/\w+", "jobs/ingest/<job>", kind)
            kinds[name] = kinds.get(name, 0) + count - before["by_kind"].get(kind, 0)
    calls = after["requests"] - before["requests"]
    busy = after["busy_seconds"] - before["busy_seconds"]
    a = report.subjects["account"]
    print(
        f"{label}: {calls} API requests, {seconds:.1f}s wall "
        f"({busy:.1f}s of it the sandbox answering, {seconds - busy:.1f}s ours)"
    )
    print(
        f"    accounts: {a.created} created, {a.updated} updated, {a.unchanged} unchanged, "
        f"{a.failed} failed; bulk jobs: {connector.caller.stats.get('bulk_jobs', 0)}"
    )
    if kinds:
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
        print(f"    requests by kind: {shown}")


def start_sandbox(cert_dir: str) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.salesforce",
            "--port",
            str(port),
            "--cert-dir",
            cert_dir,
            "--daily-limit",
            "1000000",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    url, ca = f"https://127.0.0.1:{port}", os.path.join(cert_dir, "salesforce-sandbox.pem")
    deadline = time.monotonic() + 30
    while True:
        try:
            stats(url, ca)
            return process, url, ca
        except (OSError, requests.RequestException):
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.2)


def install(svc, app, url: str, ca: str) -> int:
    """The OAuth flow against the sandbox: its consent step answers with a code at once."""
    redirect_uri = "http://bench/salesforce/oauth-callback"
    verifier, challenge = pkce_pair()
    query = urllib.parse.urlencode(
        {
            "client_id": "sandbox-client",
            "redirect_uri": redirect_uri,
            "code_challenge": challenge,
            "response_type": "code",
        }
    )
    consent = requests.get(
        f"{url}/services/oauth2/authorize?{query}", verify=ca, allow_redirects=False, timeout=10
    )
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(consent.headers["Location"]).query)
    with app.app_context():
        return complete_install(svc, code["code"][0], redirect_uri, verifier).tenant_id


def changed(svc) -> None:
    with svc.db.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE account_scores SET activation_rate = activation_rate + 1, "
                "crm_pending = true"
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--bulk-threshold", type=int, default=2000)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}; database: PostgreSQL"
    )
    db_url, name = fresh_database()
    cert_dir = tempfile.mkdtemp(prefix="sf-sandbox-")
    process, url, ca = start_sandbox(cert_dir)
    try:
        migrate.upgrade(db_url)
        config = {
            "DATABASE_URL": db_url,
            **salesforce_env(url, ca),
            "SALESFORCE_BULK_THRESHOLD": str(args.bulk_threshold),
            "LOG_LEVEL": "WARNING",
        }
        app = create_app(config)
        svc = app.extensions["pql"]
        tenant_id = install(svc, app, url, ca)
        seed(svc.db, tenant_id, args.accounts, svc.clock())
        print(f"{args.accounts} accounts; bulk threshold {args.bulk_threshold}")
        run("first sync (all new)", svc, tenant_id, url, ca)
        with svc.db.engine.begin() as connection:  # scored again, same values
            connection.execute(text("UPDATE account_scores SET crm_pending = true"))
        run("nothing changed", svc, tenant_id, url, ca)
        changed(svc)
        run("every account changed (bulk job)", svc, tenant_id, url, ca)
        svc.db.dispose()
        below = create_app({**config, "SALESFORCE_BULK_THRESHOLD": str(args.accounts + 1)})
        changed(below.extensions["pql"])
        print(f"    (bulk threshold raised to {args.accounts + 1})")
        run(
            f"every account changed (collections; ceil(N/200) = {math.ceil(args.accounts / 200)})",
            below.extensions["pql"],
            tenant_id,
            url,
            ca,
        )
        below.extensions["pql"].db.dispose()
    finally:
        process.terminate()
        process.wait(10)
        drop_database(name)


if __name__ == "__main__":
    main()
