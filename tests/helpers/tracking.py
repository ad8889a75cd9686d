"""Helpers to send tracking API requests the way the SDKs do."""

from __future__ import annotations

import base64
import gzip
import json
import uuid


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(event: str = "Report Created", user: str = "u1", **extra) -> dict:
    return {
        "type": "track",
        "event": event,
        "userId": user,
        "messageId": str(uuid.uuid4()),
        "timestamp": "2026-11-20T10:00:00Z",
        **extra,
    }


def post(client, path: str, body, key: str | None = None, *, gzipped: bool = False, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **(basic(key) if key else {})}
    if gzipped:
        data = gzip.compress(data)
        all_headers["Content-Encoding"] = "gzip"
    all_headers.update(headers or {})
    return client.post(f"/v1/{path}", data=data, headers=all_headers)
