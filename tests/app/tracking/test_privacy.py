"""Privacy deletion: a person asked to be forgotten is gone from every table the app keeps
them in, their accounts are rescored without them, and other people are untouched."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.models import (
    AccountEventDay,
    AccountScore,
    ActivityBasis,
    CrmRecord,
    Event,
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
