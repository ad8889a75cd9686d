"""When steps were completed: the rollup-guided reading PostgreSQL uses against the plain
window query over events, on random histories."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from sqlalchemy import select

from app.models import Account, Event, User
from app.scores.moments import _nth_by_days, _nth_query, many_step_moments
from scoring.definitions import Step
from tests.helpers.events import ev, group, send


def _random_history(client, key, rng: random.Random) -> None:
    messages = []
    for a in range(6):
        users = [f"m{a}-u{i}" for i in range(rng.randint(1, 4))]
        messages += [group(u, f"m{a}", plan="trial") for u in users]
        for _ in range(rng.randint(0, 12)):
            user = rng.choice(users)
            event = rng.choice(["Report Created", "Logged In"])
            # Whole and fractional days: several events a day, some on the same second.
            days_ago = rng.choice([0.2, 1, 1.5, 3, 3.25, 7, 20, 20])
            messages += ev(user, event, f"m{a}", days_ago=days_ago, n=rng.randint(1, 3))
    send(client, key, messages)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_nth_occurrence_or_user_read_through_the_rollups_is_the_plain_answer(
    client, db, tenant_key, seed
):
    if db.dialect != "postgresql":
        pytest.skip("the rollup-guided reading is PostgreSQL's")
    tenant_id, key = tenant_key
    _random_history(client, key, random.Random(seed))
    compared = 0
    with db.tenant_session(tenant_id) as session:
        for kind, subject, model, column in (
            ("event_count", "account", Account, Event.account_id),
            ("event_count", "user", User, Event.user_id),
            ("distinct_users", "account", Account, Event.account_id),
        ):
            ids = sorted(session.scalars(select(model.id)))
            for event in ("Report Created", "Logged In"):
                for n in (1, 2, 3, 5, 8):
                    plain = dict(session.execute(_nth_query(kind, column, event, n, ids)).all())
                    guided = {
                        sid: moment.replace(tzinfo=dt.UTC)
                        for sid, moment in session.execute(
                            _nth_by_days(kind, subject, n),
                            {"ids": ids, "event": event, "tenant_id": tenant_id},
                        )
                    }
                    assert guided == plain, (kind, subject, event, n)
                    compared += len(plain)
        # And through the public reader: a step's moment is the same either way.
        step = Step("r", "Reported twice", "event_count", event="Report Created", min_count=2)
        accounts = sorted(session.scalars(select(Account.id)))
        moments = many_step_moments(session, "account", {a: [step] for a in accounts})
        plain = dict(
            session.execute(
                _nth_query("event_count", Event.account_id, step.event, 2, accounts)
            ).all()
        )
        assert {a: m[0] for a, m in moments.items() if m[0]} == plain
    assert compared > 20
