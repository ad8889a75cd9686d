import datetime as dt
from types import SimpleNamespace

from app.sync import properties
from scoring.defaults import default_definitions


def test_every_property_is_prefixed_typed_and_the_key_is_unique_and_hidden():
    specs = properties.specs("acme_", "account", default_definitions())
    assert all(s.name.startswith("acme_") for s in specs)
    key = specs[0]
    assert (key.name, key.unique, key.hidden) == ("acme_account_key", True, True)
    kinds = {s.name: s.kind for s in specs}
    assert kinds["acme_activation_rate"] == "number"
    assert kinds["acme_is_pql"] == "bool"
    assert kinds["acme_pql_at"] == "datetime"
    assert kinds["acme_lead_type"] == "enumeration"
    options = {s.name: s.options for s in specs}
    assert "Heartbreaker" in options["acme_lead_type"]
    assert options["acme_engagement_segment"] == properties.ENGAGEMENT_SEGMENTS
    # Fit, typed; the band's options are the tenant's band names.
    assert kinds["acme_fit_score"] == "number" and kinds["acme_fit_reason"] == "text"
    assert options["acme_fit_band"] == ("A", "B", "C", "D")


def test_contacts_get_the_user_traits_only():
    names = {s.name for s in properties.specs("pql_", "user", default_definitions())}
    assert "pql_user_key" in names and "pql_engagement_score" in names
    assert "pql_lead_type" not in names and "pql_active_users" not in names
    assert "pql_fit_band" in names  # the account's fit, carried by its contacts


def test_values_are_strings_hubspot_accepts():
    moment = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
    assert properties.crm_value("bool", True) == "true"
    assert properties.crm_value("bool", False) == "false"
    assert properties.crm_value("datetime", moment) == str(int(moment.timestamp() * 1000))
    assert properties.crm_value("number", 40.0) == "40"
    assert properties.crm_value("number", 33.333) == "33.33"
    assert properties.crm_value("number", None) == ""
    assert properties.crm_value("enumeration", "Red Hot") == "Red Hot"


def test_values_of_a_score_row_cover_every_field():
    score = SimpleNamespace(
        activation_rate=60.0,
        activated=False,
        activated_at=None,
        next_step="Shared a dashboard",
        engagement_score=72.5,
        engagement_segment="Engaged",
        trend_segment=None,
        trend_change=None,
        adoption_rate=40.0,
        last_active_at=dt.datetime(2026, 11, 24, tzinfo=dt.UTC),
        account_fit_score=70.0,
        account_fit_band="B",
        account_fit_reason="Fit B (70): Technology (+70).",
    )
    values = properties.values("pql_", "user", score)
    assert values["pql_fit_band"] == "B"  # the account's, on its contacts
    assert values["pql_activation_rate"] == "60"
    assert values["pql_trend"] == ""  # cleared, not left stale
    assert values["pql_engagement_score"] == "72.5"
    assert set(values) == {f"pql_{f.name}" for f in properties.USER_FIELDS}
