"""What a pass read about its subjects is let go subject by subject."""

from __future__ import annotations

import dataclasses
import datetime as dt

from app.scores.definitions_store import current_definitions
from app.scores.scoring_pass import recompute
from app.scores.subjects import Subjects, load_users
from tests.helpers.events import NOW, ev, group, send


def _two_subjects() -> Subjects:
    data = Subjects()
    for sid in (1, 2):
        data.first_seen[sid] = dt.date(2026, 11, 1)
        data.last_seen[sid] = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
        data.traits[sid] = {"plan": "trial"}
        data.totals[sid]["Logged In"] = 3
        data.first_day[sid]["Logged In"] = dt.date(2026, 11, 2)
        data.last_day[sid]["Logged In"] = dt.date(2026, 11, 29)
        data.in_frame[sid][7]["Logged In"] = 2.0
        data.decayed[sid][7]["Logged In"] = 1.5
        data.active_days[sid][30] = 2
        data.early[sid]["Logged In"][dt.date(2026, 11, 2)] = 1
        data.user_first_day[sid]["Logged In"][9] = dt.date(2026, 11, 2)
        data.distinct_users[sid]["Logged In"] = 1
        data.crm[sid] = {"owner": "ada"}
        data.domain[sid] = "acme.com"
        data.based[sid] = True
    return data


FIELDS = [f.name for f in dataclasses.fields(Subjects)]


def test_release_lets_go_of_every_fact_of_the_subject_and_only_of_it():
    data = _two_subjects()
    fields = FIELDS
    assert all(1 in getattr(data, name) for name in fields)
    data.release(1)
    assert [name for name in fields if 1 in getattr(data, name)] == []
    assert all(2 in getattr(data, name) for name in fields)
    assert data.take(2)[0].activity.totals == {"Logged In": 3}


def test_take_hands_over_the_facts_and_lets_go_of_every_one_of_the_subject():
    data = _two_subjects()
    facts, last_seen, domain = data.take(1)
    assert [name for name in FIELDS if 1 in getattr(data, name)] == []
    assert all(2 in getattr(data, name) for name in FIELDS)
    assert facts == data.take(2)[0]  # subject 2 holds the same facts
    assert (last_seen, domain) == (dt.datetime(2026, 11, 30, tzinfo=dt.UTC), "acme.com")
    assert facts.activity.in_frame[7] == {"Logged In": 2.0}
    assert facts.user_first_day["Logged In"] == {9: dt.date(2026, 11, 2)}


def test_absorb_takes_the_other_reads_subjects_and_keeps_its_own():
    data, again = Subjects(), Subjects()
    data.first_seen[1] = dt.date(2026, 11, 1)
    data.totals[1]["Logged In"] = 3
    again.first_seen[2] = dt.date(2026, 11, 5)
    again.totals[2]["Report Created"] = 1
    again.based[2] = True
    data.absorb(again)
    assert data.first_seen == {1: dt.date(2026, 11, 1), 2: dt.date(2026, 11, 5)}
    assert data.based == {2: True}
    assert data.take(2)[0].activity.totals == {"Report Created": 1}
    assert data.take(1)[0].activity.totals == {"Logged In": 3}


def test_loaded_facts_share_one_object_per_event_name_day_and_count(client, db, tenant_key):
    # A full pass holds every subject's facts at once: the driver's fresh copy of the same
    # event name, day or count for each of a hundred thousand users was a third of them.
    tenant_id, key = tenant_key
    messages = [group(f"u{n}", "g1", days_ago=20) for n in range(3)]
    for n in range(3):
        messages += ev(f"u{n}", "Logged In", "g1", days_ago=5, n=2)
        messages += ev(f"u{n}", "Report Created", "g1", days_ago=5, n=2)
    send(client, key, messages)
    recompute(db, tenant_id, NOW)
    defs = current_definitions(db, tenant_id).definitions
    with db.tenant_session(tenant_id) as session:
        users = load_users(session, None, defs, NOW.date())
    taken = [users.take(uid)[0] for uid in sorted(users.first_seen)]
    facts = [f.activity for f in taken]
    names = [next(e for e in a.totals if e == "Logged In") for a in facts]
    assert all(name is names[0] for name in names)
    days = [a.first_day["Logged In"] for a in facts] + [a.last_day["Report Created"] for a in facts]
    assert days[0] == (NOW - dt.timedelta(days=5)).date()
    assert all(day is days[0] for day in days)
    totals = [a.totals["Report Created"] for a in facts]
    in_frame = [a.in_frame[7]["Report Created"] for a in facts]
    assert totals == [2, 2, 2] and in_frame == [2.0, 2.0, 2.0]
    assert all(value is in_frame[0] for value in in_frame)
    assert all(isinstance(value, float) for value in in_frame)
    # What none of them has (decay, CRM, team counts) is one empty mapping, not one each.
    empty = [f.crm for f in taken]
    assert all(value == {} and value is empty[0] for value in empty)
