"""Users, accounts, memberships, traits and rollups built from messages."""

import datetime as dt

from sqlalchemy import func, select

from app.models import Account, AccountEventDay, AccountMembership, Event, User, UserEventDay
from app.tracking.identity import domain_of
from tests.helpers.tracking import post, track


def send(client, key, *messages):
    response = post(client, "batch", {"batch": list(messages)}, key)
    assert response.status_code == 200, response.get_json()
    assert "rejected" not in response.get_json()


def identify(user="u1", at="2026-11-20T10:00:00Z", **traits):
    return {"type": "identify", "userId": user, "traits": traits, "timestamp": at}


def group(group_id="acme", user="u1", at="2026-11-20T10:00:00Z", **traits):
    return {"type": "group", "groupId": group_id, "userId": user, "traits": traits, "timestamp": at}


def users(db, tenant_id):
    with db.tenant_session(tenant_id) as s:
        return {u.external_id or u.anonymous_id: u for u in s.scalars(select(User))}


def test_identify_creates_a_user_with_traits_email_and_name(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(client, key, identify(email="Ada@Example.com", firstName="Ada", lastName="Lovelace"))
    user = users(db, tenant_id)["u1"]
    assert user.email == "ada@example.com"
    assert user.name == "Ada Lovelace"
    assert user.traits["firstName"] == "Ada"


def test_traits_merge_and_the_newest_value_wins_whatever_the_arrival_order(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(client, key, identify(at="2026-11-20T12:00:00Z", plan="pro", role="admin"))
    send(client, key, identify(at="2026-11-20T09:00:00Z", plan="free", title="CTO"))
    user = users(db, tenant_id)["u1"]
    assert user.traits == {"plan": "pro", "role": "admin", "title": "CTO"}


def test_rudderstack_identify_traits_in_context_are_read(client, db, tenant_key):
    tenant_id, key = tenant_key
    message = {"type": "identify", "userId": "u1", "context": {"traits": {"email": "a@b.co"}}}
    send(client, key, message)
    assert users(db, tenant_id)["u1"].email == "a@b.co"


def test_group_creates_the_account_with_domain_and_links_the_user(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(client, key, group(name="Acme Inc", website="https://www.Acme.com/about", employees=120))
    with db.tenant_session(tenant_id) as s:
        account = s.scalar(select(Account))
        membership = s.scalar(select(AccountMembership))
        user = s.scalar(select(User))
    assert (account.external_id, account.name, account.domain) == ("acme", "Acme Inc", "acme.com")
    assert account.traits["employees"] == 120
    assert (membership.account_id, membership.user_id) == (account.id, user.id)
    assert user.current_account_id == account.id


def test_track_with_context_group_id_counts_for_that_account_per_user(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(
        client,
        key,
        track("Report Created", "u1", context={"groupId": "acme"}),
        track("Report Created", "u2", context={"groupId": "acme"}),
        track("Report Created", "u2", context={"groupId": "acme"}),
    )
    with db.tenant_session(tenant_id) as s:
        rows = s.execute(
            select(AccountEventDay.user_id, AccountEventDay.count).order_by(AccountEventDay.user_id)
        ).all()
        members = s.scalar(select(func.count()).select_from(AccountMembership))
    assert [c for _, c in rows] == [1, 2]
    assert members == 2


def test_track_without_group_id_goes_to_the_users_latest_group(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(client, key, group("old", at="2026-11-01T00:00:00Z"))
    send(client, key, group("new", at="2026-11-10T00:00:00Z"))
    send(client, key, track("Logged In", "u1"))
    with db.tenant_session(tenant_id) as s:
        event_account = s.scalar(
            select(Account.external_id)
            .join(Event, Event.account_id == Account.id)
            .where(Event.type == "track")
        )
        rollup_account = s.scalar(
            select(Account.external_id).join(
                AccountEventDay, AccountEventDay.account_id == Account.id
            )
        )
    assert event_account == rollup_account == "new"


def test_track_of_a_user_in_no_account_is_kept_for_the_user_only(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(client, key, track("Logged In", "solo"))
    with db.tenant_session(tenant_id) as s:
        assert s.scalar(select(Event.account_id)) is None
        assert s.scalar(select(UserEventDay.count)) == 1
        assert s.scalar(select(func.count()).select_from(AccountEventDay)) == 0


def test_rollups_are_per_utc_day_and_event(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(
        client,
        key,
        track("Logged In", timestamp="2026-11-20T23:59:00Z"),
        track("Logged In", timestamp="2026-11-21T00:01:00Z"),
        track("Logged In", timestamp="2026-11-21T08:00:00Z"),
        track("Report Created", timestamp="2026-11-21T09:00:00Z"),
    )
    with db.tenant_session(tenant_id) as s:
        rows = s.execute(
            select(UserEventDay.event, UserEventDay.day, UserEventDay.count).order_by(
                UserEventDay.event, UserEventDay.day
            )
        ).all()
    assert rows == [
        ("Logged In", dt.date(2026, 11, 20), 1),
        ("Logged In", dt.date(2026, 11, 21), 2),
        ("Report Created", dt.date(2026, 11, 21), 1),
    ]


def test_page_and_identify_are_stored_but_not_counted_as_track_events(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(
        client,
        key,
        {"type": "page", "userId": "u1", "name": "Pricing"},
        identify(),
    )
    with db.tenant_session(tenant_id) as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 2
        assert s.scalar(select(Event.name).where(Event.type == "page")) == "Pricing"
        assert s.scalar(select(func.count()).select_from(UserEventDay)) == 0


def test_identify_with_both_ids_claims_the_anonymous_user(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(client, key, {"type": "track", "event": "Viewed", "anonymousId": "anon-1"})
    send(client, key, {"type": "identify", "userId": "u1", "anonymousId": "anon-1"})
    people = users(db, tenant_id)
    assert set(people) == {"u1"}
    assert people["u1"].anonymous_id == "anon-1"


def test_alias_merges_the_anonymous_user_events_and_rollups(client, db, tenant_key):
    tenant_id, key = tenant_key

    def anonymous_view(message_id):
        return {
            "type": "track",
            "event": "Viewed",
            "anonymousId": "anon-1",
            "messageId": message_id,
        }

    send(client, key, anonymous_view("m1"))
    send(client, key, identify("u1", plan="pro"), track("Viewed", "u1"))
    send(client, key, {"type": "alias", "previousId": "anon-1", "userId": "u1"})
    send(client, key, anonymous_view("m2"))
    with db.tenant_session(tenant_id) as s:
        survivor = s.scalar(select(User).where(User.external_id == "u1"))
        owners = set(s.scalars(select(Event.user_id).where(Event.type == "track")))
        counts = s.execute(select(UserEventDay.user_id, UserEventDay.count)).all()
    assert owners == {survivor.id}
    assert {user_id for user_id, _ in counts} == {survivor.id}
    assert sum(c for _, c in counts) == 3
    assert survivor.traits == {"plan": "pro"}


def test_sign_in_after_anonymous_browsing_merges_into_the_known_user(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(client, key, identify("u1", email="a@b.co"))
    send(client, key, {"type": "track", "event": "Viewed", "anonymousId": "anon-9"})
    send(client, key, {"type": "track", "event": "Viewed", "userId": "u1", "anonymousId": "anon-9"})
    with db.tenant_session(tenant_id) as s:
        survivor = s.scalar(select(User).where(User.external_id == "u1"))
        assert s.scalar(select(UserEventDay.count).where(UserEventDay.user_id == survivor.id)) == 2
        assert set(s.scalars(select(Event.user_id))) == {survivor.id}


def test_a_user_can_belong_to_several_accounts(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(client, key, group("acme"), group("globex"))
    with db.tenant_session(tenant_id) as s:
        assert s.scalar(select(func.count()).select_from(AccountMembership)) == 2


def test_last_seen_never_moves_backwards(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(client, key, track(timestamp="2026-11-20T10:00:00Z"))
    send(client, key, track(timestamp="2026-11-01T10:00:00Z"))
    assert users(db, tenant_id)["u1"].last_seen_at == dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)


def test_numeric_user_ids_are_accepted_as_strings(client, db, tenant_key):
    tenant_id, key = tenant_key
    send(client, key, {"type": "track", "event": "E", "userId": 42})
    assert "42" in users(db, tenant_id)


def test_domain_normalisation():
    assert domain_of("https://www.Acme.com/about") == "acme.com"
    assert domain_of("acme.io") == "acme.io"
    assert domain_of("ops@globex.co.uk") == "globex.co.uk"
    assert domain_of("") is None
    assert domain_of(12) is None


def test_a_retried_old_group_call_does_not_move_the_current_account_back(client, db, tenant_key):
    tenant_id, key = tenant_key
    old = {**group("old", at="2026-11-01T00:00:00Z"), "messageId": "g-old"}
    send(client, key, old)
    send(client, key, {**group("new", at="2026-11-10T00:00:00Z"), "messageId": "g-new"})
    send(client, key, old)  # the SDK retries the first request late
    send(client, key, track("Logged In", "u1"))
    with db.tenant_session(tenant_id) as s:
        account = s.scalar(
            select(Account.external_id)
            .join(Event, Event.account_id == Account.id)
            .where(Event.type == "track")
        )
    assert account == "new"
