"""The scoring brain: worked examples from DOMAIN.md and property-based invariants."""

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.defaults import default_definitions
from scoring.definitions import (
    Checklist,
    Condition,
    DealSizeRule,
    InactivityPenalty,
    LeadTypeBands,
    PQLRules,
    ScoreBands,
    ScoringProfile,
    Step,
    TrendRule,
)
from scoring.engine import (
    LEAD_TYPES,
    Facts,
    activation,
    adoption_rate,
    deal_size,
    engagement_segment,
    forecast_basis,
    forecast_value,
    grade,
    lead_type,
    matches,
    percentile_90,
    pql_status,
    raw_engagement,
    step_done,
    summarize,
    trait_distribution,
    trend,
)

TODAY = dt.date(2026, 11, 25)
FIRST = dt.date(2026, 11, 1)


def facts(daily=None, traits=None, user_first_day=None, first_seen=FIRST):
    return Facts(first_seen, traits or {}, summarize(daily or {}, TODAY), user_first_day or {})


def event_steps(n):
    return Checklist(
        tuple(Step(f"s{i}", f"Step {i}", "event_count", event=f"E{i}") for i in range(n))
    )


# --- Activation: worked examples -------------------------------------------------------------


def test_two_of_five_steps_is_forty_percent():
    result = activation(event_steps(5), facts({"E0": {FIRST: 1}, "E3": {FIRST: 2}}))
    assert result.rate == 40.0
    assert result.done == ("s0", "s3")
    assert result.next_step.key == "s1"
    assert not result.activated


def test_all_steps_done_is_activated_with_no_next_step():
    daily = {f"E{i}": {FIRST: 1} for i in range(3)}
    result = activation(event_steps(3), facts(daily))
    assert (result.rate, result.activated, result.next_step) == (100.0, True, None)


def test_event_count_step_needs_the_minimum_count():
    step = Step("inv", "Invited 3", "event_count", event="Teammate Invited", min_count=3)
    assert not step_done(step, facts({"Teammate Invited": {FIRST: 2}}))
    assert step_done(step, facts({"Teammate Invited": {FIRST: 2, TODAY: 1}}))


def test_within_days_counts_only_the_first_days_after_first_seen():
    step = Step("early", "Report in week one", "event_count", event="R", within_days=7)
    assert step_done(step, facts({"R": {FIRST + dt.timedelta(days=6): 1}}))
    assert not step_done(step, facts({"R": {FIRST + dt.timedelta(days=7): 1}}))


def test_distinct_users_step_counts_people_not_events():
    step = Step("team", "3 logged in", "distinct_users", event="Logged In", min_count=3)
    two = {"Logged In": {1: FIRST, 2: FIRST}}
    three = {"Logged In": {1: FIRST, 2: FIRST, 3: TODAY}}
    assert not step_done(step, facts(user_first_day=two))
    assert step_done(step, facts(user_first_day=three))


@pytest.mark.parametrize(
    ("op", "value", "traits", "expected"),
    [
        ("equals", "pro", {"plan": "Pro"}, True),
        ("gte", 10, {"plan": 12}, True),
        ("lte", 10, {"plan": 12}, False),
        ("contains", "ent", {"plan": "enterprise"}, True),
        ("exists", None, {"plan": None}, False),
        ("exists", None, {"plan": "x"}, True),
        ("gte", 10, {"plan": "lots"}, False),
    ],
)
def test_trait_steps(op, value, traits, expected):
    step = Step("t", "t", "trait", trait="plan", op=op, value=value)
    assert step_done(step, facts(traits=traits)) is expected


# --- Activation: invariants ------------------------------------------------------------------

daily_counts = st.dictionaries(
    st.sampled_from([f"E{i}" for i in range(6)]),
    st.dictionaries(
        st.dates(dt.date(2026, 10, 1), TODAY), st.integers(min_value=0, max_value=20), max_size=5
    ),
    max_size=6,
)


@given(daily_counts, st.integers(min_value=1, max_value=6))
def test_activation_rate_is_between_0_and_100(daily, steps):
    assert 0 <= activation(event_steps(steps), facts(daily)).rate <= 100


@given(daily_counts, daily_counts)
def test_a_completed_step_never_uncompletes_with_more_events(daily, more):
    checklist = Checklist(
        tuple(
            Step(f"s{i}", f"S{i}", "event_count", event=f"E{i}", min_count=i + 1) for i in range(6)
        )
    )
    combined = {e: dict(d) for e, d in daily.items()}
    for event, days in more.items():
        for day, count in days.items():
            combined.setdefault(event, {})[day] = combined.get(event, {}).get(day, 0) + count
    before = set(activation(checklist, facts(daily)).done)
    after = set(activation(checklist, facts(combined)).done)
    assert before <= after


# --- Engagement ------------------------------------------------------------------------------

PROFILE = ScoringProfile("P", {"Logged In": 1, "Report Created": 8, "Ignored": 0}, 7)


def test_raw_score_is_count_times_weight_inside_the_time_frame():
    daily = {
        "Logged In": {TODAY: 3, TODAY - dt.timedelta(days=6): 1, TODAY - dt.timedelta(days=7): 50},
        "Report Created": {TODAY - dt.timedelta(days=2): 2},
        "Ignored": {TODAY: 100},
    }
    assert raw_engagement(PROFILE, summarize(daily, TODAY), TODAY) == 3 + 1 + 16


def test_decay_fades_old_points_linearly():
    profile = ScoringProfile("P", {"Report Created": 8}, 7, decay=True)
    fresh = raw_engagement(profile, summarize({"Report Created": {TODAY: 1}}, TODAY), TODAY)
    old = raw_engagement(
        profile, summarize({"Report Created": {TODAY - dt.timedelta(days=6): 1}}, TODAY), TODAY
    )
    assert fresh == 8
    assert old == pytest.approx(8 / 7)


def test_no_login_in_seven_days_costs_five_points():
    profile = ScoringProfile(
        "P", {"Report Created": 8}, 7, penalties=(InactivityPenalty(-5, 7, "Logged In"),)
    )
    no_login = {"Report Created": {TODAY: 1}}
    recent_login = {"Report Created": {TODAY: 1}, "Logged In": {TODAY - dt.timedelta(days=3): 1}}
    assert raw_engagement(profile, summarize(no_login, TODAY), TODAY) == 3
    assert raw_engagement(profile, summarize(recent_login, TODAY), TODAY) == 8


@given(daily_counts, daily_counts)
def test_adding_positive_weight_events_never_lowers_the_raw_score(daily, more):
    profile = ScoringProfile(
        "P", {f"E{i}": i for i in range(6)}, 30, penalties=(InactivityPenalty(-5, 7, "E1"),)
    )
    combined = {e: dict(d) for e, d in daily.items()}
    for event, days in more.items():
        for day, count in days.items():
            combined.setdefault(event, {})[day] = combined.get(event, {}).get(day, 0) + count
    assert raw_engagement(profile, summarize(combined, TODAY), TODAY) >= raw_engagement(
        profile, summarize(daily, TODAY), TODAY
    )


@given(st.lists(st.floats(min_value=0.01, max_value=1e6), min_size=1, max_size=200))
def test_p90_grading_maps_the_90th_percentile_to_100(raws):
    p90 = percentile_90(raws)
    assert grade(p90, p90) == 100
    assert all(0 <= grade(r, p90) <= 100 for r in raws)
    above = [r for r in raws if r >= p90]
    assert all(grade(r, p90) == 100 for r in above)


@settings(max_examples=50)
@given(st.lists(st.floats(min_value=-50, max_value=1e4), min_size=1, max_size=100))
def test_grades_keep_the_order_of_raw_scores(raws):
    p90 = percentile_90(raws)
    graded = [grade(r, p90) for r in sorted(raws)]
    assert graded == sorted(graded)


def test_p90_is_taken_over_active_subjects_only():
    assert percentile_90([0, 0, 0, 0, 10]) == 10
    assert percentile_90([0, -5]) == 0
    assert grade(5, 0) == 100 and grade(0, 10) == 0


@pytest.mark.parametrize(
    ("score", "segment"),
    [
        (76, "Most engaged"),
        (75, "Engaged"),
        (51, "Engaged"),
        (50, "Engaged"),  # a boundary belongs to the band it opens
        (49.99, "Passive"),
        (25, "Passive"),
        (24.99, "Least engaged"),
    ],
)
def test_default_score_segments(score, segment):
    assert engagement_segment(score, ScoreBands()) == segment


def test_adoption_and_frequency():
    activity = summarize({"A": {TODAY: 1}, "B": {TODAY - dt.timedelta(days=20): 1}}, TODAY)
    assert adoption_rate(["A", "B", "C", "D"], activity, 7) == 25
    assert adoption_rate(["A", "B", "C", "D"], activity, None) == 50
    assert activity.active_days[30] == 2


# --- Trend -----------------------------------------------------------------------------------


def test_trend_segments_and_drops_follow_the_ten_point_rule():
    rule = TrendRule()
    assert trend(70, 55, rule).segment == "Red Hot"
    assert trend(40, 55, rule).segment == "Ice Cold" and trend(40, 55, rule).dropped
    assert trend(46, 55, rule).segment is None and trend(46, 55, rule).change == -9
    assert not trend(45, 55, rule).dropped  # exactly 10 down is not "more than 10"
    assert trend(50, None, rule).change is None


# --- Segments --------------------------------------------------------------------------------


def test_custom_segment_conditions_over_traits_scores_and_crm_fields():
    record = {
        "engagement_score": 80,
        "activation_rate": 60,
        "trait": {"plan": "enterprise"},
        "crm": {"lifecycle_stage": "opportunity"},
    }
    assert matches(
        [
            Condition("engagement_score", "gt", 75),
            Condition("trait.plan", "equals", "Enterprise"),
            Condition("crm.lifecycle_stage", "in", ["lead", "opportunity"]),
        ],
        record,
    )
    assert not matches([Condition("crm.owner_id", "exists")], record)


def test_trait_distribution_within_a_segment():
    records = [{"trait": {"plan": p}} for p in ["enterprise", "pro", "enterprise", None]]
    assert trait_distribution(records, "trait.plan") == [
        {"value": "enterprise", "count": 2, "share": 50.0},
        {"value": "pro", "count": 1, "share": 25.0},
        {"value": "(none)", "count": 1, "share": 25.0},
    ]


# --- PQL -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("employees", "size"),
    [(10, "small"), (49, "small"), (50, "mid"), (999, "mid"), (1000, "large")],
)
def test_deal_size_bands(employees, size):
    assert deal_size({"employees": employees}, DealSizeRule()) == size


@pytest.mark.parametrize(
    ("complexity", "size", "threshold"),
    [
        ("simple", "small", 80),
        ("simple", "mid", 60),
        ("simple", "large", 25),
        ("intermediate", "small", 60),
        ("intermediate", "mid", 40),
        ("intermediate", "large", 20),
        ("complex", "small", 40),
        ("complex", "mid", 25),
        ("complex", "large", 10),
    ],
)
def test_reach_out_thresholds_per_complexity_and_deal_size(complexity, size, threshold):
    employees = {"small": 10, "mid": 200, "large": 5000}[size]
    checklist = event_steps(20)
    rules = PQLRules(complexity=complexity)

    def at(rate):
        done = int(rate / 5)
        daily = {f"E{i}": {FIRST: 1} for i in range(done)}
        f = facts(daily, {"plan": "trial", "employees": employees})
        return pql_status(f, activation(checklist, f), checklist, rules, DealSizeRule())

    assert at(threshold).qualified and at(threshold).kind == "criteria"
    assert at(threshold).threshold == threshold
    assert not at(threshold - 5).qualified


def test_pql_reason_names_steps_and_threshold_in_a_reps_words():
    checklist = default_definitions().account_checklist_trial
    f = facts(
        {
            "Report Created": {FIRST: 1},
            "Teammate Invited": {FIRST: 3},
            "Dashboard Shared": {FIRST: 1},
        },
        {"plan": "trial", "employees": 120},
    )
    result = pql_status(f, activation(checklist, f), checklist, PQLRules(), DealSizeRule())
    assert result.qualified
    assert result.reason == (
        "Reached 60% Activation (3 of 5 steps: Created a report, Invited 3 teammates, "
        "Shared a dashboard), at or above the 60% threshold for a mid-size deal "
        "(120 employees) on a simple product."
    )


def test_paid_accounts_are_not_pqls_and_hand_raisers_and_limits_qualify():
    checklist = event_steps(5)
    rules = PQLRules()
    paid = facts(traits={"plan": "paid"})
    assert not pql_status(
        paid, activation(checklist, paid), checklist, rules, DealSizeRule()
    ).qualified
    hand = facts({"Demo Requested": {TODAY: 1}}, {"plan": "trial"})
    result = pql_status(hand, activation(checklist, hand), checklist, rules, DealSizeRule())
    assert (result.qualified, result.kind) == (True, "hand_raiser")
    limit = facts({"Plan Limit Reached": {TODAY: 1}}, {"plan": "free"})
    assert (
        pql_status(limit, activation(checklist, limit), checklist, rules, DealSizeRule()).kind
        == "limit_reached"
    )
    bought = facts({"Order Completed": {TODAY: 1}}, {"plan": "paid"})
    assert (
        pql_status(bought, activation(checklist, bought), checklist, rules, DealSizeRule()).kind
        == "touchless_purchase"
    )


# --- Lead types ------------------------------------------------------------------------------

LEVEL_VALUE = {"high": 90, "medium": 50, "low": 10}


@pytest.mark.parametrize("name", list(LEAD_TYPES))
def test_each_of_the_seven_lead_types_with_its_chance(name):
    a, e, c, fit, chance = LEAD_TYPES[name]
    result = lead_type(LEVEL_VALUE[a], LEVEL_VALUE[e], c, fit or "good", LeadTypeBands())
    assert (result.name, result.chance, result.exact) == (name, chance, True)


def test_unknown_communication_counts_as_none():
    assert lead_type(90, 90, None, "good", LeadTypeBands()).name == "Silent Success"


def test_combinations_outside_the_table_take_the_nearest_type_cautiously():
    # high activation, medium engagement, active: one step from Golden Lead and from
    # Contrary Converter; the tie goes to the lower chance.
    result = lead_type(90, 50, "active", "good", LeadTypeBands())
    assert (result.name, result.exact) == ("Contrary Converter", False)


@given(
    st.floats(0, 100),
    st.floats(0, 100),
    st.sampled_from(["active", "low", None]),
    st.sampled_from(["good", "poor"]),
)
def test_every_combination_gets_a_type(a, e, c, fit):
    result = lead_type(a, e, c, fit, LeadTypeBands())
    assert result.name in LEAD_TYPES


def test_forecast_value_is_deal_value_times_chance():
    assert forecast_value("mid", 60, DealSizeRule()) == 15_000
    assert forecast_value(None, 90, DealSizeRule()) == 4_500


def test_pql_kinds_can_come_from_traits_too():
    checklist = event_steps(5)
    rules = PQLRules(
        hand_raiser_traits=(Condition("trait.demo_requested", "equals", True),),
        purchase_traits=(Condition("trait.billing", "equals", "self-serve"),),
    )
    asked = facts(traits={"plan": "trial", "demo_requested": True})
    result = pql_status(asked, activation(checklist, asked), checklist, rules, DealSizeRule())
    assert (result.kind, result.reason) == (
        "hand_raiser",
        "Asked for sales: demo_requested equals True.",
    )
    bought = facts(traits={"plan": "paid", "billing": "self-serve"})
    assert (
        pql_status(bought, activation(checklist, bought), checklist, rules, DealSizeRule()).kind
        == "touchless_purchase"
    )
    neither = facts(traits={"plan": "trial", "demo_requested": False})
    assert not pql_status(
        neither, activation(checklist, neither), checklist, rules, DealSizeRule()
    ).qualified


def test_an_accounts_stage_comes_from_its_stage_trait_whatever_the_case_and_spacing():
    from scoring.engine import account_checklist, account_stage, is_paying

    defs = default_definitions()
    assert account_stage({"plan": " Paid "}, defs) == "paid"
    assert account_stage({"plan": "FREE"}, defs) == "trial"
    assert account_stage({"plan": "churned"}, defs) == "other"
    assert account_stage({}, defs) == "other"
    assert is_paying({"plan": "paid"}, defs) and not is_paying({"plan": "trial"}, defs)
    assert account_checklist({"plan": "paid"}, defs) is defs.account_checklist_paid
    assert account_checklist({"plan": "trial"}, defs) is defs.account_checklist_trial


def test_an_unknown_deal_size_counts_as_the_tenants_fallback_band_and_says_so():
    checklist = event_steps(20)
    # 60% done, no employees trait: small needs 80%, mid 60% on a simple product.
    f = facts({f"E{i}": {FIRST: 1} for i in range(12)}, {"plan": "trial"})
    small = pql_status(f, activation(checklist, f), checklist, PQLRules(), DealSizeRule())
    assert not small.qualified and "no employees known, so counted as small" in small.reason
    rule = DealSizeRule(unknown="mid")
    mid = pql_status(f, activation(checklist, f), checklist, PQLRules(), rule)
    assert mid.qualified and mid.deal_size is None
    assert "no employees known, so counted as mid-size" in mid.reason
    assert (
        forecast_value(None, 50, rule) == 12_500
        and forecast_value(None, 50, DealSizeRule()) == 2_500
    )
    assert forecast_basis(None, rule) == (
        "deal size unknown (no employees): counted as a mid-size deal"
    )
    assert forecast_basis("large", rule) == "a large deal"
