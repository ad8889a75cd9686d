"""Soak: mixed load for a long while, with memory and lag sampled throughout.

    .venv/bin/python bench/soak.py                 # 30 minutes
    .venv/bin/python bench/soak.py --minutes 5

Starts what the Procfile starts (gunicorn web, the worker) plus the HubSpot sandbox, against a
fresh PostgreSQL database; installs the app into a sandbox portal through the real OAuth flow;
then sends a steady stream of batches (--rate events per second, 2,000 accounts) while the
worker scores every 30 s, pushes to the sandbox and pulls every 5 minutes. Every 30 s it
samples the web workers' and the worker's resident memory, the age of the newest finished
scoring pass (scoring lag), how many account scores wait for the push (push backlog) and the
oldest event not yet covered by a scoring pass (event lag). At the end: the first and last
five minutes side by side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from app import migrate  # noqa: E402
from bench.ingest import (  # noqa: E402
    Load,
    drop_database,
    free_port,
    fresh_database,
    rss_mb,
    templates,
    worker_pids,
)
from sandbox.browser import install_page, write_key_on  # noqa: E402
from sandbox.hubspot import app_env as hubspot_env  # noqa: E402

SAMPLE_SECONDS = 30


def wait_ready(port: int, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def install(port: int, hub_id: int) -> str:
    page = install_page(f"http://127.0.0.1:{port}/hubspot/install", {"hub_id": str(hub_id)})
    return write_key_on(page)


class Paced(Load):
    """The benchmark's load generator, held to a steady rate."""

    def __init__(self, *args, rate: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.interval = self.per_request / rate
        self.next_at = time.monotonic()
        self.pace = threading.Lock()

    def run_client(self) -> None:  # one request per interval across all clients
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json", "Authorization": self.auth}
        while time.monotonic() < self.stop_at:
            with self.pace:
                wait = self.next_at - time.monotonic()
                self.next_at = max(self.next_at, time.monotonic()) + self.interval
            if wait > 0:
                time.sleep(wait)
            n = next(self.counter)
            body = self.bodies[n % len(self.bodies)].replace(b"@@REQ@@", str(n).encode())
            try:
                conn.request("POST", self.path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                status = -1
            with self.lock:
                if status == 200:
                    self.latencies.append(0.0)
                else:
                    self.errors[status] = self.errors.get(status, 0) + 1


def _aware(moment):
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def sample(engine, web_master: int, worker: int, started: float) -> dict:
    now = dt.datetime.now(dt.UTC)
    with engine.connect() as c:
        finished = c.execute(text("SELECT max(finished_at) FROM scoring_runs")).scalar()
        backlog = c.execute(text("SELECT count(*) FROM account_scores WHERE crm_pending")).scalar()
        unscored = c.execute(
            text(
                "SELECT min(received_at) FROM events WHERE received_at > "
                "(SELECT coalesce(max(started_at), '1970-01-01') FROM scoring_runs)"
            )
        ).scalar()
        events = c.execute(text("SELECT count(*) FROM events")).scalar()
    finished, unscored = _aware(finished), _aware(unscored)
    webs = worker_pids(web_master)
    return {
        "t": round(time.monotonic() - started),
        "web_mb": round(sum(rss_mb(p) for p in webs), 1),
        "worker_mb": round(rss_mb(worker), 1),
        "scoring_lag_s": round((now - finished).total_seconds()) if finished else None,
        "event_lag_s": round((now - unscored).total_seconds()) if unscored else 0,
        "push_backlog": backlog,
        "events": events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=500, help="events per second")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}; database: PostgreSQL",
        flush=True,
    )
    url, name = fresh_database()
    migrate.upgrade(url)
    port, sandbox_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        **hubspot_env(f"http://127.0.0.1:{sandbox_port}"),
        "LOG_LEVEL": "WARNING",
    }
    bin_dir = ROOT / ".venv" / "bin"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox.hubspot",
                "--port",
                str(sandbox_port),
                "--requests-per-10s",
                "110",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [
                str(bin_dir / "gunicorn"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "2",
                "--worker-class",
                "gthread",
                "--log-level",
                "warning",
                "app:create_app()",
            ],
            cwd=ROOT,
            env=env,
        ),
        subprocess.Popen([str(bin_dir / "pql"), "worker"], cwd=ROOT, env=env),
    ]
    engine = create_engine(url)
    try:
        wait_ready(port)
        key = install(port, 4_000_001)
        load = Paced(port, key, "/v1/batch", templates(400, 100, False), 100, rate=args.rate)
        started = time.monotonic()
        seconds = args.minutes * 60
        runner = threading.Thread(target=load.run, args=(seconds, 4))
        runner.start()
        samples = []
        while runner.is_alive():
            time.sleep(SAMPLE_SECONDS)
            samples.append(sample(engine, processes[1].pid, processes[2].pid, started))
            print(samples[-1], flush=True)
        runner.join()
        sent = len(load.latencies) * 100
        print(
            f"sent {sent} events in {seconds:.0f} s ({sent / seconds:.0f}/s); errors {load.errors}"
        )
        window = max(1, int(300 / SAMPLE_SECONDS))
        for label, part in (("first 5 min", samples[:window]), ("last 5 min", samples[-window:])):
            print(
                f"{label}: web {statistics.fmean(s['web_mb'] for s in part):.0f} MB, "
                f"worker {statistics.fmean(s['worker_mb'] for s in part):.0f} MB, "
                f"scoring lag {statistics.fmean(s['scoring_lag_s'] or 0 for s in part):.0f} s, "
                f"event lag {statistics.fmean(s['event_lag_s'] for s in part):.0f} s, "
                f"push backlog {statistics.fmean(s['push_backlog'] for s in part):.0f}"
            )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        engine.dispose()
        drop_database(name)


if __name__ == "__main__":
    main()
