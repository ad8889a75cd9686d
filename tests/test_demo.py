import datetime as dt
import random

from app.demo import account_scores, account_summary, demo_tenant_with_fresh_key, send_batches
from app.sample_data import DEMO_ACCOUNTS, demo_messages
from app.scoring_jobs import recompute
from app.tenants import resolve_write_key


def test_demo_messages_become_accounts_with_members_and_counts(app, live_server, db):
    with app.app_context():
        tenant_id, key = demo_tenant_with_fresh_key()
        now = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
        messages = demo_messages(random.Random("t"), now)
        assert send_batches(live_server, key, messages) == len(messages)
        summary = account_summary(tenant_id)
        recompute(db, tenant_id, now)
        scores = account_scores(tenant_id)
    assert [row["account"] for row in summary] == sorted(a.name for a in DEMO_ACCOUNTS)
    assert {row["account"] for row in scores} == {a.name for a in DEMO_ACCOUNTS}
    assert all(
        (row["pql_reason"] and row["next_step"] is not None) or row["activation_rate"] == 100
        for row in scores
    )
    tracks = sum(1 for m in messages if m["type"] == "track")
    assert sum(sum(row["events"].values()) for row in summary) == tracks
    assert {row["users"] for row in summary} == {len(a.user_ids) for a in DEMO_ACCOUNTS}


def test_running_the_demo_again_revokes_the_previous_demo_key(app, db):
    with app.app_context():
        first_tenant, first_key = demo_tenant_with_fresh_key()
        second_tenant, second_key = demo_tenant_with_fresh_key()
    assert first_tenant == second_tenant
    assert resolve_write_key(db, first_key) is None
    assert resolve_write_key(db, second_key).tenant_id == second_tenant
