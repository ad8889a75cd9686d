"""The real Segment and RudderStack Python SDKs, unchanged, pointed at a live server."""

import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient
from sqlalchemy import func, select

from app.models import Account, AccountEventDay, AccountMembership, Event, User, UserEventDay


def send_session(client) -> None:
    client.identify("u1", {"email": "ada@acme.com", "name": "Ada"})
    client.group("u1", "acme", {"name": "Acme", "website": "acme.com", "employees": 80})
    client.track("u1", "Report Created", {"rows": 3}, context={"groupId": "acme"})
    client.track("u1", "Report Created", {"rows": 5}, context={"groupId": "acme"})
    client.track("u1", "Teammate Invited", {}, context={"groupId": "acme"})
    client.flush()


def assert_session_stored(db, tenant_id) -> None:
    with db.tenant_session(tenant_id) as s:
        user = s.scalar(select(User))
        account = s.scalar(select(Account))
        assert (user.external_id, user.email, user.name) == ("u1", "ada@acme.com", "Ada")
        assert (account.external_id, account.name, account.domain) == ("acme", "Acme", "acme.com")
        assert account.traits["employees"] == 80
        assert s.scalar(select(func.count()).select_from(AccountMembership)) == 1
        assert s.scalar(select(func.count()).select_from(Event)) == 5
        counts = dict(
            s.execute(
                select(UserEventDay.event, func.sum(UserEventDay.count)).group_by(
                    UserEventDay.event
                )
            ).all()
        )
        assert counts == {"Report Created": 2, "Teammate Invited": 1}
        assert s.scalar(select(func.sum(AccountEventDay.count))) == 3


def segment_client(url, key, errors, **options):
    return SegmentClient(
        write_key=key,
        host=url,
        on_error=lambda e, batch: errors.append(e),
        max_retries=1,
        **options,
    )


def rudder_client(url, key, errors):
    return RudderClient(
        write_key=key, host=url, on_error=lambda e, batch: errors.append(e), max_retries=1
    )


@pytest.mark.parametrize("gzip", [False, True])
def test_segment_python_sdk_events_are_stored(live_server, db, tenant_key, gzip):
    tenant_id, key = tenant_key
    errors = []
    client = segment_client(live_server, key, errors, gzip=gzip)
    send_session(client)
    client.shutdown()
    assert errors == []
    assert_session_stored(db, tenant_id)


def test_rudderstack_python_sdk_events_are_stored(live_server, db, tenant_key):
    tenant_id, key = tenant_key
    errors = []
    client = rudder_client(live_server, key, errors)
    send_session(client)
    client.join()
    assert errors == []
    assert_session_stored(db, tenant_id)


def test_rudderstack_identify_puts_traits_in_context_and_they_are_read(live_server, db, tenant_key):
    tenant_id, key = tenant_key
    errors = []
    client = rudder_client(live_server, key, errors)
    client.identify("u7", {"email": "x@y.io", "plan": "trial"})
    client.flush()
    client.join()
    with db.tenant_session(tenant_id) as s:
        user = s.scalar(select(User))
        payload = s.scalar(select(Event.payload))
    assert errors == []
    assert "traits" in payload.get("context", {})  # what the SDK really sends
    assert user.email == "x@y.io" and user.traits["plan"] == "trial"


def test_sdk_with_a_wrong_key_gets_an_error_and_nothing_is_stored(live_server, db, tenant_key):
    errors = []
    client = segment_client(live_server, "wk_wrong", errors)
    client.track("u1", "Report Created")
    client.flush()
    client.shutdown()
    assert len(errors) == 1
    assert getattr(errors[0], "status", None) == 401
    assert getattr(errors[0], "code", None) == "invalid_write_key"
    with db.system_session() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 0


def test_sdk_anonymous_then_alias_ends_as_one_user(live_server, db, tenant_key):
    tenant_id, key = tenant_key
    errors = []
    client = segment_client(live_server, key, errors)
    client.track(anonymous_id="anon-1", event="Pricing Viewed")
    client.flush()
    client.alias("anon-1", "u1")
    client.flush()
    client.track("u1", "Signed Up")
    client.shutdown()
    assert errors == []
    with db.tenant_session(tenant_id) as s:
        active = s.scalars(select(User).where(User.merged_into_id.is_(None))).all()
        assert [u.external_id for u in active] == ["u1"]
        assert (
            s.scalar(
                select(func.sum(UserEventDay.count)).where(UserEventDay.user_id == active[0].id)
            )
            == 2
        )
