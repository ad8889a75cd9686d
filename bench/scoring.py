"""Scoring benchmark: full recompute of a large tenant, and an incremental pass after new events.

    .venv/bin/python bench/scoring.py                      # 10k accounts, 100k users, 10M events
    .venv/bin/python bench/scoring.py --events 1000000     # a quicker, smaller run

Generates the tenant on a fresh PostgreSQL database (created and dropped): accounts, users,
memberships and raw events are made server-side with generate_series (10M events through HTTP
would take half an hour and measure ingestion, not scoring), and the daily rollups are derived
from those events exactly as ingestion keeps them. Then it times the first full pass (wall time
and peak memory of this process), the next day's full pass (the daily one), and after each
batch of 10,000 new events sent through the real ingestion code, the incremental pass that
follows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from app import migrate  # noqa: E402
from app.db import Database  # noqa: E402
from app.scores.definitions_store import current_definitions  # noqa: E402
from app.scores.scoring_pass import recompute  # noqa: E402
from app.tenants import create_tenant  # noqa: E402
from app.tracking.ingest import ingest  # noqa: E402
from bench.ingest import drop_database, fresh_database  # noqa: E402
from sandbox.sample_data import PRODUCT_EVENTS, track  # noqa: E402
from webhooks.segment import parse_messages  # noqa: E402


def generate(db: Database, tenant_id: int, accounts: int, users: int, events: int, days: int, now):
    names = [name for name, _ in PRODUCT_EVENTS]
    weights = [w for _, w in PRODUCT_EVENTS]
    # Cumulative thresholds so SQL can pick an event name with the products' frequencies.
    total = sum(weights)
    bounds, acc = [], 0
    for w in weights:
        acc += w
        bounds.append(acc / total)
    case = " ".join(
        f"WHEN r < {b:.6f} THEN '{n}'" for b, n in zip(bounds[:-1], names[:-1], strict=True)
    )
    pick = f"CASE {case} ELSE '{names[-1]}' END"
    start = now - dt.timedelta(days=days)
    plans = "(ARRAY['trial','trial','paid','free'])[1 + (g % 4)]"
    statements = [
        f"""INSERT INTO accounts (tenant_id, external_id, name, domain, traits, trait_times,
                first_seen_at, last_seen_at, changed_at)
            SELECT {tenant_id}, 'acct-' || g, 'Account ' || g, 'a' || g || '.example',
                   jsonb_build_object('plan', {plans}, 'employees', (g * 37) % 3000),
                   '{{}}'::jsonb, :start, :now, :start
            FROM generate_series(0, {accounts - 1}) g""",
        f"""INSERT INTO users (tenant_id, external_id, email, name, traits, trait_times,
                first_seen_at, last_seen_at, changed_at)
            SELECT {tenant_id}, 'user-' || g, 'user' || g || '@example.com', 'User ' || g,
                   jsonb_build_object('name', 'User ' || g), '{{}}'::jsonb, :start, :now, :start
            FROM generate_series(0, {users - 1}) g""",
        f"""INSERT INTO account_memberships (tenant_id, account_id, user_id, created_at)
            SELECT {tenant_id}, a.id, u.id, :start
            FROM users u JOIN accounts a
              ON a.external_id = 'acct-' || (substr(u.external_id, 6)::int % {accounts})
            WHERE u.tenant_id = {tenant_id}""",
        f"""INSERT INTO events (tenant_id, message_id, type, name, user_id, account_id,
                timestamp, received_at, payload)
            SELECT {tenant_id}, 'gen-' || g, 'track', {pick}, u.id, m.account_id,
                   ts, ts, '{{}}'::json
            FROM (
                SELECT g, random() AS r,
                       :start + (random() * {days * 86400}) * interval '1 second' AS ts,
                       1 + (hashint4(g) & 2147483647) % {users} AS uidx
                FROM generate_series(1, {events}) g
            ) s
            JOIN users u
              ON u.id = (SELECT min(id) FROM users WHERE tenant_id = {tenant_id}) + s.uidx - 1
            JOIN account_memberships m ON m.user_id = u.id""",
        f"""INSERT INTO user_event_days (tenant_id, user_id, event, day, count)
            SELECT {tenant_id}, user_id, name, (timestamp AT TIME ZONE 'UTC')::date, count(*)
            FROM events WHERE tenant_id = {tenant_id}
            GROUP BY user_id, name, (timestamp AT TIME ZONE 'UTC')::date""",
        f"""INSERT INTO account_event_days (tenant_id, account_id, event, day, user_id, count)
            SELECT {tenant_id}, account_id, name, (timestamp AT TIME ZONE 'UTC')::date, user_id,
                   count(*)
            FROM events WHERE tenant_id = {tenant_id}
            GROUP BY account_id, name, (timestamp AT TIME ZONE 'UTC')::date, user_id""",
    ]
    params = {"start": start.replace(tzinfo=None), "now": now.replace(tzinfo=None)}
    with db.engine.begin() as connection:
        for statement in statements:
            began = time.perf_counter()
            connection.execute(text(statement), params)
            label = statement.split("(")[0].split()[-1] if "INTO" in statement else statement
            print(f"  generated {label:<20} in {time.perf_counter() - began:6.1f}s", flush=True)
    # A steady-state database is vacuumed; without this, autovacuum of the freshly loaded
    # tables runs at some point during the timed passes and blurs them.
    began = time.perf_counter()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
    print(
        f"  vacuumed and analyzed              in {time.perf_counter() - began:6.1f}s", flush=True
    )
    with db.engine.connect() as connection:
        counts = {
            t: connection.execute(text(f"SELECT count(*) FROM {t}")).scalar()
            for t in ("accounts", "users", "events", "user_event_days", "account_event_days")
        }
    print("  rows:", counts)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _step_sql(step, per_event: str) -> str:
    """A checklist step as a boolean over one subject's grouped rollups (``per_event``)."""
    if step.kind == "trait":
        if step.op != "exists":
            raise SystemExit(f"baseline: trait step {step.key!r} with op {step.op!r} not written")
        trait = f"s.traits -> {_quote(step.trait)}"
        return f"(bool_or({trait} IS NOT NULL AND jsonb_typeof({trait}) <> 'null'))"
    if step.within_days:
        raise SystemExit(f"baseline: step {step.key!r} counts within days: not written")
    column = "users" if step.kind == "distinct_users" else "total"
    return (
        f"(coalesce(max({per_event}.{column}) FILTER "
        f"(WHERE {per_event}.event = {_quote(step.event)}), 0) >= {step.min_count})"
    )


def _penalty_sql(penalty, today: dt.date) -> str:
    only = "" if penalty.event is None else f" FILTER (WHERE p.event = {_quote(penalty.event)})"
    last = f"max(p.last_day){only}"
    return (
        f"(CASE WHEN {last} IS NULL OR DATE '{today}' - {last} >= {penalty.days} "
        f"THEN {penalty.points} ELSE 0 END)"
    )


def _rate_sql(steps, per_event: str) -> str:
    if not steps:
        return "0"
    done = " + ".join(f"{_step_sql(s, per_event)}::int" for s in steps)
    return f"round(100.0 * ({done}) / {len(steps)}, 2)"


def baseline_statement(defs, subject: str, tenant_id: int, today: dt.date) -> str:
    """The core of a full pass as one set-based statement over the daily rollups: per subject,
    the weighted count of its events in the time frame plus inactivity penalties, graded 0–100
    against the tenant's 90th percentile (nearest rank over the positive raws), and its
    Activation rate. The default definitions only (one profile, no decay, no "within D days"
    steps), which is what this benchmark generates data for."""
    profile = defs.default_profile
    if len(defs.profiles) != 1 or profile.decay:
        raise SystemExit("baseline: one profile without decay only")
    start = today - dt.timedelta(days=profile.time_frame_days - 1)
    weights = ", ".join(f"({_quote(e)}, {w})" for e, w in sorted(profile.weights.items()) if w > 0)
    penalties = " + ".join(_penalty_sql(pen, today) for pen in profile.penalties) or "0"
    if subject == "a":
        rollup, key, table, filters = "account_event_days", "account_id", "accounts", ""
        users = "count(DISTINCT user_id)"
        stage = f"lower(coalesce(s.traits ->> {_quote(defs.pql.stage_trait)}, ''))"
        paid = ", ".join(_quote(v.lower()) for v in defs.pql.paid_values)
        rate = (
            f"CASE WHEN min({stage}) IN ({paid}) "
            f"THEN {_rate_sql(defs.account_checklist_paid.steps, 'p')} "
            f"ELSE {_rate_sql(defs.account_checklist_trial.steps, 'p')} END"
        )
    else:
        rollup, key, table = "user_event_days", "user_id", "users"
        filters, users = " AND s.merged_into_id IS NULL", "0"
        rate = _rate_sql(defs.user_checklist.steps, "p")
    return f"""
        WITH p AS (
            SELECT {key} AS sid, event, sum(count) AS total,
                   coalesce(sum(count) FILTER (WHERE day >= DATE '{start}'), 0) AS in_frame,
                   max(day) AS last_day, {users} AS users
            FROM {rollup} WHERE tenant_id = {tenant_id} AND day <= DATE '{today}'
            GROUP BY {key}, event
        ),
        raw AS (
            SELECT s.id,
                   coalesce(sum(p.in_frame * w.weight), 0) + {penalties} AS raw,
                   {rate} AS activation_rate
            FROM {table} s
            LEFT JOIN p ON p.sid = s.id
            LEFT JOIN (VALUES {weights}) AS w(event, weight) ON w.event = p.event
            WHERE s.tenant_id = {tenant_id}{filters}
            GROUP BY s.id
        ),
        cap AS (SELECT percentile_disc(0.9) WITHIN GROUP (ORDER BY raw) AS p90
                FROM raw WHERE raw > 0)
        SELECT raw.id,
               CASE WHEN raw <= 0 THEN 0
                    WHEN coalesce(p90, 0) <= 0 THEN 100
                    ELSE round(least(100.0, raw::numeric / p90 * 100), 2) END AS score,
               activation_rate
        FROM raw CROSS JOIN cap"""


def sql_baseline(db: Database, tenant_id: int, now: dt.datetime) -> tuple[float, int, int]:
    """Times the baseline statements (users, then accounts) and checks them against the
    stored scores of the pass. Returns seconds, accounts compared, accounts that disagree."""
    defs = current_definitions(db, tenant_id).definitions
    today = now.astimezone(dt.UTC).date()
    began = time.perf_counter()
    results = {}
    with db.engine.connect() as connection:
        for subject in ("u", "a"):
            statement = baseline_statement(defs, subject, tenant_id, today)
            results[subject] = connection.execute(text(statement)).all()
    seconds = time.perf_counter() - began
    with db.engine.connect() as connection:
        stored = dict(
            (aid, (score, rate))
            for aid, score, rate in connection.execute(
                text(
                    "SELECT account_id, engagement_score, activation_rate FROM account_scores "
                    "WHERE tenant_id = :t"
                ),
                {"t": tenant_id},
            )
        )
    disagree = sum(
        1
        for aid, score, rate in results["a"]
        if aid not in stored
        or abs(float(score) - stored[aid][0]) > 0.011
        or abs(float(rate) - stored[aid][1]) > 0.011
    )
    return seconds, len(results["a"]), disagree


def peak_rss_mb() -> float:
    """This process's peak resident memory since the last ``reset_peak`` (Linux), or since it
    started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Start the peak over (Linux: the kernel resets VmHWM on writing 5 to clear_refs), so
    that each pass's figure is its own, not the largest of those before it. False where it
    cannot: the figures printed are then the process's peak so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=60, help="history the events span")
    parser.add_argument("--new-events", type=int, default=10_000)
    parser.add_argument(
        "--active-users", type=int, default=1_000, help="users of the concentrated scenario"
    )
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}; database: PostgreSQL"
    )
    url, name = fresh_database()
    try:
        migrate.upgrade(url)
        db = Database(url)
        tenant = create_tenant(db, "Bench")
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        if now.time() > dt.time(23):
            # The incremental passes run up to 20 minutes after the next day's pass, on its UTC
            # day: a pass on the day after that would be a full one.
            now -= dt.timedelta(hours=1)
        print(f"generating {args.accounts} accounts, {args.users} users, {args.events} events")
        generate(db, tenant.id, args.accounts, args.users, args.events, args.days, now)

        own_peak = reset_peak()
        rss_before = peak_rss_mb()
        began = time.perf_counter()
        full = recompute(db, tenant.id, now)
        first_seconds = time.perf_counter() - began
        print(
            f"first full pass (every subject new: rows inserted, Activation times read): "
            f"{full.accounts} accounts, {full.users} users in {first_seconds:.1f}s; "
            f"peak RSS {peak_rss_mb():.0f} MB (before: {rss_before:.0f} MB)"
        )
        # The daily pass, the next day: everyone rescored with their time windows moved (the
        # activity basis moved forward a day), stored rows compared and rewritten only where
        # they changed.
        day = now + dt.timedelta(days=1)
        reset_peak()
        began = time.perf_counter()
        recompute(db, tenant.id, day)
        full_seconds = time.perf_counter() - began
        print(
            f"daily full pass, the next day (basis moved a day, rows stored): "
            f"{full_seconds:.1f}s; peak RSS {peak_rss_mb():.0f} MB"
            + ("" if own_peak else " (the process's peak so far: this system cannot reset it)")
        )
        baseline, compared, disagree = sql_baseline(db, tenant.id, day)
        print(
            f"set-based SQL baseline (engagement and Activation, users and accounts): "
            f"{baseline:.1f}s; first and daily passes {first_seconds / baseline:.2f}x and "
            f"{full_seconds / baseline:.2f}x as long; "
            f"{disagree} of {compared} accounts disagree with the pass"
        )

        rng = random.Random(3)
        scenarios = (
            ("spread over all users", args.users),
            (f"from {args.active_users} active users", args.active_users),
            ("spread over all users, again", args.users),
        )
        moment = day
        for label, population in scenarios:
            moment += dt.timedelta(minutes=5)
            active = rng.sample(range(args.users), population)
            ingest_began = time.perf_counter()
            for _ in range(args.new_events // 100):
                batch = []
                for _ in range(100):
                    u = rng.choice(active)
                    event = rng.choice(["Report Created", "Logged In", "Dashboard Viewed"])
                    batch.append(
                        track(rng, f"user-{u}", f"acct-{u % args.accounts}", event, moment)
                    )
                messages, rejected = parse_messages({"batch": batch}, "batch", moment, 32 * 1024)
                ingest(db, tenant.id, messages, rejected, moment)
            ingest_seconds = time.perf_counter() - ingest_began
            began = time.perf_counter()
            # The worker scores on an interval: the pass starts some seconds after the events.
            incremental = recompute(db, tenant.id, moment + dt.timedelta(seconds=20), full=False)
            print(
                f"incremental recompute after {args.new_events} new events {label} "
                f"(ingested in {ingest_seconds:.1f}s): {incremental.accounts} accounts, "
                f"{incremental.users} users in {time.perf_counter() - began:.2f}s"
            )
        db.dispose()
    finally:
        drop_database(name)


if __name__ == "__main__":
    main()
