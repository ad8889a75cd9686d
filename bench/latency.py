"""From an event's arrival to its effect on a HubSpot property, with the default intervals.

    .venv/bin/python bench/latency.py [--probes 40]

Runs the service (web app over HTTP, the worker's scheduler with its default intervals) against
the local HubSpot sandbox on a fresh PostgreSQL database. trial accounts are set up and
pushed once. Then, at random moments, one account after another gets an "Integration Connected"
event (an Activation step it had not done) through /v1/batch; the time until the sandbox's
company shows the higher Activation rate is that event's latency. Prints p50, p95 and max.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import os
import platform
import random
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from werkzeug.serving import make_server  # noqa: E402

from app import create_app, migrate  # noqa: E402
from app.jobs.worker import build_scheduler  # noqa: E402
from bench.ingest import drop_database, free_port, fresh_database  # noqa: E402
from connectors.hubspot.install import complete_install  # noqa: E402
from sandbox.hubspot import Sandbox, SandboxServer  # noqa: E402
from sandbox.hubspot import app_env as hubspot_env  # noqa: E402
from sandbox.sample_data import (  # noqa: E402
    SampleAccount,
    group,
    identify,
    track,
)

HUB = 4242


def post(base: str, key: str, messages: list[dict]) -> None:
    auth = base64.b64encode(f"{key}:".encode()).decode()
    request = urllib.request.Request(
        f"{base}/v1/batch",
        data=json.dumps({"batch": messages}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()


def activation_of(sandbox: Sandbox, domain: str) -> float | None:
    with sandbox.lock:
        portal = sandbox.portals.get(HUB)
        if portal is None:
            return None
        for record in portal.objects["companies"].values():
            if record["properties"].get("domain") == domain:
                value = record["properties"].get("pql_activation_rate")
                return float(value) if value else None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=40)
    args = parser.parse_args()
    accounts_count = args.probes + 10
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}; database: PostgreSQL"
    )
    url, name = fresh_database()
    rng = random.Random(7)
    sandbox = Sandbox(requests_per_window=110)
    try:
        migrate.upgrade(url)
        with SandboxServer(sandbox) as hubspot:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            app = create_app(
                {
                    "DATABASE_URL": url,
                    **hubspot_env(hubspot.url),
                    "PUBLIC_URL": base,
                    "LOG_LEVEL": "WARNING",
                }
            )
            svc = app.extensions["pql"]
            print(f"scoring and push every {svc.settings.scoring_interval_seconds}s (default)")
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
            web = make_server("127.0.0.1", port, app, threaded=True)
            threading.Thread(target=web.serve_forever, daemon=True).start()
            redirect_uri = f"{base}/hubspot/oauth-callback"
            with app.app_context():
                installed = complete_install(
                    svc, sandbox.issue_code(HUB, redirect_uri), redirect_uri
                )
            key = installed.write_key
            now = svc.clock()
            accounts = [
                SampleAccount(f"acct-{n}", f"Account {n}", f"a{n}.example", 40, "trial", (f"u{n}",))
                for n in range(accounts_count)
            ]
            setup = []
            for a in accounts:
                setup.append(identify(rng, a.user_ids[0], a.domain, now))
                setup.append(group(rng, a, a.user_ids[0], now))
                setup.append(track(rng, a.user_ids[0], a.group_id, "Report Created", now))
            post(base, key, setup)
            scheduler = build_scheduler(svc)
            threading.Thread(target=scheduler.start, daemon=True).start()
            deadline = time.monotonic() + 120
            while any(activation_of(sandbox, a.domain) is None for a in accounts):
                if time.monotonic() > deadline:
                    raise SystemExit("the first push did not happen within 120 s")
                time.sleep(0.5)
            print(f"{accounts_count} companies pushed; probing")
            # Events go to different accounts at random moments (so at every phase of the
            # worker's interval) while a monitor watches the sandbox for their effect.
            pending: dict[str, tuple[float, float]] = {}
            latencies: list[float] = []
            lock = threading.Lock()

            def sender() -> None:
                for a in accounts[: args.probes]:
                    time.sleep(rng.uniform(0.5, 6.0))
                    before = activation_of(sandbox, a.domain) or 0
                    event = track(
                        rng, a.user_ids[0], a.group_id, "Integration Connected", svc.clock()
                    )
                    with lock:
                        pending[a.domain] = (time.monotonic(), before)
                    post(base, key, [event])

            sending = threading.Thread(target=sender)
            sending.start()
            deadline = time.monotonic() + args.probes * 7 + 180
            while len(latencies) < args.probes:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {len(latencies)} of {args.probes} events took effect")
                with lock:
                    for domain, (sent, before) in list(pending.items()):
                        if (activation_of(sandbox, domain) or 0) > before:
                            latencies.append(time.monotonic() - sent)
                            del pending[domain]
                time.sleep(0.05)
            sending.join()
            scheduler.shutdown(wait=False)
            web.shutdown()
            latencies.sort()
            p95 = latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)]
            print(
                f"{len(latencies)} events: p50 {statistics.median(latencies):.1f}s, "
                f"p95 {p95:.1f}s, max {latencies[-1]:.1f}s (target: p95 under 60 s)"
            )
            svc.db.dispose()
    finally:
        drop_database(name)


if __name__ == "__main__":
    main()
