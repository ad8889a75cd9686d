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
import math
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from app import create_app, migrate  # noqa: E402
from app.crm_sync import push_changed_traits  # noqa: E402
from app.hubspot_app import complete_install, connector_for  # noqa: E402
from bench.ingest import drop_database, fresh_database  # noqa: E402
from connectors.hubspot_sandbox import Sandbox, SandboxServer  # noqa: E402

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


def run(label: str, svc, tenant_id: int, sandbox: Sandbox, limit: int) -> None:
    connector = connector_for(svc, tenant_id)
    before = dict(sandbox.stats)
    began = time.perf_counter()
    report = push_changed_traits(svc.db, tenant_id, connector, "pql_", svc.clock())
    seconds = time.perf_counter() - began
    stats = connector.caller.stats
    calls = stats.get("requests", 0)
    seen_429 = sandbox.stats.get("429", 0) - before.get("429", 0)
    floor = max(0.0, (calls - limit) / limit * WINDOW)
    a = report.subjects["account"]
    kinds = {
        k: sandbox.stats.get(k, 0) - before.get(k, 0)
        for k in ("companies_created", "companies_updated")
    }
    print(
        f"{label}: {calls} API calls ({seen_429} answered 429), {seconds:.1f}s wall; "
        f"rate-limit floor {floor:.1f}s" + (f" (x{seconds / floor:.2f})" if floor else "")
    )
    print(
        f"    companies: {a.created} created, {a.updated} updated, {a.unchanged} unchanged, "
        f"{a.failed} failed; matched {a.matched_by_key} by key, "
        f"{a.matched_by_natural_key} by domain; sandbox saw {kinds}"
    )
    writes = math.ceil((a.created + a.updated) / 100) if a.created + a.updated else 0
    print(f"    write calls needed: ceil(N/100) = {writes}; matching calls: {calls - writes}")


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
    sandbox = Sandbox(requests_per_window=args.limit, window_seconds=WINDOW)
    try:
        migrate.upgrade(url)
        with SandboxServer(sandbox) as server:
            app = create_app(
                {
                    "DATABASE_URL": url,
                    "HUBSPOT_SANDBOX_URL": server.url,
                    "HUBSPOT_REQUESTS_PER_10S": str(args.limit),
                    "LOG_LEVEL": "WARNING",
                }
            )
            svc = app.extensions["pql"]
            redirect_uri = "http://bench/hubspot/oauth-callback"
            code = sandbox.issue_code(42, redirect_uri)
            with app.app_context():
                installed = complete_install(svc, code, redirect_uri)
            seed(svc.db, installed.tenant_id, args.companies, svc.clock())
            print(f"{args.companies} companies; sandbox limit {args.limit} requests per 10 s")
            run("first sync (all new)", svc, installed.tenant_id, sandbox, args.limit)
            with svc.db.engine.begin() as connection:  # scored again, same values
                connection.execute(text("UPDATE account_scores SET crm_pending = true"))
            run("nothing changed", svc, installed.tenant_id, sandbox, args.limit)
            with svc.db.engine.begin() as connection:
                connection.execute(
                    text(
                        "UPDATE account_scores SET activation_rate = activation_rate + 1, "
                        "crm_pending = true"
                    )
                )
            run("every company changed", svc, installed.tenant_id, sandbox, args.limit)
            svc.db.dispose()
    finally:
        drop_database(name)


if __name__ == "__main__":
    main()
