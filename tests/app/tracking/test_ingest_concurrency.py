"""Parallel requests (as several gunicorn workers would make them) lose and duplicate nothing."""

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from app.models import Account, AccountEventDay, Event, User, UserEventDay
from tests.helpers.tracking import basic, track


def _post(url: str, key: str, batch: list[dict]) -> int:
    request = urllib.request.Request(
        f"{url}/v1/batch",
        data=json.dumps({"batch": batch}).encode(),
        headers={"Content-Type": "application/json", **basic(key)},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def test_parallel_overlapping_batches_store_each_message_once_and_count_exactly(
    live_server, db, tenant_key
):
    tenant_id, key = tenant_key
    # 40 batches over 8 threads; every message is sent twice (a retry in another request), and
    # all batches touch the same 5 users and 2 accounts, some creating them concurrently.
    messages = [
        track(
            "Report Created",
            f"u{i % 5}",
            context={"groupId": f"acct-{i % 2}"},
            messageId=f"m-{i}",
        )
        for i in range(400)
    ]
    batches = [messages[i : i + 20] for i in range(0, 400, 20)]
    batches += [list(reversed(b)) for b in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda b: _post(live_server, key, b), batches))
    assert statuses == [200] * len(batches)
    with db.tenant_session(tenant_id) as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 400
        assert s.scalar(select(func.count()).select_from(User)) == 5
        assert s.scalar(select(func.count()).select_from(Account)) == 2
        assert s.scalar(select(func.sum(UserEventDay.count))) == 400
        assert s.scalar(select(func.sum(AccountEventDay.count))) == 400
