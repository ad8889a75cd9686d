"""The Segment tracking API, wire-compatible with the Segment and RudderStack SDKs.

This module only reads requests: it authenticates nothing itself (it extracts the write key),
decodes and validates, and hands typed ``Message`` values on. Nothing past it re-validates.

Rules, following Segment's HTTP API:
* A request body over the batch limit, or a single-message request over the message limit, is
  refused whole with 413; an unparseable body with 400.
* In a batch, every valid message is kept. A message that fails validation (or is over 32 KB) is
  not stored as an event; it is reported in the 200 response under ``rejected`` and recorded for
  the admin. Only when *no* message of the request is valid does the request get a 400 naming
  the fields, since there is nothing to keep and the sender must fix the call.
* ``timestamp = receivedAt - (sentAt - timestamp)`` corrects the device's clock.
* A message without ``messageId`` gets a deterministic one derived from its content when it has
  a timestamp (so a client's retry is still stored once), a random one otherwise.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
import uuid
import zlib
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from app.bodies import has_nul
from app.errors import RequestError
from app.tracking.messages import Message, Rejection

MESSAGE_TYPES = ("track", "identify", "group", "page", "screen", "alias")
# Full names for the HTTP API, one-letter paths for analytics.js.
PATH_TYPES = {
    "track": "track",
    "identify": "identify",
    "group": "group",
    "page": "page",
    "screen": "screen",
    "alias": "alias",
    "t": "track",
    "i": "identify",
    "g": "group",
    "p": "page",
    "s": "screen",
    "a": "alias",
}
BATCH_PATHS = ("batch", "b", "import")
MAX_BATCH_MESSAGES = 2500
MAX_ID_LENGTH = 255
# Times a product event can carry (and the database and CRMs store).
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
MAX_INT_DIGITS = 4300  # Python's own limit for int(); longer numbers are refused per message


class _TooLong:
    """A JSON integer with more digits than Python converts: refused with its message."""


TOO_LONG = _TooLong()


def parse_int(text: str) -> int | _TooLong:
    """``json.loads``' integers, without the ValueError that would refuse the whole body."""
    return int(text) if len(text.lstrip("-")) <= MAX_INT_DIGITS else TOO_LONG


def unstorable(value: Any) -> str | None:
    """Why a value cannot be stored as JSON and text, if it cannot: NaN and Infinity (not
    JSON, refused by PostgreSQL's JSONB), lone UTF-16 surrogates (not UTF-8), integers longer
    than Python converts."""
    if isinstance(value, float) and not math.isfinite(value):
        return "contains NaN or Infinity, which JSON does not allow"
    if isinstance(value, _TooLong):
        return f"contains a number of more than {MAX_INT_DIGITS} digits"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone UTF-16 surrogate, which is not text"
        return None
    if isinstance(value, dict):
        return next(
            (r for k, v in value.items() for r in (unstorable(k), unstorable(v)) if r), None
        )
    if isinstance(value, list):
        return next((r for v in value if (r := unstorable(v))), None)
    return None


# --- decoding ------------------------------------------------------------------------------


def decode_body(raw: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo ``Content-Encoding`` and refuse bodies over ``max_bytes`` once decoded."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        body = raw
    elif encoding in ("gzip", "x-gzip"):
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = decompressor.decompress(raw, max_bytes + 1)
        except zlib.error as exc:
            raise RequestError(400, "invalid_encoding", f"body is not valid gzip: {exc}") from exc
        if len(body) <= max_bytes and not decompressor.eof:
            raise RequestError(400, "invalid_encoding", "gzip body is truncated")
    else:
        raise RequestError(
            415,
            "unsupported_encoding",
            f"Content-Encoding {content_encoding!r} is not supported; use gzip or none",
        )
    if len(body) > max_bytes:
        raise RequestError(
            413,
            "payload_too_large",
            f"request body exceeds the limit of {max_bytes} bytes",
            limit_bytes=max_bytes,
        )
    return body


def write_key_from(authorization: str | None, body: dict[str, Any]) -> str | None:
    """HTTP Basic user name (RudderStack, analytics-node) or the body's ``writeKey`` (Segment's
    Python SDK sends no header; OAuth clients send a Bearer token and the key in the body)."""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise RequestError(
                    401, "invalid_authorization", "Authorization header is not valid Basic"
                ) from exc
            username = decoded.partition(":")[0]
            if username:
                return username
    key = body.get("writeKey")
    return key if isinstance(key, str) and key else None


# --- validation ----------------------------------------------------------------------------


class Identifier(fields.Field):
    """Segment ids are strings; SDKs also send numbers. Blank means absent."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValidationError("must be a string")
        text = str(value).strip()
        if len(text) > MAX_ID_LENGTH:
            raise ValidationError(f"must be at most {MAX_ID_LENGTH} characters")
        return text or None


class Timestamp(fields.Field):
    """ISO-8601; a time without an offset is taken as UTC."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValidationError("must be an ISO-8601 date-time string")
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValidationError(f"is not an ISO-8601 date-time: {value[:40]!r}") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        if not EARLIEST <= parsed < LATEST:
            raise ValidationError(
                f"must be between {EARLIEST.year} and {LATEST.year - 1}: {value[:40]!r}"
            )
        return parsed.astimezone(dt.UTC)


class MessageSchema(Schema):
    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True, validate=validate.OneOf(MESSAGE_TYPES))
    messageId = fields.String(allow_none=True, validate=validate.Length(max=100))
    userId = Identifier(allow_none=True)
    anonymousId = Identifier(allow_none=True)
    event = fields.String(allow_none=True, validate=validate.Length(max=255))
    name = fields.String(allow_none=True, validate=validate.Length(max=255))
    groupId = Identifier(allow_none=True)
    previousId = Identifier(allow_none=True)
    timestamp = Timestamp(allow_none=True)
    originalTimestamp = Timestamp(allow_none=True)
    sentAt = Timestamp(allow_none=True)
    context = fields.Dict(allow_none=True)
    properties = fields.Dict(allow_none=True)
    traits = fields.Dict(allow_none=True)
    integrations = fields.Dict(allow_none=True)

    @validates_schema
    def _required_by_type(self, data, **kwargs):
        errors: dict[str, list[str]] = {}
        kind = data.get("type")
        if not data.get("userId") and not data.get("anonymousId"):
            errors["userId"] = ["userId or anonymousId is required"]
        if kind == "track" and not (data.get("event") or "").strip():
            errors["event"] = ["event is required for track"]
        if kind == "group" and not data.get("groupId"):
            errors["groupId"] = ["groupId is required for group"]
        if kind == "alias":
            if not data.get("previousId"):
                errors["previousId"] = ["previousId is required for alias"]
            if not data.get("userId"):
                errors["userId"] = ["userId is required for alias"]
        if errors:
            raise ValidationError(errors)


_schema = MessageSchema()


def _serialized(item: dict[str, Any]) -> str:
    return json.dumps(item, separators=(",", ":"), default=str)


def _auto_message_id(item: dict[str, Any]) -> str:
    if item.get("timestamp") or item.get("originalTimestamp"):
        stable = {k: v for k, v in item.items() if k not in ("sentAt", "writeKey")}
        canonical = json.dumps(stable, sort_keys=True, separators=(",", ":"), default=str)
        return "auto-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:40]
    return "auto-" + uuid.uuid4().hex


def corrected_timestamp(
    timestamp: dt.datetime | None, sent_at: dt.datetime | None, received_at: dt.datetime
) -> dt.datetime:
    """Segment's rule: shift the device time by the device clock's offset at sending."""
    if timestamp is None:
        return received_at
    if sent_at is None:
        return timestamp
    corrected = received_at - (sent_at - timestamp)  # OverflowError past year 1 or 9999
    if not EARLIEST <= corrected < LATEST:
        raise OverflowError(f"the corrected time {corrected:%Y-%m-%d} is out of range")
    return corrected


def _group_id_of(data: dict[str, Any]) -> str | None:
    if data["type"] == "group":
        return data.get("groupId")
    for holder in (data.get("context"), data.get("properties")):
        if isinstance(holder, dict):
            value = holder.get("groupId")
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
                return str(value).strip()[:MAX_ID_LENGTH]
    return None


def _traits_of(data: dict[str, Any]) -> dict[str, Any]:
    if data["type"] == "identify":
        # rudder-sdk-python puts identify traits in context.traits.
        context_traits = (data.get("context") or {}).get("traits")
        merged = dict(context_traits) if isinstance(context_traits, dict) else {}
        merged.update(data.get("traits") or {})
        return merged
    if data["type"] == "group":
        return dict(data.get("traits") or {})
    return {}


def _to_message(data: dict[str, Any], item: dict[str, Any], received_at: dt.datetime) -> Message:
    kind = data["type"]
    timestamp = corrected_timestamp(
        data.get("timestamp") or data.get("originalTimestamp"), data.get("sentAt"), received_at
    )
    name = data.get("event") if kind == "track" else data.get("name")
    if kind in ("page", "screen") and not name:
        name = (data.get("properties") or {}).get("name")
    return Message(
        type=kind,
        message_id=data.get("messageId") or _auto_message_id(item),
        user_id=data.get("userId"),
        anonymous_id=data.get("anonymousId"),
        timestamp=timestamp,
        name=(name.strip() or None) if isinstance(name, str) else None,
        group_id=_group_id_of(data),
        previous_id=data.get("previousId"),
        traits=_traits_of(data),
        properties=dict(data.get("properties") or {}),
        payload=item,
    )


def _merge_batch_defaults(item: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Batch-level ``context``, ``integrations`` and ``sentAt`` apply to every item; the item's
    own values win. The write key is never copied into what gets stored."""
    merged = {k: v for k, v in item.items() if k != "writeKey"}
    for key in ("context", "integrations"):
        shared = body.get(key)
        if isinstance(shared, dict):
            own = merged.get(key)
            merged[key] = {**shared, **own} if isinstance(own, dict) else dict(shared)
    if merged.get("sentAt") is None and body.get("sentAt") is not None:
        merged["sentAt"] = body["sentAt"]
    return merged


def _excerpt(item: Any, limit: int) -> str:
    if isinstance(item, dict):
        item = {k: v for k, v in item.items() if k != "writeKey"}
    return json.dumps(item, separators=(",", ":"), default=str)[:limit]


# A batch's shared ``context``/``integrations`` are copied into each message: what that copying
# may produce in all, as a multiple of the per-message limit (the default allows 4 MB).
EXPANDED_BATCH_MESSAGES = 128


def _refuse_expansion(body: dict[str, Any], count: int, max_message_bytes: int) -> None:
    """Refuse, before any copying, a batch whose shared context would be copied into every
    message past what a message may hold, or past what a whole batch may expand to."""
    shared = {k: body[k] for k in ("context", "integrations") if isinstance(body.get(k), dict)}
    if not shared:
        return
    size = len(_serialized(shared).encode("utf-8"))
    if size > max_message_bytes:
        raise RequestError(
            413,
            "message_too_large",
            f"the batch's shared context and integrations are {size} bytes; every message "
            f"would exceed the limit of {max_message_bytes} bytes",
            limit_bytes=max_message_bytes,
        )
    expanded, limit = size * count, max_message_bytes * EXPANDED_BATCH_MESSAGES
    if expanded > limit:
        raise RequestError(
            413,
            "payload_too_large",
            f"the batch's shared context ({size} bytes) copied into its {count} messages makes "
            f"{expanded} bytes; the limit is {limit}: send smaller batches or a smaller context",
            limit_bytes=limit,
        )


def parse_messages(
    body: dict[str, Any],
    path: str,
    received_at: dt.datetime,
    max_message_bytes: int,
) -> tuple[list[Message], list[Rejection]]:
    """Validate the messages of one request. Raises ``RequestError`` when none is usable."""
    if path in BATCH_PATHS:
        items = body.get("batch")
        if not isinstance(items, list):
            raise RequestError(400, "invalid_batch", "batch must be a list of messages")
        if not items:
            raise RequestError(400, "invalid_batch", "batch is empty")
        if len(items) > MAX_BATCH_MESSAGES:
            raise RequestError(
                400,
                "batch_too_large",
                f"batch has {len(items)} messages; the limit is {MAX_BATCH_MESSAGES}",
                limit_messages=MAX_BATCH_MESSAGES,
            )
        _refuse_expansion(body, len(items), max_message_bytes)
        forced_type = None
    else:
        forced_type = PATH_TYPES[path]
        items = [body]

    messages: list[Message] = []
    rejections: list[Rejection] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            rejections.append(
                Rejection(index, None, {"_schema": ["message must be a JSON object"]}, "")
            )
            continue
        merged = _merge_batch_defaults(item, body)
        if forced_type is not None:
            merged["type"] = forced_type
        message_id = merged.get("messageId") if isinstance(merged.get("messageId"), str) else None
        problem = unstorable(merged)
        if problem:
            rejections.append(
                Rejection(
                    index,
                    None if unstorable(message_id) else message_id,
                    {"_schema": [problem]},
                    "",
                )
            )
            continue
        serialized = _serialized(merged)
        if "\\u0000" in serialized and has_nul(merged):
            rejections.append(
                Rejection(
                    index,
                    None if message_id is None or "\x00" in message_id else message_id,
                    {"_schema": ["contains a NUL character (U+0000), which cannot be stored"]},
                    serialized[:200],
                )
            )
            continue
        size = len(serialized.encode("utf-8"))
        if size > max_message_bytes:
            if forced_type is not None:
                raise RequestError(
                    413,
                    "message_too_large",
                    f"message is {size} bytes; the limit is {max_message_bytes}",
                    limit_bytes=max_message_bytes,
                )
            rejections.append(
                Rejection(
                    index,
                    message_id,
                    {"_schema": [f"message is {size} bytes; the limit is {max_message_bytes}"]},
                    _excerpt(merged, max_message_bytes),
                )
            )
            continue
        try:
            data = _schema.load(merged)
        except ValidationError as exc:
            rejections.append(
                Rejection(index, message_id, exc.messages_dict, _excerpt(merged, max_message_bytes))
            )
            continue
        try:
            messages.append(_to_message(data, merged, received_at))
        except OverflowError:
            rejections.append(
                Rejection(
                    index,
                    message_id,
                    {"timestamp": ["timestamp and sentAt are too far apart to correct"]},
                    _excerpt(merged, max_message_bytes),
                )
            )

    if not messages:
        if forced_type is not None:
            raise RequestError(
                400, "invalid_message", "message failed validation", errors=rejections[0].errors
            )
        raise RequestError(
            400,
            "invalid_batch",
            "no message in the batch is valid",
            rejected=[r.as_json() for r in rejections],
        )
    return messages, rejections
