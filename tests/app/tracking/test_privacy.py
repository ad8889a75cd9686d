"""Privacy deletion: a person asked to be forgotten is gone from every table the app keeps
them in, their accounts are rescored without them, and other people are untouched."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.models import (
    Account,
    AccountEventDay,
    AccountScore,
    ActivityBasis,
    CrmRecord,
    Event,
    RejectedMessage,
    ScoreHistory,
    User,
    UserEventDay,
    UserScore,
)
from app.scores.scoring_pass import recompute
from app.sync import lifecycle
from app.tenants import issue_write_key
from tests.helpers.hubspot import HUB, NOW, acme, portal, send, webhook


@pytest.fixture
def app(hubspot_app):
    return hubspot_app


def counts(db, tenant_id, user_ids) -> dict[str, int]:
    with db.tenant_session(tenant_id) as session:
        return {
            "users": session.scalar(select(func.count()).where(User.id.in_(user_ids))),
            "events": session.scalar(select(func.count()).where(Event.user_id.in_(user_ids))),
            "user_days": session.scalar(
                select(func.count()).where(UserEventDay.user_id.in_(user_ids))
            ),
            "account_days": session.scalar(
                select(func.count()).where(AccountEventDay.user_id.in_(user_ids))
            ),
            "scores": session.scalar(select(func.count()).where(UserScore.user_id.in_(user_ids))),
            "history": session.scalar(
                select(func.count()).where(
                    ScoreHistory.subject == "u", ScoreHistory.subject_id.in_(user_ids)
                )
            ),
            "basis": session.scalar(
                select(func.count()).where(
                    ActivityBasis.subject == "u", ActivityBasis.subject_id.in_(user_ids)
                )
            ),
            "crm": session.scalar(
                select(func.count()).where(
                    CrmRecord.object_type == "user", CrmRecord.subject_id.in_(user_ids)
                )
            ),
        }


def ids_of(db, tenant_id, *external_ids):
    with db.tenant_session(tenant_id) as session:
        return list(session.scalars(select(User.id).where(User.external_id.in_(external_ids))))


def test_a_deletion_request_forgets_the_person_everywhere(app, client, db, installed, sandbox):
    tenant_id, key = installed
    acme(client, key)
    send(client, key, [{"type": "alias", "userId": "ada", "previousId": "ada-anon"}])
    recompute(db, tenant_id, NOW)
    lifecycle.sync_tenant(app.extensions["pql"], tenant_id)
    ada = ids_of(db, tenant_id, "ada")
    bob = ids_of(db, tenant_id, "bob")
    assert all(v > 0 for k, v in counts(db, tenant_id, ada).items() if k != "basis")
    before_bob = counts(db, tenant_id, bob)
    admin = issue_write_key(db, tenant_id, scope="admin").secret
    answer = client.post(
        "/api/v1/privacy/deletions",
        json={"email": "ADA@acme.example"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert answer.status_code == 200
    assert (
        answer.get_json()["users_deleted"] >= 1 and answer.get_json()["events_deleted"] == 6
    )  # group, identify, 3 tracks, alias
    assert set(counts(db, tenant_id, ada).values()) == {0}
    assert counts(db, tenant_id, bob) == before_bob
    # The account is rescored from what is left: Bob's login only.
    recompute(db, tenant_id, NOW, full=False)
    with db.tenant_session(tenant_id) as session:
        score = session.scalars(select(AccountScore)).one()
    assert score.total_users == 1 and "report" not in score.steps_done.get("done", [])
    again = client.post(
        "/api/v1/privacy/deletions",
        json={"user_id": "ada"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert again.status_code == 200 and again.get_json()["users_deleted"] == 0
    bad = client.post(
        "/api/v1/privacy/deletions", json={}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert bad.status_code == 400 and "user_id or email" in bad.get_json()["message"]


def test_hubspots_privacy_deletion_of_a_contact_forgets_the_person(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    acme(client, key)
    recompute(db, tenant_id, NOW)
    lifecycle.sync_tenant(app.extensions["pql"], tenant_id)
    ada = ids_of(db, tenant_id, "ada")
    with db.tenant_session(tenant_id) as session:
        contact_id = session.scalar(
            select(CrmRecord.crm_id).where(
                CrmRecord.object_type == "user", CrmRecord.subject_id == ada[0]
            )
        )
    assert contact_id in portal(sandbox).objects["contacts"]
    event = {
        "eventId": 99,
        "subscriptionId": 2,
        "portalId": HUB,
        "appId": 1,
        "occurredAt": int(NOW.timestamp() * 1000),
        "subscriptionType": "contact.privacyDeletion",
        "attemptNumber": 0,
        "objectId": int(contact_id),
        "changeSource": "GDPR",
    }
    answer = webhook(client, [event])
    assert answer.status_code == 200 and answer.get_json()["applied"] == 1
    assert set(counts(db, tenant_id, ada).values()) == {0}
    assert ids_of(db, tenant_id, "bob")


def _delete(client, db, tenant_id, **who):
    admin = issue_write_key(db, tenant_id, scope="admin").secret
    answer = client.post(
        "/api/v1/privacy/deletions", json=who, headers={"Authorization": f"Bearer {admin}"}
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()


def test_the_apps_properties_on_the_persons_contact_are_emptied_and_the_answer_says_what_stays(
    app, client, db, installed, sandbox
):
    tenant_id, key = installed
    acme(client, key)
    recompute(db, tenant_id, NOW)
    lifecycle.sync_tenant(app.extensions["pql"], tenant_id)
    [ada] = ids_of(db, tenant_id, "ada")
    with db.tenant_session(tenant_id) as session:
        contact_id = session.scalar(
            select(CrmRecord.crm_id).where(
                CrmRecord.object_type == "user", CrmRecord.subject_id == ada
            )
        )
    contact = portal(sandbox).objects["contacts"][contact_id]["properties"]
    assert contact["pql_user_key"] == "ada" and contact["pql_engagement_score"]
    done = _delete(client, db, tenant_id, user_id="ada")
    assert done["crm_records_cleared"] == [contact_id]
    assert done["crm_records_not_cleared"] == []
    assert "stays in the CRM" in done["not_deleted"][0]
    contact = portal(sandbox).objects["contacts"][contact_id]["properties"]
    app_values = {k: v for k, v in contact.items() if k.startswith("pql_")}
    assert app_values and all(v in ("", None) for v in app_values.values())
    assert contact["email"] == "ada@acme.example"  # the customer's own record stays


def test_the_persons_email_and_name_leave_their_accounts_traits(app, client, db, installed):
    tenant_id, key = installed
    acme(client, key)
    send(
        client,
        key,
        [
            {"type": "identify", "userId": "ada", "traits": {"name": "Ada Lovelace"}},
            {
                "type": "group",
                "userId": "bob",
                "groupId": "acme",
                "traits": {"billing_contact": "ADA@acme.example", "owner": "Ada Lovelace"},
            },
        ],
    )
    done = _delete(client, db, tenant_id, email="ada@acme.example")
    assert done["account_traits_deleted"] == 2
    with db.tenant_session(tenant_id) as session:
        traits = session.scalars(select(Account.traits)).one()
    assert "billing_contact" not in traits and "owner" not in traits
    assert traits["name"] == "Acme" and traits["plan"] == "trial"


def test_a_person_seen_only_in_rejected_messages_is_forgotten_whatever_the_emails_case(
    app, client, db, installed
):
    tenant_id, key = installed
    send(
        client,
        key,
        [
            {"type": "track", "userId": "bob", "event": "Login"},  # so the batch is accepted
            {"type": "track", "userId": "zed"},  # no event: rejected
            {"type": "track", "anonymousId": "x", "context": {"email": "Zed@Example.com"}},
        ],
    )
    with db.tenant_session(tenant_id) as session:
        assert session.scalar(select(func.count()).select_from(RejectedMessage)) == 2
    assert _delete(client, db, tenant_id, user_id="zed")["rejected_messages_deleted"] == 1
    assert _delete(client, db, tenant_id, email="zed@example.com")["rejected_messages_deleted"] == 1
    with db.tenant_session(tenant_id) as session:
        assert session.scalar(select(func.count()).select_from(RejectedMessage)) == 0
