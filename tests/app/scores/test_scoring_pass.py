"""Recompute from ingested events to stored scores, full and incremental."""

import datetime as dt
import os

import pytest
from sqlalchemy import select

from app.models import Account, AccountScore, ScoreHistory, User, UserScore
from app.scores import activity_basis
from app.scores.definitions_store import current_definitions, save_definitions, to_document
from app.scores.scoring_pass import recompute
from app.tenants import create_tenant, issue_write_key
from tests.helpers.events import NOW, acme_trial, ev, group, send


def scores(db, tenant_id, model=AccountScore):
    with db.tenant_session(tenant_id) as s:
        if model is AccountScore:
            rows = s.execute(
                select(Account.external_id, AccountScore).join(
                    AccountScore, AccountScore.account_id == Account.id
                )
            ).all()
        else:
            rows = s.execute(
                select(User.external_id, UserScore).join(UserScore, UserScore.user_id == User.id)
            ).all()
    return {name: score for name, score in rows}


def test_full_recompute_scores_accounts_and_users_from_ingested_events(client, db, tenant_key):
    tenant_id, key = tenant_key
    acme_trial(client, key)
    send(
        client,
        key,
        [group("cy", "initech", plan="paid", employees=10), *ev("cy", "Logged In", "initech")],
    )
    summary = recompute(db, tenant_id, NOW)
    assert (summary.full, summary.accounts, summary.users) == (True, 2, 3)

    acme = scores(db, tenant_id)["acme"]
    assert acme.activation_rate == 60.0
    assert acme.next_step == "3 people logged in"
    assert (acme.pql, acme.pql_kind, acme.deal_size) == (True, "criteria", "mid")
    assert "60% threshold for a mid-size deal (120 employees)" in acme.pql_reason
    assert acme.engagement_score == 100.0  # the busiest account sets the 90th percentile
    assert acme.total_users == 2 and acme.active_users == 2
    assert acme.definitions_version == current_definitions(db, tenant_id).version
    assert "Most engaged" in acme.segments["names"] and "Multi-user" in acme.segments["names"]

    initech = scores(db, tenant_id)["initech"]
    assert initech.pql is False and "Not a trial" in initech.pql_reason
    assert initech.engagement_score < acme.engagement_score

    users = scores(db, tenant_id, UserScore)
    assert users["ada"].activation_rate == round(100 / 3, 2)  # created a report; no profile name
    assert users["ada"].engagement_raw == 2 * 8 + 3 * 7 - 5  # no login in 7 days


def test_incremental_pass_scores_only_what_changed(app, client, db, tenant_key):
    tenant_id, key = tenant_key
    # Received before the pass (the real date would be after it, or on another day).
    app.extensions["pql"].clock = lambda: NOW - dt.timedelta(minutes=5)
    acme_trial(client, key)
    send(
        client,
        key,
        [group("cy", "initech", plan="trial", employees=10), *ev("cy", "Logged In", "initech")],
    )
    recompute(db, tenant_id, NOW)
    before = {k: v.computed_at for k, v in scores(db, tenant_id).items()}

    later = NOW + dt.timedelta(hours=1)
    app.extensions["pql"].clock = lambda: later
    send(client, key, ev("cy", "Report Created", "initech", days_ago=0))
    summary = recompute(db, tenant_id, later, full=False)
    assert (summary.full, summary.accounts, summary.users) == (False, 1, 1)
    after = scores(db, tenant_id)
    assert after["initech"].computed_at == later
    assert after["acme"].computed_at == before["acme"]
    assert after["initech"].activation_rate == 20.0


def test_changed_definitions_turn_an_incremental_pass_into_a_full_one(client, db, tenant_key):
    tenant_id, key = tenant_key
    acme_trial(client, key)
    recompute(db, tenant_id, NOW)
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["pql"]["complexity"] = "complex"
    save_definitions(db, tenant_id, document, "test")
    summary = recompute(db, tenant_id, NOW + dt.timedelta(hours=1), full=False)
    assert summary.full
    assert scores(db, tenant_id)["acme"].definitions_version == 2


def _two_periods(client, key):
    """Four paying accounts over two 7-day periods (default weights: a login 1, a report 8; no
    login in 7 days −5). "busy" (10 reports, 75) is the busiest in both, so the grades are
    comparable: "steady" and "busy" do the same in both periods, "falling" was busy (38) and
    logged in once since (1), "mixed" created 2 reports then (11) and logged in 16 times now
    (16)."""
    messages = []
    for account, before, now in (
        ("busy", {"Report Created": 10}, {"Report Created": 10}),
        ("steady", {"Logged In": 6, "Report Created": 2}, {"Logged In": 6, "Report Created": 2}),
        ("falling", {"Report Created": 4, "Logged In": 6}, {"Logged In": 1}),
        ("mixed", {"Report Created": 2}, {"Logged In": 16}),
    ):
        messages.append(group(f"{account}-u", account, days_ago=40, plan="paid", name=account))
        for days_ago, counts in ((8, before), (1, now)):
            for event, n in counts.items():
                messages += ev(f"{account}-u", event, account, days_ago=days_ago, n=n)
    send(client, key, messages)


def _grade(raw, p90=75):
    return round(raw / p90 * 100, 2)


def test_drop_against_the_previous_period_is_ice_cold(client, db, tenant_key):
    """The previous period is scored from the rollups (no earlier pass needed): a backfilled
    tenant has its trend on its first pass."""
    tenant_id, key = tenant_key
    _two_periods(client, key)
    recompute(db, tenant_id, NOW)
    rows = scores(db, tenant_id)
    assert rows["steady"].trend_change == 0 and rows["steady"].trend_segment is None
    assert rows["busy"].trend_change == 0
    assert rows["mixed"].trend_change == round(_grade(16) - _grade(11), 2)
    falling = rows["falling"]
    assert falling.engagement_score == _grade(1)
    assert falling.trend_change == round(_grade(1) - _grade(38), 2)
    assert falling.trend_segment == "Ice Cold" and "Ice Cold" in falling.segments["names"]
    assert falling.drop_excused is False


def test_a_subject_first_seen_in_this_period_has_no_trend(client, db, tenant_key):
    tenant_id, key = tenant_key
    _two_periods(client, key)
    send(
        client,
        key,
        [
            group("n-u", "newcomer", days_ago=3, plan="paid"),
            *ev("n-u", "Report Created", "newcomer"),
        ],
    )
    recompute(db, tenant_id, NOW)
    newcomer = scores(db, tenant_id)["newcomer"]
    assert newcomer.trend_change is None and newcomer.trend_segment is None
    assert "New" in newcomer.segments["names"]


def test_trend_compares_like_with_like_after_a_weight_change(client, db, tenant_key):
    """The week-old pass ran under the old weights; after a weight change the previous period
    is rescored under the new ones, so an account doing the same as then has no change."""
    tenant_id, key = tenant_key
    _two_periods(client, key)
    recompute(db, tenant_id, NOW - dt.timedelta(days=7))
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["profiles"][0]["weights"]["Logged In"] = 3
    save_definitions(db, tenant_id, document, "test")
    recompute(db, tenant_id, NOW)
    rows = scores(db, tenant_id)
    # Under the old weights "steady" scored 22 / 75 a week ago; under the new ones it scores
    # 34 / 75 in both periods.
    for name in ("steady", "busy"):
        assert rows[name].trend_change == 0, name
    # Like for like, "mixed" went up: 11 then, 48 now.
    assert rows["mixed"].trend_change == round(_grade(48) - _grade(11), 2)
    assert rows["mixed"].trend_segment == "Red Hot"


def test_a_rule_change_alone_never_makes_a_drop_that_opens_a_cs_task(client, db, tenant_key):
    """Mixed swapped reports for logins: under the default weights it went up a little; once
    logins stop counting it is Ice Cold like for like, but only because of the change:
    excused, and it stays excused while it stays Ice Cold. A drop under unchanged scoring
    rules is not excused."""
    tenant_id, key = tenant_key
    _two_periods(client, key)
    recompute(db, tenant_id, NOW)
    assert scores(db, tenant_id)["mixed"].trend_segment is None
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["profiles"][0]["weights"]["Logged In"] = 0
    save_definitions(db, tenant_id, document, "test")
    recompute(db, tenant_id, NOW + dt.timedelta(minutes=5))
    rows = scores(db, tenant_id)
    assert rows["mixed"].trend_segment == "Ice Cold" and rows["mixed"].drop_excused is True
    assert rows["falling"].trend_segment == "Ice Cold" and rows["falling"].drop_excused is False
    # Later passes under the same rules keep the excuse while the account stays Ice Cold.
    recompute(db, tenant_id, NOW + dt.timedelta(minutes=10), full=True)
    assert scores(db, tenant_id)["mixed"].drop_excused is True
    # A change outside the scoring rules does not excuse a new drop.
    document["key_features"] = document["key_features"][:3]
    save_definitions(db, tenant_id, document, "test")
    with db.tenant_transaction(tenant_id) as s:
        falling_id = s.scalar(select(Account.id).where(Account.external_id == "falling"))
        s.get(AccountScore, falling_id).trend_segment = None
    recompute(db, tenant_id, NOW + dt.timedelta(minutes=15))
    assert scores(db, tenant_id)["falling"].drop_excused is False


def test_first_activation_and_pql_times_survive_later_passes(client, db, tenant_key):
    tenant_id, key = tenant_key
    acme_trial(client, key)
    recompute(db, tenant_id, NOW)
    first_pql_at = scores(db, tenant_id)["acme"].pql_at
    recompute(db, tenant_id, NOW + dt.timedelta(days=1))
    # When it qualified: the event that completed the third step (a day before the pass).
    assert scores(db, tenant_id)["acme"].pql_at == first_pql_at == NOW - dt.timedelta(days=1)


def test_activated_at_and_pql_at_are_when_it_happened_late_events_included(client, db, tenant_key):
    tenant_id, key = tenant_key
    # Events from weeks ago arrive only now (a backfill). Acme (120 employees: a mid-size deal,
    # 60% = 3 of 5 steps to qualify) did its third step 28 days ago and its last 26 days ago.
    send(
        client,
        key,
        [
            group("ada", "acme", days_ago=40, plan="trial", employees=120, name="Acme"),
            group("bob", "acme", days_ago=40),
            group("cy", "acme", days_ago=40),
            *ev("ada", "Report Created", "acme", days_ago=30),
            *ev("ada", "Teammate Invited", "acme", days_ago=29, n=3),
            *ev("ada", "Dashboard Shared", "acme", days_ago=28),
            *ev("ada", "Logged In", "acme", days_ago=28),
            *ev("bob", "Logged In", "acme", days_ago=27),
            *ev("ada", "Integration Connected", "acme", days_ago=27.5),
            *ev("cy", "Logged In", "acme", days_ago=26),
            *ev("cy", "Logged In", "acme", days_ago=1),
        ],
    )
    recompute(db, tenant_id, NOW)
    acme = scores(db, tenant_id)["acme"]
    assert acme.activated and acme.pql
    # The third Logged In user (cy, 26 days ago) completed the checklist.
    assert acme.activated_at == NOW - dt.timedelta(days=26)
    # The third step done (Dashboard Shared, 28 days ago) met the 60% threshold.
    assert acme.pql_at == NOW - dt.timedelta(days=28)
    # A user's activation is theirs: ada's last user step, not the pass.
    users = scores(db, tenant_id, UserScore)
    assert all(u.activated_at is None or u.activated_at < NOW for u in users.values())


def test_history_keeps_one_compact_row_per_subject_and_day(client, db, tenant_key):
    tenant_id, key = tenant_key
    acme_trial(client, key)
    recompute(db, tenant_id, NOW)
    recompute(db, tenant_id, NOW + dt.timedelta(hours=2))
    with db.tenant_session(tenant_id) as s:
        rows = s.scalars(select(ScoreHistory).where(ScoreHistory.subject == "a")).all()
    assert len(rows) == 1 and rows[0].engagement_score == 100


def test_scoring_one_tenant_leaves_another_alone(client, db):
    a = create_tenant(db, "A")
    b = create_tenant(db, "B")
    acme_trial(client, issue_write_key(db, a.id).secret)
    acme_trial(client, issue_write_key(db, b.id).secret)
    recompute(db, a.id, NOW)
    assert len(scores(db, a.id)) == 1
    assert scores(db, b.id) == {}


def test_activity_read_from_rollups_equals_the_engines_own_summary(client, db, tenant_key):
    """The grouped SQL in app.scores.scoring_pass must mean what scoring.engine.summarize means."""
    from app.scores.subjects import load_users
    from scoring.engine import summarize

    tenant_id, key = tenant_key
    messages = []
    for days_ago, event, n in [
        (0, "Logged In", 2),
        (3, "Logged In", 1),
        (6, "Report Created", 4),
        (7, "Report Created", 1),
        (29, "Dashboard Viewed", 3),
        (45, "Logged In", 5),
    ]:
        messages += ev("ada", event, "acme", days_ago=days_ago, n=n)
    send(client, key, messages)
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["profiles"].append(
        {
            **document["profiles"][0],
            "name": "Monthly",
            "time_frame_days": 30,
            "decay": True,
            "default": False,
        }
    )
    defs = save_definitions(db, tenant_id, document, "test").definitions
    today = NOW.date()
    daily: dict = {}
    for m in messages:
        day = dt.datetime.fromisoformat(m["timestamp"]).date()
        daily.setdefault(m["event"], {}).setdefault(day, 0)
        daily[m["event"]][day] += 1
    expected = summarize(daily, today, frames=(7, 30), windows=(30,))
    with db.tenant_transaction(tenant_id) as s:
        # Everything before today from the basis, today's rows live: the sum must be the same.
        activity_basis.rebuild(s, tenant_id, activity_basis.USERS, None, defs, today)
        data = load_users(s, None, defs, today)
    (uid,) = data.first_seen
    activity = data.take(uid)[0].activity
    assert activity.totals == expected.totals
    assert activity.first_day == expected.first_day and activity.last_day == expected.last_day
    assert {f: dict(v) for f, v in activity.in_frame.items()} == {
        f: v for f, v in expected.in_frame.items() if v
    }
    assert activity.decayed[30] == pytest.approx(expected.decayed[30])
    assert activity.active_days == expected.active_days


def test_incremental_account_totals_still_count_members_not_rescored(app, client, db, tenant_key):
    tenant_id, key = tenant_key
    app.extensions["pql"].clock = lambda: NOW - dt.timedelta(minutes=5)
    acme_trial(client, key)
    recompute(db, tenant_id, NOW)
    later = NOW + dt.timedelta(hours=1)
    app.extensions["pql"].clock = lambda: later
    send(client, key, ev("ada", "Logged In", "acme", days_ago=0))
    summary = recompute(db, tenant_id, later, full=False)
    assert (summary.accounts, summary.users) == (1, 1)  # bob was not rescored
    acme = scores(db, tenant_id)["acme"]
    assert (acme.total_users, acme.active_users) == (2, 2)
    assert acme.computed_at == later


def test_three_people_logging_in_completes_the_team_step(client, db, tenant_key):
    tenant_id, key = tenant_key
    messages = [group(u, "acme", plan="trial", employees=120) for u in ("ada", "bob", "cy")]
    for user in ("ada", "bob", "cy", "cy"):
        messages += ev(user, "Logged In", "acme")
    send(client, key, messages)
    recompute(db, tenant_id, NOW)
    acme = scores(db, tenant_id)["acme"]
    assert "team" in acme.steps_done["done"]
    assert acme.activation_rate == 20.0


def test_a_hand_raiser_event_makes_a_pql_with_the_day_it_happened(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(
        client,
        key,
        [
            group("ada", "acme", plan="trial", employees=10),
            *ev("ada", "Demo Requested", "acme", days_ago=3),
        ],
    )
    recompute(db, tenant_id, NOW)
    acme = scores(db, tenant_id)["acme"]
    day = (NOW - dt.timedelta(days=3)).date().isoformat()
    assert (acme.pql, acme.pql_kind) == (True, "hand_raiser")
    assert acme.pql_reason == f"Asked for sales: did 'Demo Requested' on {day}."


# --- the activity basis: incremental passes must equal a full pass ---------------------------

COMPARED = (
    "activation_rate",
    "activated",
    "steps_done",
    "next_step",
    "engagement_raw",
    "adoption_rate",
    "adoption_rate_ever",
    "active_days",
    "previous_raw",
)


def comparable(db, tenant_id):
    out = {}
    for model in (AccountScore, UserScore):
        for name, score in scores(db, tenant_id, model).items():
            out[(model.__name__, name)] = {f: getattr(score, f) for f in COMPARED}
            if model is AccountScore:
                out[(model.__name__, name)]["users"] = (score.total_users, score.active_users)
    return out


def incremental_then_full(app, db, tenant_id, moment):
    """Scores after an incremental pass, and after a full pass at the same moment."""
    summary = recompute(db, tenant_id, moment, full=False)
    assert summary.full is False
    incremental = comparable(db, tenant_id)
    recompute(db, tenant_id, moment, full=True)
    return incremental, comparable(db, tenant_id)


def test_an_event_that_arrives_late_counts_in_the_next_incremental_pass(
    app, client, db, tenant_key
):
    tenant_id, key = tenant_key
    app.extensions["pql"].clock = lambda: NOW - dt.timedelta(minutes=5)
    acme_trial(client, key)
    recompute(db, tenant_id, NOW)
    later = NOW + dt.timedelta(hours=1)
    app.extensions["pql"].clock = lambda: later
    # Happened three days ago (a mobile client offline since), received now: before the basis day.
    send(client, key, ev("ada", "Integration Connected", "acme", days_ago=3))
    incremental, full = incremental_then_full(app, db, tenant_id, later)
    assert "integration" in incremental[("AccountScore", "acme")]["steps_done"]["done"]
    assert incremental == full


def test_a_merge_after_the_full_pass_is_seen_by_the_incremental_pass(app, client, db, tenant_key):
    tenant_id, key = tenant_key
    app.extensions["pql"].clock = lambda: NOW - dt.timedelta(minutes=5)
    messages = [group(u, "acme", plan="trial", employees=120) for u in ("ada", "bob", "cy")]
    for user in ("ada", "bob", "cy"):
        messages += ev(user, "Logged In", "acme", days_ago=2)
    # Both seen in the previous period, cy more than bob: the merge changes bob's past.
    messages += ev("bob", "Logged In", "acme", days_ago=10)
    messages += ev("cy", "Report Created", "acme", days_ago=10, n=3)
    send(client, key, messages)
    recompute(db, tenant_id, NOW)
    assert "team" in scores(db, tenant_id)["acme"].steps_done["done"]
    bob_before = comparable(db, tenant_id)[("UserScore", "bob")]["previous_raw"]

    later = NOW + dt.timedelta(hours=1)
    app.extensions["pql"].clock = lambda: later
    # cy turns out to be bob: two of the three people are one, the team step is undone.
    alias = {"type": "alias", "userId": "bob", "previousId": "cy", "timestamp": later.isoformat()}
    send(client, key, [alias, *ev("bob", "Dashboard Viewed", "acme", days_ago=0)])
    incremental, full = incremental_then_full(app, db, tenant_id, later)
    assert "team" not in incremental[("AccountScore", "acme")]["steps_done"]["done"]
    assert incremental[("UserScore", "bob")]["active_days"] == 3  # 10 and 2 days ago, today
    # bob's previous period now holds cy's: read again, not the stored one.
    assert incremental[("UserScore", "bob")]["previous_raw"] > bob_before
    assert incremental == full
    assert ("UserScore", "cy") not in incremental  # merged into bob


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_passes_agree_with_a_full_pass(app, client, db, tenant_key, seed):
    """Random traffic after a full pass (today's events, late ones, new users and accounts):
    what the incremental passes store equals what a full pass computes from scratch."""
    import random

    rng = random.Random(seed)
    tenant_id, key = tenant_key
    events = ["Logged In", "Report Created", "Dashboard Viewed", "Dashboard Shared"]
    moment = NOW - dt.timedelta(minutes=30)
    app.extensions["pql"].clock = lambda: moment
    history = []
    for u in range(12):
        history.append(group(f"u{u}", f"g{u % 4}", days_ago=40, plan="trial", employees=50))
        for _ in range(rng.randint(0, 8)):
            history += ev(f"u{u}", rng.choice(events), f"g{u % 4}", days_ago=rng.randint(0, 45))
    send(client, key, history)
    recompute(db, tenant_id, NOW - dt.timedelta(minutes=20))
    for round_ in range(3):
        moment = NOW + dt.timedelta(minutes=10 * round_)
        batch = []
        for _ in range(rng.randint(1, 15)):
            u = rng.randint(0, 15)  # u12..u15 are new
            if u >= 12 and rng.random() < 0.5:
                batch.append(group(f"u{u}", f"g{u % 5}", days_ago=0, plan="trial"))
            batch += ev(f"u{u}", rng.choice(events), f"g{u % 5}", days_ago=rng.choice([0, 0, 1, 9]))
        send(client, key, batch)
        summary = recompute(db, tenant_id, moment + dt.timedelta(seconds=30), full=False)
        assert summary.full is False
    incremental = comparable(db, tenant_id)
    recompute(db, tenant_id, moment + dt.timedelta(seconds=30), full=True)
    assert incremental == comparable(db, tenant_id)


def test_the_first_pass_of_a_new_day_is_a_full_one(app, client, db, tenant_key):
    tenant_id, key = tenant_key
    acme_trial(client, key)
    recompute(db, tenant_id, NOW)
    assert recompute(db, tenant_id, NOW + dt.timedelta(hours=2), full=False).full is False
    assert recompute(db, tenant_id, NOW + dt.timedelta(days=1), full=False).full is True


def test_lead_types_and_chance_to_convert_are_for_trial_and_free_accounts_only(
    client, db, tenant_key
):
    tenant_id, key = tenant_key
    acme_trial(client, key)
    send(
        client,
        key,
        [
            group("di", "umbrella", plan="paid", employees=30, name="Umbrella"),
            *ev("di", "Logged In", "umbrella", n=2),
        ],
    )
    recompute(db, tenant_id, NOW)
    by_name = {}
    with db.tenant_session(tenant_id) as session:
        for name, score in session.execute(
            select(Account.name, AccountScore).join(
                AccountScore, AccountScore.account_id == Account.id
            )
        ):
            by_name[name] = score
    trial, paying = by_name["Acme"], by_name["Umbrella"]
    assert trial.lead_type and trial.chance_to_convert is not None
    assert trial.forecast_value is not None
    # A paying account has converted: no lead type, no chance to convert, no forecast.
    assert (paying.lead_type, paying.chance_to_convert, paying.forecast_value) == (None, None, None)


def test_traits_are_not_activity(client, db, tenant_key):
    tenant_id, key = tenant_key
    acme_trial(client, key)
    recompute(db, tenant_id, NOW)
    before = scores(db, tenant_id)["acme"]
    before_user = scores(db, tenant_id, UserScore)["ada"]
    # Later the same day: a group call that only changes employees, an identify with a trait.
    send(
        client,
        key,
        [
            group("ada", "acme", days_ago=0, employees=130),
            {
                "type": "identify",
                "userId": "ada",
                "traits": {"title": "CTO"},
                "timestamp": NOW.isoformat(),
            },
        ],
    )
    recompute(db, tenant_id, NOW, full=True)
    after = scores(db, tenant_id)["acme"]
    after_user = scores(db, tenant_id, UserScore)["ada"]
    assert after.last_active_at == before.last_active_at < NOW - dt.timedelta(hours=12)
    assert after.active_users == before.active_users
    assert after_user.last_active_at == before_user.last_active_at


def test_a_hand_raisers_pql_at_is_the_time_of_the_request(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(
        client,
        key,
        [
            group("ada", "acme", days_ago=20, plan="trial", employees=120, name="Acme"),
            *ev("ada", "Demo Requested", "acme", days_ago=3),
            *ev("ada", "Logged In", "acme", days_ago=1),
        ],
    )
    recompute(db, tenant_id, NOW)
    acme = scores(db, tenant_id)["acme"]
    assert (acme.pql, acme.pql_kind) == (True, "hand_raiser")
    assert acme.pql_at == NOW - dt.timedelta(days=3)


def test_a_pass_writes_only_the_scores_that_changed(client, db, tenant_key):
    """An unchanged score is not rewritten, so the next push does not look at it; a changed
    one is updated and flagged; a subject that is gone loses its row in a full pass."""
    tenant_id, key = tenant_key
    acme_trial(client, key)
    send(client, key, [group("cy", "initech", plan="trial"), *ev("cy", "Logged In", "initech")])
    recompute(db, tenant_id, NOW)

    def pending():
        with db.tenant_session(tenant_id) as s:
            accounts = s.scalars(
                select(Account.external_id)
                .join(AccountScore, AccountScore.account_id == Account.id)
                .where(AccountScore.crm_pending.is_(True))
            ).all()
            users = s.scalars(
                select(User.external_id)
                .join(UserScore, UserScore.user_id == User.id)
                .where(UserScore.crm_pending.is_(True))
            ).all()
        return sorted(accounts), sorted(users)

    def pushed():
        with db.tenant_transaction(tenant_id) as s:
            for model in (AccountScore, UserScore):
                for row in s.scalars(select(model)):
                    row.crm_pending = False

    assert pending() == (["acme", "initech"], ["ada", "bob", "cy"])
    pushed()
    computed = scores(db, tenant_id)["acme"].computed_at
    recompute(db, tenant_id, NOW + dt.timedelta(minutes=5), full=True)
    assert pending() == ([], [])
    assert scores(db, tenant_id)["acme"].computed_at == computed  # not rewritten
    # Cy does more: cy and initech change (acme's grade may move with the percentile too).
    send(client, key, ev("cy", "Report Created", "initech", n=30))
    recompute(db, tenant_id, NOW + dt.timedelta(minutes=10), full=True)
    accounts, users = pending()
    assert "initech" in accounts and "cy" in users
    assert "initech" in accounts and scores(db, tenant_id)["initech"].computed_at > computed


def test_fit_is_scored_gates_pqls_when_asked_and_tells_poor_fits_apart(client, db, tenant_key):
    tenant_id, key = tenant_key
    acme_trial(client, key)  # a mid-size trial PQL (120 employees)
    send(client, key, [group("cy", "initech", plan="trial", employees=5000, industry="saas")])
    recompute(db, tenant_id, NOW)
    assert scores(db, tenant_id)["acme"].fit_band is None  # no rules: fit not scored
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["fit"]["rules"] = [
        {
            "label": "1000+ employees",
            "points": 50,
            "conditions": [{"field": "trait.employees", "op": "gte", "value": 1000}],
        },
        {
            "label": "SaaS",
            "points": 30,
            "conditions": [{"field": "trait.industry", "op": "equals", "value": "saas"}],
        },
    ]
    document["pql"]["min_fit_band"] = "B"
    save_definitions(db, tenant_id, document, "test")
    recompute(db, tenant_id, NOW + dt.timedelta(minutes=1))
    rows = scores(db, tenant_id)
    acme, initech = rows["acme"], rows["initech"]
    assert (initech.fit_score, initech.fit_band) == (80.0, "A")
    assert initech.fit_reason == "Fit A (80): 1000+ employees (+50); SaaS (+30)."
    assert (acme.fit_score, acme.fit_band) == (0.0, "D")
    # Acme reached its Activation threshold but its fit is below B: not a PQL, and says why.
    assert acme.pql is False and "below the B needed" in acme.pql_reason
    # Segments can use fit.
    document["segments"].append(
        {"name": "Best fit", "conditions": [{"field": "fit_band", "op": "equals", "value": "A"}]}
    )
    save_definitions(db, tenant_id, document, "test")
    recompute(db, tenant_id, NOW + dt.timedelta(minutes=2))
    rows = scores(db, tenant_id)
    assert "Best fit" in rows["initech"].segments["names"]
    assert "Best fit" not in rows["acme"].segments["names"]


def test_when_many_subjects_activate_at_once_their_moments_are_read_in_bulk(client, db):
    """A first pass over a backfilled tenant activates every subject at once: the completion
    times are read with a query per step, not per subject, so 24 activated accounts cost about
    what 4 do."""
    from sqlalchemy import event

    def activated_tenant(name: str, accounts: int) -> int:
        tenant_id = create_tenant(db, name).id
        key = issue_write_key(db, tenant_id).secret
        messages = []
        for n in range(accounts):
            account, users = f"{name}-{n}", [f"{name}-{n}-u{i}" for i in range(3)]
            messages += [group(u, account, plan="trial", employees=10) for u in users]
            messages += ev(users[0], "Report Created", account, days_ago=5)
            messages += ev(users[0], "Teammate Invited", account, days_ago=5, n=3)
            messages += [m for u in users for m in ev(u, "Logged In", account, days_ago=4)]
            messages += ev(users[0], "Integration Connected", account, days_ago=3)
            messages += ev(users[0], "Dashboard Shared", account, days_ago=2)
        send(client, key, messages)
        return tenant_id

    def statements(tenant_id: int) -> int:
        count = [0]

        def seen(*args):
            count[0] += 1

        event.listen(db.engine, "before_cursor_execute", seen)
        try:
            recompute(db, tenant_id, NOW)
        finally:
            event.remove(db.engine, "before_cursor_execute", seen)
        return count[0]

    few, many = activated_tenant("few", 4), activated_tenant("many", 24)
    few_count, many_count = statements(few), statements(many)
    with db.tenant_session(many) as s:
        activated = s.scalars(select(AccountScore).where(AccountScore.activated.is_(True))).all()
    assert len(activated) == 24
    assert all(a.activated_at == NOW - dt.timedelta(days=2) for a in activated)
    assert many_count - few_count < 20, (few_count, many_count)


def test_an_incremental_pass_reuses_the_previous_period_unless_the_profile_changed(
    app, client, db, tenant_key
):
    """The previous period's raw is kept for the day; a subject whose traits move it to another
    profile during the day has it recomputed under that profile, as a full pass would."""
    tenant_id, key = tenant_key
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["profiles"].append(
        {
            **document["profiles"][0],
            "name": "Paid",
            "time_frame_days": 7,
            "weights": {"Report Created": 1, "Logged In": 10},
            "penalties": [],
            "applies_to": [{"field": "trait.plan", "op": "equals", "value": "paid"}],
            "default": False,
        }
    )
    save_definitions(db, tenant_id, document, "test")
    app.extensions["pql"].clock = lambda: NOW - dt.timedelta(minutes=5)
    acme_trial(client, key)
    send(client, key, ev("ada", "Logged In", "acme", days_ago=9, n=4))
    recompute(db, tenant_id, NOW)
    before = scores(db, tenant_id)["acme"]
    assert before.profile == "Default" and before.previous_raw is not None

    later = NOW + dt.timedelta(minutes=10)
    app.extensions["pql"].clock = lambda: later
    send(client, key, [group("ada", "acme", days_ago=0, plan="paid")])
    assert recompute(db, tenant_id, later, full=False).full is False
    incremental = scores(db, tenant_id)["acme"]
    recompute(db, tenant_id, later, full=True)
    full = scores(db, tenant_id)["acme"]
    assert incremental.profile == full.profile == "Paid"
    assert incremental.previous_raw == full.previous_raw != before.previous_raw
    assert incremental.trend_change == full.trend_change


@pytest.mark.skipif(
    os.environ.get("PQL_TEST_DB", "sqlite") != "postgresql", reason="PostgreSQL statistics"
)
def test_statistics_are_refreshed_after_a_pass_from_scratch_not_after_the_daily_move(
    client, db, tenant_key
):
    """A pass that rebuilt the basis (the first, new definitions) may have written every score
    row: it analyses the score tables. The daily pass that moves the basis a day changes the
    rows' values, not their number: it leaves that to autovacuum."""
    from sqlalchemy import event

    tenant_id, key = tenant_key
    acme_trial(client, key)

    def analysed(moment: dt.datetime) -> list[str]:
        seen: list[str] = []

        def record(conn, cursor, statement, *args):
            if statement.lstrip().upper().startswith("ANALYZE"):
                seen.append(statement)

        event.listen(db.engine, "before_cursor_execute", record)
        try:
            recompute(db, tenant_id, moment)
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        return seen

    assert any("user_scores" in s for s in analysed(NOW))
    assert not any("_scores" in s for s in analysed(NOW + dt.timedelta(days=1)))
    # Definitions changed: the basis is rebuilt, and the statistics refreshed again.
    document = to_document(current_definitions(db, tenant_id).definitions)
    document["profiles"][0]["weights"]["Report Created"] = 7
    save_definitions(db, tenant_id, document, "test")
    assert any("user_scores" in s for s in analysed(NOW + dt.timedelta(days=1, hours=1)))


def test_an_incremental_pass_writes_history_only_where_the_score_or_rate_moved(
    app, client, db, tenant_key, monkeypatch
):
    """The day's full pass wrote a history row for everyone; an incremental pass rewrites it
    only for the subjects whose rounded score or Activation rate changed, and every subject's
    row of the day still holds its stored values."""
    from app.scores import scoring_pass

    tenant_id, key = tenant_key
    app.extensions["pql"].clock = lambda: NOW - dt.timedelta(minutes=5)
    acme_trial(client, key)
    send(
        client,
        key,
        [
            group("cy", "initech", plan="trial", employees=10),
            group("dee", "globex", plan="trial", employees=10),
            *ev("cy", "Logged In", "initech"),
            *ev("dee", "Logged In", "globex", n=2),
        ],
    )
    recompute(db, tenant_id, NOW)
    sent: list[tuple[str, set[int]]] = []
    original = scoring_pass.upsert_history

    def recording(session, tenant, subject, day, values):
        sent.append((subject, {v[0] for v in values}))
        return original(session, tenant, subject, day, values)

    monkeypatch.setattr(scoring_pass, "upsert_history", recording)
    later = NOW + dt.timedelta(hours=1)
    app.extensions["pql"].clock = lambda: later
    # cy's new report moves its score and Activation; dee's event weighs nothing and is no step.
    send(
        client,
        key,
        [*ev("cy", "Report Created", "initech", days_ago=0), *ev("dee", "Help Opened", "globex")],
    )
    summary = recompute(db, tenant_id, later, full=False)
    assert (summary.users, summary.accounts) == (2, 2)
    with db.tenant_session(tenant_id) as s:
        ids = dict(s.execute(select(User.external_id, User.id)).all())
        accounts = dict(s.execute(select(Account.external_id, Account.id)).all())
        history = {
            (h.subject, h.subject_id): (h.engagement_score, h.activation_rate)
            for h in s.scalars(select(ScoreHistory).where(ScoreHistory.day == NOW.date()))
        }
        stored = {("u", r.user_id): r for r in s.scalars(select(UserScore))}
        stored |= {("a", r.account_id): r for r in s.scalars(select(AccountScore))}
    assert dict(sent)["u"] == {ids["cy"]}
    assert dict(sent)["a"] == {accounts["initech"]}
    assert set(history) == set(stored)
    for subject, row in stored.items():
        assert history[subject] == (round(row.engagement_score), round(row.activation_rate))
