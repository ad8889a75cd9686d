"""Ingestion benchmark: sustained /v1/batch throughput and single-event /v1/track rate.

    .venv/bin/python bench/ingest.py                 # 60 s batch phase + 20 s track phase
    .venv/bin/python bench/ingest.py --duration 300  # the 5-minute memory run
    .venv/bin/python bench/ingest.py --no-limits     # without the per-key/per-tenant limits

Starts gunicorn exactly as the Procfile does (against a fresh PostgreSQL database it creates
and drops, or --database-url), sends realistic analytics-python-shaped batches from keep-alive
connections, and prints events/s, request latency percentiles and each web worker's memory
at the start and end of the run. The per-key and per-tenant ingestion limits are on (set above
the offered load, so every window is counted and nothing is refused), and a baseline phase
against a second server with the limits off runs in the same run, so their cost shows as a
ratio whatever the machine's mood. Request bodies are prepared before the clock starts (unique
messageIds are substituted per request) so the load generator takes little of the CPU it shares
with the server.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.client
import itertools
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from app import migrate  # noqa: E402
from app.db import Database  # noqa: E402
from app.tenants import create_tenant, issue_write_key  # noqa: E402
from sandbox.sample_data import load_batches  # noqa: E402

PG_ADMIN = os.environ.get("PQL_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PLACEHOLDER = "@@REQ@@"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_database() -> tuple[str, str]:
    name = f"pql_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, name


def drop_database(name: str) -> None:
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True
    ).stdout
    return sorted(int(p) for p in out.split())


def templates(count: int, batch_size: int, single: bool) -> list[bytes]:
    """Request bodies whose messageIds carry a placeholder for the request number."""
    rng = random.Random(7)
    now = dt.datetime.now(dt.UTC)
    source = load_batches(rng, now, accounts=2000, users_per_account=10, batch_size=batch_size)
    bodies = []
    for n in range(count):
        batch = next(source)
        for i, message in enumerate(batch):
            message["messageId"] = f"bench-{PLACEHOLDER}-{n}-{i}"
        body = batch[0] if single else {"batch": batch, "sentAt": now.isoformat()}
        bodies.append(json.dumps(body).encode())
    return bodies


class Load:
    def __init__(
        self,
        port: int,
        key: str,
        path: str,
        bodies: list[bytes],
        per_request: int,
        prefix: str = "",
    ):
        self.port = port
        self.prefix = prefix
        self.auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        self.path = path
        self.bodies = bodies
        self.per_request = per_request
        self.counter = itertools.count()
        self.latencies: list[float] = []
        self.errors: dict[int, int] = {}
        self.lock = threading.Lock()
        self.stop_at = 0.0

    def run_client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json", "Authorization": self.auth}
        local: list[float] = []
        while time.monotonic() < self.stop_at:
            n = next(self.counter)
            body = self.bodies[n % len(self.bodies)].replace(
                PLACEHOLDER.encode(), f"{self.prefix}{n}".encode()
            )
            start = time.perf_counter()
            try:
                conn.request("POST", self.path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                status = -1
            elapsed = time.perf_counter() - start
            if status == 200:
                local.append(elapsed)
            else:
                with self.lock:
                    self.errors[status] = self.errors.get(status, 0) + 1
        conn.close()
        with self.lock:
            self.latencies.extend(local)

    def run(self, seconds: float, concurrency: int) -> dict:
        self.stop_at = time.monotonic() + seconds
        started = time.monotonic()
        threads = [threading.Thread(target=self.run_client) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else float("nan")

        return {
            "requests": len(lat),
            "events": len(lat) * self.per_request,
            "seconds": round(wall, 1),
            "events_per_s": round(len(lat) * self.per_request / wall),
            "requests_per_s": round(len(lat) / wall, 1),
            "p50_ms": round(pct(50), 1),
            "p95_ms": round(pct(95), 1),
            "p99_ms": round(pct(99), 1),
            "max_ms": round(lat[-1] * 1000, 1) if lat else None,
            "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
            "errors": self.errors,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60, help="batch phase seconds")
    parser.add_argument("--track-duration", type=float, default=20, help="/v1/track seconds")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=6, help="client connections")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per gunicorn worker")
    parser.add_argument("--database-url", help="use this database instead of a fresh one")
    parser.add_argument(
        "--no-limits", action="store_true", help="measure without the ingestion limits"
    )
    parser.add_argument(
        "--baseline-duration",
        type=float,
        default=None,
        help="seconds of the limits-off baseline phase (default: half of --duration; 0: none)",
    )
    args = parser.parse_args()

    dropped = None
    url = args.database_url
    if not url:
        url, dropped = fresh_database()
    migrate.upgrade(url)
    db = Database(url)
    tenant = create_tenant(db, "Bench")
    key = issue_write_key(db, tenant.id).secret
    db.dispose()

    def serve(limits: bool) -> tuple[subprocess.Popen, int]:
        port = free_port()
        # Limits on: far above the offered load, so they are counted but never refuse.
        limit = "100000000" if limits else "0"
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "LOG_LEVEL": "WARNING",
            "APP_ENV": "development",
            "INGEST_MESSAGES_PER_10S": limit,
            "INGEST_TENANT_MESSAGES_PER_10S": limit,
        }
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "--bind", f"127.0.0.1:{port}",
                "--workers", str(args.workers),
                "--worker-class", "gthread",
                "--threads", str(args.threads),
                "--log-level", "warning",
                "app:create_app()",
            ],
            cwd=ROOT,
            env=env,
        )  # fmt: skip
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        return server, port

    def stop(server: subprocess.Popen) -> None:
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    limits = not args.no_limits
    gunicorn, port = serve(limits)
    try:
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{platform.python_implementation()} {platform.python_version()}"
        )
        print(
            f"gunicorn: {args.workers} workers x {args.threads} threads (gthread); "
            f"{args.concurrency} client connections; database: PostgreSQL; "
            f"ingestion limits {'on' if limits else 'off'}"
        )
        batch_bodies = templates(300, args.batch_size, single=False)
        track_bodies = templates(300, 1, single=True)

        # Warm-up messageIds differ from the measured ones (a repeat would be a cheap no-op).
        Load(port, key, "/v1/batch", batch_bodies, args.batch_size, "first-").run(
            5, args.concurrency
        )
        pids = worker_pids(gunicorn.pid)
        rss_start = {p: rss_mb(p) for p in pids}
        batch = Load(port, key, "/v1/batch", batch_bodies, args.batch_size).run(
            args.duration, args.concurrency
        )
        rss_end = {p: rss_mb(p) for p in pids}
        print(f"/v1/batch ({args.batch_size} events/request): {json.dumps(batch)}")
        print(
            "web worker RSS MB (after warm-up -> end): "
            + ", ".join(f"{rss_start[p]:.0f}->{rss_end[p]:.0f}" for p in pids)
        )
        single = Load(port, key, "/v1/track", track_bodies, 1).run(
            args.track_duration, args.concurrency
        )
        print(f"/v1/track (1 event/request): {json.dumps(single)}")
        baseline_seconds = (
            args.duration / 2 if args.baseline_duration is None else args.baseline_duration
        )
        if limits and baseline_seconds > 0:
            stop(gunicorn)
            gunicorn, port = serve(False)
            Load(port, key, "/v1/batch", batch_bodies, args.batch_size, "second-").run(
                5, args.concurrency
            )
            baseline = Load(port, key, "/v1/batch", batch_bodies, args.batch_size, "base-").run(
                baseline_seconds, args.concurrency
            )
            print(f"baseline, limits off, /v1/batch: {json.dumps(baseline)}")
            print(
                f"with the limits on: {batch['events_per_s'] / baseline['events_per_s']:.2f}x "
                f"the events/s and {batch['p99_ms'] / baseline['p99_ms']:.2f}x the p99 of the "
                "baseline"
            )
    finally:
        stop(gunicorn)
        if dropped:
            drop_database(dropped)


if __name__ == "__main__":
    main()
