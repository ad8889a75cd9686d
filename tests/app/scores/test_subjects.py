"""What a pass read about its subjects is let go subject by subject."""

from __future__ import annotations

import dataclasses
import datetime as dt

from app.scores.subjects import Subjects


def test_release_lets_go_of_every_fact_of_the_subject_and_only_of_it():
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
    fields = [f.name for f in dataclasses.fields(Subjects)]
    assert all(1 in getattr(data, name) for name in fields)
    data.release(1)
    assert [name for name in fields if 1 in getattr(data, name)] == []
    assert all(2 in getattr(data, name) for name in fields)
    assert data.facts(2).activity.totals == {"Logged In": 3}
