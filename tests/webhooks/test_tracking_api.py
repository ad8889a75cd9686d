"""The Segment-compatible HTTP API: auth, decoding, validation, limits, idempotency."""

import datetime as dt
import gzip
import json

import pytest
from sqlalchemy import func, select

from app.models import Event, RejectedMessage, UserEventDay
from app.tenants import create_tenant, issue_write_key, revoke_write_key
from tests.helpers.tracking import basic, post, track


def count(db, model, tenant_id=None):
    with db.system_session() as s:
        query = select(func.count()).select_from(model)
        if tenant_id is not None:
            query = query.where(model.tenant_id == tenant_id)
        return s.scalar(query)


def test_track_with_basic_auth_is_stored_and_answered_with_exactly_200(client, db, tenant_key):
    tenant_id, key = tenant_key
    response = post(client, "track", track(), key)
    assert response.status_code == 200
    assert response.get_json() == {"success": True}
    assert count(db, Event, tenant_id) == 1


def test_write_key_in_the_body_without_a_header_is_accepted(client, db, tenant_key):
    tenant_id, key = tenant_key
    response = post(client, "batch", {"batch": [track()], "writeKey": key})
    assert response.status_code == 200
    assert count(db, Event, tenant_id) == 1


def test_bearer_header_with_write_key_in_the_body_is_accepted(client, db, tenant_key):
    tenant_id, key = tenant_key
    response = post(
        client,
        "batch",
        {"batch": [track()], "writeKey": key},
        headers={"Authorization": "Bearer some-oauth-token"},
    )
    assert response.status_code == 200
    assert count(db, Event, tenant_id) == 1


@pytest.mark.parametrize("how", ["unknown", "revoked", "missing"])
def test_bad_write_key_gets_401_and_stores_nothing(client, db, tenant_key, how):
    tenant_id, key = tenant_key
    if how == "revoked":
        revoke_write_key(db, tenant_id, 1)
    sent_key = {"unknown": "wk_nope", "revoked": key, "missing": None}[how]
    response = post(client, "batch", {"batch": [track()]}, sent_key)
    assert response.status_code == 401
    body = response.get_json()
    assert body["code"] in ("invalid_write_key", "missing_write_key")
    assert body["message"]
    assert count(db, Event) == 0


def test_malformed_basic_header_gets_401(client, db, tenant_key):
    response = post(client, "track", track(), headers={"Authorization": "Basic %%%"})
    assert response.status_code == 401
    assert count(db, Event) == 0


def test_a_key_of_tenant_a_only_ever_writes_into_tenant_a(client, db):
    a = create_tenant(db, "A")
    b = create_tenant(db, "B")
    key_a = issue_write_key(db, a.id).secret
    key_b = issue_write_key(db, b.id).secret
    # Header says A, body claims B: the header wins, and B gets nothing.
    response = post(client, "batch", {"batch": [track()], "writeKey": key_b}, key_a)
    assert response.status_code == 200
    assert count(db, Event, a.id) == 1
    assert count(db, Event, b.id) == 0


def test_gzip_body_is_decompressed(client, db, tenant_key):
    tenant_id, key = tenant_key
    response = post(client, "batch", {"batch": [track(), track()]}, key, gzipped=True)
    assert response.status_code == 200
    assert count(db, Event, tenant_id) == 2


def test_corrupt_gzip_gets_400(client, tenant_key):
    _, key = tenant_key
    response = post(client, "batch", b"not gzip at all", key, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_encoding"


def test_gzip_that_inflates_past_the_limit_gets_413(client, db, tenant_key):
    _, key = tenant_key
    bomb = gzip.compress(b'{"batch": [' + b" " * 2_000_000 + b"]}")
    assert len(bomb) < 500 * 1024
    response = post(client, "batch", bomb, key, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert response.get_json()["limit_bytes"] == 500 * 1024
    assert count(db, Event) == 0


def test_unsupported_content_encoding_gets_415(client, tenant_key):
    _, key = tenant_key
    response = post(client, "track", track(), key, headers={"Content-Encoding": "br"})
    assert response.status_code == 415


@pytest.mark.parametrize(
    ("body", "needle"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b"", "empty")],
)
def test_unparseable_bodies_get_400_with_code_and_message(client, tenant_key, body, needle):
    _, key = tenant_key
    response = post(client, "batch", body, key)
    assert response.status_code == 400
    payload = response.get_json()
    assert payload["code"] == "invalid_json"
    assert needle in payload["message"]


def test_text_plain_body_from_analytics_js_one_letter_path_is_parsed(client, db, tenant_key):
    tenant_id, key = tenant_key
    response = post(client, "t", track(), key, headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    assert count(db, Event, tenant_id) == 1


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "track", "userId": "u1"}, "event"),
        ({"type": "track", "event": "X"}, "userId"),
        ({"type": "track", "event": "X", "userId": "u", "timestamp": "yesterday"}, "timestamp"),
        ({"type": "track", "event": "X", "userId": "u", "properties": [1]}, "properties"),
        ({"type": "track", "event": "X", "userId": "u", "messageId": "m" * 101}, "messageId"),
    ],
)
def test_invalid_single_message_gets_400_naming_the_field(client, db, tenant_key, message, field):
    _, key = tenant_key
    response = post(client, "track", message, key)
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "invalid_message"
    assert field in body["errors"]
    assert count(db, Event) == 0


def test_group_without_group_id_and_alias_without_previous_id_are_rejected(client, tenant_key):
    _, key = tenant_key
    assert "groupId" in post(client, "group", {"userId": "u"}, key).get_json()["errors"]
    assert "previousId" in post(client, "alias", {"userId": "u"}, key).get_json()["errors"]


def test_one_bad_message_does_not_drop_the_good_ones(client, db, tenant_key):
    tenant_id, key = tenant_key
    good = [track(), track()]
    bad = {"type": "track", "userId": "u1", "messageId": "bad-1"}
    response = post(client, "batch", {"batch": [good[0], bad, good[1]], "writeKey": key})
    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True
    assert body["rejected"] == [
        {"index": 1, "messageId": "bad-1", "errors": {"event": ["event is required for track"]}}
    ]
    assert count(db, Event, tenant_id) == 2
    with db.system_session() as s:
        rejected = s.scalar(select(RejectedMessage))
    assert rejected.message_id == "bad-1"
    assert rejected.errors == {"event": ["event is required for track"]}
    assert key not in rejected.payload_excerpt


def test_a_batch_with_no_valid_message_gets_400_listing_each(client, db, tenant_key):
    _, key = tenant_key
    response = post(client, "batch", {"batch": [{"type": "nope", "userId": "u"}, 7]}, key)
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "invalid_batch"
    assert [r["index"] for r in body["rejected"]] == [0, 1]
    assert "type" in body["rejected"][0]["errors"]


def test_message_over_32kb_in_a_batch_is_rejected_alone(client, db, tenant_key):
    tenant_id, key = tenant_key
    big = track(properties={"blob": "x" * 33_000})
    response = post(client, "batch", {"batch": [track(), big]}, key)
    assert response.status_code == 200
    assert response.get_json()["rejected"][0]["index"] == 1
    assert "limit is 32768" in response.get_json()["rejected"][0]["errors"]["_schema"][0]
    assert count(db, Event, tenant_id) == 1


def test_single_message_over_32kb_gets_413(client, db, tenant_key):
    _, key = tenant_key
    response = post(client, "track", track(properties={"blob": "x" * 33_000}), key)
    assert response.status_code == 413
    assert response.get_json()["code"] in ("payload_too_large", "message_too_large")
    assert count(db, Event) == 0


def test_batch_over_500kb_gets_413_and_stores_nothing(client, db, tenant_key):
    _, key = tenant_key
    batch = [track(properties={"blob": "x" * 20_000}) for _ in range(30)]
    response = post(client, "batch", {"batch": batch}, key)
    assert response.status_code == 413
    assert response.get_json()["code"] == "payload_too_large"
    assert count(db, Event) == 0


def test_more_than_2500_messages_gets_400(client, tenant_key):
    _, key = tenant_key
    batch = [{"type": "track", "event": "E", "userId": "u"}] * 2501
    response = post(client, "batch", {"batch": batch}, key)
    assert response.status_code == 400
    assert response.get_json()["code"] == "batch_too_large"


def test_retried_batch_is_stored_once_and_counted_once(client, db, tenant_key):
    tenant_id, key = tenant_key
    batch = {"batch": [track(), track()]}
    for _ in range(3):
        assert post(client, "batch", batch, key).status_code == 200
    assert count(db, Event, tenant_id) == 2
    with db.system_session() as s:
        assert s.scalar(select(func.sum(UserEventDay.count))) == 2


def test_same_message_id_twice_in_one_batch_is_stored_once(client, db, tenant_key):
    tenant_id, key = tenant_key
    message = track()
    assert post(client, "batch", {"batch": [message, message]}, key).status_code == 200
    assert count(db, Event, tenant_id) == 1


def test_message_without_message_id_but_with_timestamp_is_deduplicated_on_retry(
    client, db, tenant_key
):
    tenant_id, key = tenant_key
    message = track()
    del message["messageId"]
    for sent_at in ("2026-11-20T10:00:01Z", "2026-11-20T10:00:09Z"):
        post(client, "batch", {"batch": [message], "sentAt": sent_at}, key)
    assert count(db, Event, tenant_id) == 1


def test_same_message_id_in_two_tenants_is_stored_for_both(client, db):
    a = create_tenant(db, "A")
    b = create_tenant(db, "B")
    message = track()
    post(client, "track", message, issue_write_key(db, a.id).secret)
    post(client, "track", message, issue_write_key(db, b.id).secret)
    assert count(db, Event, a.id) == 1
    assert count(db, Event, b.id) == 1


def test_timestamp_is_corrected_for_device_clock_skew(app, client, db, tenant_key):
    tenant_id, key = tenant_key
    received = dt.datetime(2026, 11, 20, 12, 0, 0, tzinfo=dt.UTC)
    app.extensions["pql"].clock = lambda: received
    # The device's clock is one hour fast: it stamped 11:30 and sent at 13:00 its time.
    message = track(timestamp="2026-11-20T11:30:00Z")
    post(client, "batch", {"batch": [message], "sentAt": "2026-11-20T13:00:00Z"}, key)
    with db.tenant_session(tenant_id) as s:
        event = s.scalar(select(Event))
    assert event.timestamp == dt.datetime(2026, 11, 20, 10, 30, tzinfo=dt.UTC)
    assert event.received_at == received


def test_message_without_timestamp_happened_when_received(app, client, db, tenant_key):
    tenant_id, key = tenant_key
    received = dt.datetime(2026, 11, 20, 12, 0, 0, tzinfo=dt.UTC)
    app.extensions["pql"].clock = lambda: received
    message = track()
    del message["timestamp"]
    post(client, "track", message, key)
    with db.tenant_session(tenant_id) as s:
        assert s.scalar(select(Event.timestamp)) == received


def test_batch_context_merges_into_each_message_and_the_key_is_not_stored(client, db, tenant_key):
    tenant_id, key = tenant_key
    body = {
        "batch": [track(context={"ip": "1.2.3.4"})],
        "context": {"library": {"name": "analytics-python"}, "ip": "9.9.9.9"},
        "writeKey": key,
    }
    post(client, "batch", body, key)
    with db.tenant_session(tenant_id) as s:
        payload = s.scalar(select(Event.payload))
    assert payload["context"] == {"library": {"name": "analytics-python"}, "ip": "1.2.3.4"}
    assert key not in json.dumps(payload)


def test_preflight_is_answered_for_browsers(client):
    response = client.options("/v1/t", headers={"Origin": "https://app.example.com"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


def test_unknown_tracking_path_gets_404_json(client, tenant_key):
    _, key = tenant_key
    response = post(client, "purchase", track(), key)
    assert response.status_code == 404
    assert response.get_json()["code"] == "not_found"


def test_basic_header_helper_matches_rudderstack_format():
    assert basic("wk_abc") == {"Authorization": "Basic d2tfYWJjOg=="}


def test_write_keys_never_reach_the_logs(client, db, tenant_key, caplog):
    import logging

    _, key = tenant_key
    caplog.set_level(logging.DEBUG)
    post(client, "batch", {"batch": [track(), {"type": "track"}], "writeKey": key}, key)
    post(client, "batch", {"batch": [track()]}, key + "x")
    post(client, "track", {"type": "track", "event": "E"}, key)
    assert caplog.records, "expected the requests to log something"
    assert key not in caplog.text


def test_a_nul_character_is_refused_by_name_not_a_server_error(client, db, tenant_key):
    """PostgreSQL text and JSONB cannot hold U+0000 (found by fuzzing: it answered 500)."""
    tenant_id, key = tenant_key
    single = post(client, "track", track(user="\x00"), key)
    assert single.status_code == 400 and "NUL character" in single.get_data(as_text=True)
    batch = post(
        client,
        "batch",
        {"batch": [track(properties={"k\x00": 1}), track(event="Fine")]},
        key,
    )
    assert batch.status_code == 200
    [rejected] = batch.get_json()["rejected"]
    assert rejected["index"] == 0 and "NUL" in str(rejected["errors"])
    with db.tenant_session(tenant_id) as session:
        from app.models import Event

        assert [e.name for e in session.scalars(select(Event))] == ["Fine"]


@pytest.mark.parametrize(
    "bad, why",
    [
        ('{"type": "track", "userId": "x", "event": "E", "properties": {"n": NaN}}', "NaN"),
        ('{"type": "track", "userId": "x", "event": "E", "properties": {"n": 1e999}}', "NaN"),
        ('{"type": "track", "userId": "x", "event": "E", "properties": {"n": -Infinity}}', "NaN"),
        ('{"type": "track", "userId": "\\ud800", "event": "E"}', "surrogate"),
        ('{"type": "identify", "userId": "x", "traits": {"n": "\\udfff"}}', "surrogate"),
        (
            '{"type": "track", "userId": "x", "event": "E", "properties": {"n": 1'
            + "0" * 5000
            + "}}",
            "digits",
        ),
        (
            '{"type": "track", "userId": "x", "event": "E", "timestamp": "9999-12-31T00:00:00Z"}',
            "between",
        ),
        (
            '{"type": "track", "userId": "x", "event": "E", "timestamp": "0001-01-01T00:00:00Z",'
            ' "sentAt": "9999-01-01T00:00:00Z"}',
            "between",
        ),
        (
            '{"type": "track", "userId": "x", "event": "E", "timestamp": "1971-01-01T00:00:00Z",'
            ' "sentAt": "2099-01-01T00:00:00Z"}',
            "too far apart",
        ),
    ],
)
def test_a_message_that_cannot_be_stored_is_refused_alone_and_the_batch_kept(
    client, tenant_key, bad, why
):
    _, key = tenant_key
    good = json.dumps(track(user="kept"))
    body = ('{"batch": [' + good + ", " + bad + "]}").encode()
    answer = post(client, "batch", body, key)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    [rejected] = answer.get_json()["rejected"]
    assert rejected["index"] == 1 and why in json.dumps(rejected["errors"])


def test_a_group_website_that_is_no_url_keeps_the_account_without_a_domain(client, tenant_key):
    _, key = tenant_key
    group = {"type": "group", "userId": "u", "groupId": "g", "traits": {"website": "http://[::1"}}
    assert post(client, "group", group, key).status_code == 200


def test_a_shared_context_too_large_for_any_message_is_refused_before_copying(
    client, db, tenant_key
):
    _, key = tenant_key
    context = {"blob": "x" * 40_000}  # over the 32 KB a message may hold
    body = {"context": context, "batch": [{"type": "track"} for _ in range(10)]}
    answer = post(client, "batch", body, key)
    assert answer.status_code == 413
    assert "every message would exceed" in answer.get_json()["message"]


def test_a_shared_context_copied_into_many_messages_is_bounded(client, db, tenant_key):
    _, key = tenant_key
    # 170 bytes of context in the body, copied into 2,500 messages: still allowed.
    small = {"context": {"note": "y" * 150}, "batch": [track() for _ in range(2500)]}
    assert post(client, "batch", small, key).status_code == 200
    # 2 KB copied 2,500 times (5 MB) is past what a batch may expand to: refused at once, with
    # no per-message work (the earlier code serialised 2,500 merged copies).
    big = {"context": {"note": "z" * 2000}, "batch": [{} for _ in range(2500)]}
    answer = post(client, "batch", big, key)
    assert answer.status_code == 413 and answer.get_json()["code"] == "payload_too_large"
    assert "send smaller batches" in answer.get_json()["message"]
