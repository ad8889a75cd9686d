"""Fit rules: each condition kind, group caps, disqualifiers, bands, the PQL gate, lead types."""

from scoring.definitions import Condition, Disqualifier, FitBand, FitRule, FitRules
from scoring.engine import PQLResult, condition_holds
from scoring.fit import band_rank, fit, gate_pql, poor_fit

RULES = FitRules(
    rules=(
        FitRule("50 to 999 employees", (Condition("trait.employees", "gte", 50),), 30, "size"),
        FitRule("1000+ employees", (Condition("trait.employees", "gte", 1000),), 30, "size"),
        FitRule("SaaS", (Condition("trait.industry", "in", ["saas", "software"]),), 25),
        FitRule("In the US or UK", (Condition("crm.country", "in", ["US", "UK"]),), 20),
        FitRule("Has a plan", (Condition("trait.plan", "exists"),), 10),
        FitRule("Agency", (Condition("trait.industry", "equals", "agency"),), -40),
    ),
    group_caps={"size": 40},
    disqualifiers=(
        Disqualifier(
            "personal email domain",
            (Condition("domain", "ends_with", ["gmail.com", "yahoo.com"]),),
        ),
    ),
)


def record(domain="acme.com", crm=None, **traits):
    return {"trait": traits, "traits": traits, "crm": crm or {}, "domain": domain}


def test_points_add_up_with_group_caps_and_clamp_to_0_100():
    big = fit(record(employees=5000, industry="SaaS", plan="paid", crm={"country": "US"}), RULES)
    # size 30 + 30 capped at 40, SaaS 25, US 20, plan 10 = 95.
    assert (big.score, big.band) == (95.0, "A")
    assert big.reason.startswith("Fit A (95): ")
    assert "SaaS (+25)" in big.reason and "and 2 more" in big.reason
    mid = fit(record(employees=120), RULES)
    assert (mid.score, mid.band) == (30.0, "C")
    agency = fit(record(employees=10, industry="agency"), RULES)
    assert (agency.score, agency.band) == (0.0, "D")  # -40 clamps at 0
    nothing = fit(record(), RULES)
    assert nothing.band == "D" and "no fit rule matched" in nothing.reason


def test_a_disqualifier_forces_the_lowest_band_with_its_reason():
    result = fit(record(domain="gmail.com", employees=5000, industry="saas"), RULES)
    assert (result.score, result.band, result.disqualified) == (0.0, "D", True)
    assert result.reason == "Disqualified: personal email domain."
    assert poor_fit(result, RULES)


def test_no_rules_means_no_fit():
    assert fit(record(employees=5000), FitRules()) is None
    assert not poor_fit(None, FitRules())


def test_condition_kinds_used_by_fit():
    r = record(domain="Mail.Example.CO.UK", employees="250", industry="SaaS")
    assert condition_holds(Condition("domain", "ends_with", ".co.uk"), r)
    assert condition_holds(Condition("trait.employees", "gte", 100), r)  # numeric text
    assert not condition_holds(Condition("trait.employees", "lt", 100), r)
    assert condition_holds(Condition("trait.industry", "in", ["saas"]), r)
    assert condition_holds(Condition("trait.country", "not_exists"), r)


def test_custom_bands_and_ranks():
    rules = FitRules(
        rules=(FitRule("Any", (Condition("trait.plan", "exists"),), 60),),
        bands=(FitBand("Ideal", 80), FitBand("Good", 40), FitBand("Other", 0)),
    )
    assert fit(record(plan="trial"), rules).band == "Good"
    assert band_rank(rules, "Ideal") < band_rank(rules, "Good") < band_rank(rules, "Other")
    assert band_rank(rules, "Z") == 3


def test_the_pql_gate_needs_the_minimum_band_when_one_is_set():
    pql = PQLResult(True, "criteria", "Reached the 60% threshold.", 60, "mid")
    good, weak = fit(record(employees=5000, industry="saas"), RULES), fit(record(), RULES)
    assert gate_pql(pql, weak, RULES, None) is pql  # off by default
    assert gate_pql(pql, good, RULES, "B") is pql
    gated = gate_pql(pql, weak, RULES, "B")
    assert not gated.qualified and "below the B needed" in gated.reason
    assert gate_pql(pql, None, RULES, "B") is pql  # no fit scored: nothing to gate on


def test_lead_types_tell_the_procrastinator_from_the_ignoramus_by_fit_band():
    """The seed's two low-usage types in active talks differ only by fit."""
    from scoring.definitions import LeadTypeBands
    from scoring.engine import lead_type

    good, poor = fit(record(employees=5000, industry="saas"), RULES), fit(record(), RULES)
    for result, expected in ((good, "Positive Procrastinator"), (poor, "Incompatible Ignoramus")):
        word = "poor" if poor_fit(result, RULES) else "good"
        assert lead_type(10, 10, "active", word, LeadTypeBands()).name == expected
