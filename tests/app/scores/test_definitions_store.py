import copy

import pytest
from marshmallow import ValidationError

from app.scores.definitions_store import (
    current_definitions,
    definitions_history,
    parse_document,
    rollback_definitions,
    save_definitions,
    to_document,
)
from app.tenants import create_tenant
from scoring.defaults import default_definitions


def doc():
    return to_document(default_definitions())


def test_document_round_trips_through_validation():
    assert parse_document(doc()) == default_definitions()
    assert to_document(parse_document(doc())) == doc()


def errors_of(document):
    with pytest.raises(ValidationError) as info:
        parse_document(document)
    return info.value.messages


def test_errors_name_the_field_and_why():
    bad = doc()
    bad["profiles"][0]["weights"]["Logged In"] = 11
    bad["profiles"][0]["time_frame_days"] = 14
    bad["account_checklist_trial"][1]["kind"] = "vibes"
    messages = errors_of(bad)
    assert "weights are 0 to 10" in str(messages["profiles"][0]["weights"])
    assert "time_frame_days" in messages["profiles"][0]
    assert "kind" in messages["account_checklist_trial"][1]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d["profiles"][0].update(default=False), "profiles"),
        (
            lambda d: d["account_checklist_trial"].append(dict(d["account_checklist_trial"][0])),
            "account_checklist_trial",
        ),
        (lambda d: d["user_checklist"][1].update(event=None), "user_checklist"),
        (lambda d: d["score_bands"].update(engaged=90), "score_bands"),
        (lambda d: d["pql"]["thresholds"]["simple"].pop("large"), "pql"),
        (lambda d: d["deal_size"].update(mid_from=5000), "deal_size"),
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d.update(account_checklist_paid=[]), "account_checklist_paid"),
    ],
)
def test_invalid_documents_are_refused_at_the_right_place(change, path):
    bad = copy.deepcopy(doc())
    change(bad)
    assert path in errors_of(bad)


def test_a_new_tenant_starts_from_the_defaults_as_version_1(db):
    tenant = create_tenant(db, "A")
    stored = current_definitions(db, tenant.id)
    assert stored.version == 1
    assert stored.definitions == default_definitions()
    assert stored.created_by == "system"


def test_every_save_is_a_new_version_and_rollback_restores(db):
    tenant = create_tenant(db, "A")
    current_definitions(db, tenant.id)
    changed = doc()
    changed["pql"]["complexity"] = "complex"
    save_definitions(db, tenant.id, changed, "ada@acme.com", "complex product")
    assert current_definitions(db, tenant.id).definitions.pql.complexity == "complex"
    rollback_definitions(db, tenant.id, 1, "ada@acme.com")
    current = current_definitions(db, tenant.id)
    assert current.version == 3 and current.definitions.pql.complexity == "simple"
    history = definitions_history(db, tenant.id)
    assert [(h["version"], h["created_by"], h["note"]) for h in history] == [
        (3, "ada@acme.com", "rollback to version 1"),
        (2, "ada@acme.com", "complex product"),
        (1, "system", "defaults"),
    ]


def test_an_invalid_save_stores_nothing(db):
    tenant = create_tenant(db, "A")
    current_definitions(db, tenant.id)
    bad = doc()
    bad["profiles"] = []
    with pytest.raises(ValidationError):
        save_definitions(db, tenant.id, bad, "x")
    assert current_definitions(db, tenant.id).version == 1


def test_definitions_are_per_tenant(db):
    a = create_tenant(db, "A")
    b = create_tenant(db, "B")
    changed = doc()
    changed["frequency_days"] = 14
    save_definitions(db, a.id, changed, "x")
    assert current_definitions(db, a.id).definitions.frequency_days == 14
    assert current_definitions(db, b.id).definitions.frequency_days == 30


def test_pql_trait_conditions_are_validated_and_kept():
    document = doc()
    document["pql"]["hand_raiser_traits"] = [
        {"field": "trait.demo_requested", "op": "equals", "value": True}
    ]
    assert parse_document(document).pql.hand_raiser_traits[0].field == "trait.demo_requested"
    document["pql"]["limit_traits"] = [{"field": "trait.seats_used", "op": "approximately"}]
    assert "limit_traits" in errors_of(document)["pql"]
