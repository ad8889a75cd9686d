"""Untrusted request bodies, read the same way at every door (the tracking API, CRM webhooks,
the admin JSON API): a size cap checked before and while reading, JSON that must be UTF-8, not
nested past Python's limit and of the expected shape, and no NUL character (PostgreSQL cannot
store U+0000). A refusal is a ``RequestError`` carrying its HTTP status.

It lives in ``app/`` rather than ``webhooks/`` because the admin API reads bodies too, and the
app never imports the inbound edges.
"""

from __future__ import annotations

import json
from typing import Any

from flask import request

from app.errors import NUL_MESSAGE, RequestError


def read_capped(limit: int) -> bytes:
    """The raw body, refused with 413 when its declared or actual length passes ``limit``."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise RequestError(
            413,
            "payload_too_large",
            f"request body of {declared} bytes exceeds the limit of {limit} bytes",
            limit_bytes=limit,
        )
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise RequestError(
            413,
            "payload_too_large",
            f"request body exceeds the limit of {limit} bytes",
            limit_bytes=limit,
        )
    return raw


def has_nul(value: Any) -> bool:
    """A NUL character (U+0000) anywhere in keys or strings."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


def json_document(
    raw: bytes,
    expect: type = dict,
    what: str = "a JSON object",
    refuse_nul: bool = True,
    **loads: Any,
) -> Any:
    """``raw`` parsed as JSON of type ``expect`` (400 ``invalid_json`` otherwise; 400
    ``invalid_characters`` for a NUL, unless the caller refuses NULs per item itself, as the
    tracking API does per message)."""
    if not raw.strip():
        raise RequestError(400, "invalid_json", f"request body is empty; send {what}")
    try:
        value = json.loads(raw, **loads)
    except UnicodeDecodeError as exc:
        raise RequestError(400, "invalid_json", "request body is not UTF-8 text") from exc
    except RecursionError as exc:
        raise RequestError(400, "invalid_json", "request body is nested too deeply") from exc
    except ValueError as exc:
        raise RequestError(400, "invalid_json", f"request body is not valid JSON: {exc}") from exc
    if not isinstance(value, expect):
        raise RequestError(400, "invalid_json", f"request body must be {what}")
    if refuse_nul and b"\\u0000" in raw and has_nul(value):
        raise RequestError(400, "invalid_characters", f"request body {NUL_MESSAGE}")
    return value
