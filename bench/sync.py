"""CRM push benchmark: N companies against the local HubSpot sandbox, limited like HubSpot.

    .venv/bin/python bench/sync.py                       # 10,000 companies, 110 requests / 10 s
    .venv/bin/python bench/sync.py --companies 30000

A fresh PostgreSQL database gets a HubSpot tenant (installed through the real OAuth code path
against the sandbox) and N accounts with scores. Then, timed, with the real connector, shared
rate budget and sandbox limits:

1. first sync: every company is new (matching reads + creates);
2. a sync with nothing changed (must cost zero calls);
3. a sync after every company's Activation rate changed (must cost ceil(N/100) write calls).

For each: API calls by kind, 429s seen, wall time, and the floor the rate limit imposes
((calls - limit) / limit x window, 0 when they fit in one window).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from app import create_app, migrate  # noqa: E402
from app.sync.push import push_changed_traits  # noqa: E402
from bench.ingest import drop_database, free_port, fresh_database  # noqa: E402
from connectors.hubspot.install import complete_install  # noqa: E402
from connectors.hubspot.provider import connector_for  # noqa: E402
from sandbox.hubspot import app_env as hubspot_env  # noqa: E402

WINDOW = 10.0


def seed(db, tenant_id: int, companies: int, now: dt.datetime) -> None:
    """Accounts with a score row each, made server-side (scoring is not what is measured)."""
    with db.engine.begin() as connection:
        connection.execute(
            text(
                f"""INSERT INTO accounts (tenant_id, external_id, name, domain, traits,
                       trait_times, first_seen_at, last_seen_at, changed_at)
                    SELECT {tenant_id}, 'acct-' || g, 'Account ' || g, 'a' || g || '.example',
                           '{{"plan": "trial"}}'::jsonb, '{{}}'::jsonb, :now, :now, :now
                    FROM generate_series(1, {companies}) g"""
            ),
            {"now": now},
        )
        connection.execute(
            text(
                f"""INSERT INTO account_scores (tenant_id, account_id, definitions_version,
                       computed_at, profile, activation_rate, activated, next_step, steps_done,
                       engagement_raw, engagement_score, engagement_segment, adoption_rate,
                       adoption_rate_ever, active_days, last_active_at, segments, active_users,
                       total_users, activated_users, average_user_activation, pql, pql_reason,
                       deal_size, lead_type, chance_to_convert, forecast_value)
                    SELECT {tenant_id}, id, 1, :now, 'Default', (id % 5) * 20, false,
                           'Shared a dashboard', '{{}}'::jsonb, id % 97, id % 100, 'Engaged',
                           40, 60, 3, :now, '{{}}'::jsonb, 2, 4, 1, 50, false,
                           'Below the threshold', 'small', 'Fizzler', 10, 500
                    FROM accounts WHERE tenant_id = {tenant_id}"""
            ),
            {"now": now},
        )


def sandbox_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_sandbox/stats", timeout=10) as answer:
        return json.load(answer)


def run(label: str, svc, tenant_id: int, sandbox_url: str, limit: int) -> None:
    connector = connector_for(svc, tenant_id)
    before = sandbox_stats(sandbox_url)
    began = time.perf_counter()
    report = push_changed_traits(svc.db, tenant_id, connector, "pql_", svc.clock())
    seconds = time.perf_counter() - began
    after = sandbox_stats(sandbox_url)
    calls = connector.caller.stats.get("requests", 0)
    seen_429 = after.get("429", 0) - before.get("429", 0)
    floor = max(0.0, (calls - limit) / limit * WINDOW)
    a = report.subjects["account"]
    kinds = {
        k: after.get(k, 0) - before.get(k, 0) for k in ("companies_created", "companies_updated")
    }
    print(
        f"{label}: {calls} API calls ({seen_429} answered 429), {seconds:.1f}s wall; "
        f"rate-limit floor {floor:.1f}s"
        + (f" (x{seconds / floor:.2f})" if floor else "")
        + f"; at the sustained rate {calls / limit * WINDOW:.1f}s"
    )
    print(
        f"    companies: {a.created} created, {a.updated} updated, {a.unchanged} unchanged, "
        f"{a.failed} failed; matched {a.matched_by_key} by key, "
        f"{a.matched_by_natural_key} by domain; sandbox saw {kinds}"
    )
    writes = math.ceil((a.created + a.updated) / 100) if a.created + a.updated else 0
    print(f"    write calls needed: ceil(N/100) = {writes}; matching calls: {calls - writes}")


def start_sandbox(limit: int) -> tuple[subprocess.Popen, str]:
    """The sandbox in a process of its own, as HubSpot is: its work does not share this
    process's interpreter with the sync being measured."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.hubspot",
            "--port",
            str(port),
            "--requests-per-10s",
            str(limit),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            sandbox_stats(url)
            return process, url
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.2)


def install(svc, app, sandbox_url: str) -> int:
    """The OAuth flow against the sandbox: its consent step answers with a code at once."""
    redirect_uri = "http://bench/hubspot/oauth-callback"
    query = urllib.parse.urlencode(
        {"client_id": "sandbox-client", "redirect_uri": redirect_uri, "hub_id": 42}
    )
    connection = http.client.HTTPConnection(urllib.parse.urlsplit(sandbox_url).netloc)
    connection.request("GET", f"/oauth/authorize?{query}")
    location = connection.getresponse().headers["Location"]
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
    with app.app_context():
        return complete_install(svc, code, redirect_uri).tenant_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--companies", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=110, help="sandbox requests per 10 s")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}; database: PostgreSQL"
    )
    url, name = fresh_database()
    process, sandbox_url = start_sandbox(args.limit)
    try:
        migrate.upgrade(url)
        app = create_app(
            {
                "DATABASE_URL": url,
                **hubspot_env(sandbox_url),
                "HUBSPOT_REQUESTS_PER_10S": str(args.limit),
                "LOG_LEVEL": "WARNING",
            }
        )
        svc = app.extensions["pql"]
        tenant_id = install(svc, app, sandbox_url)
        seed(svc.db, tenant_id, args.companies, svc.clock())
        print(f"{args.companies} companies; sandbox limit {args.limit} requests per 10 s")
        run("first sync (all new)", svc, tenant_id, sandbox_url, args.limit)
        with svc.db.engine.begin() as connection:  # scored again, same values
            connection.execute(text("UPDATE account_scores SET crm_pending = true"))
        run("nothing changed", svc, tenant_id, sandbox_url, args.limit)
        with svc.db.engine.begin() as connection:
            connection.execute(
                text(
                    "UPDATE account_scores SET activation_rate = activation_rate + 1, "
                    "crm_pending = true"
                )
            )
        run("every company changed", svc, tenant_id, sandbox_url, args.limit)
        svc.db.dispose()
    finally:
        process.terminate()
        process.wait(10)
        drop_database(name)


if __name__ == "__main__":
    main()
