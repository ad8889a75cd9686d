"""HTTP routes of the Segment-compatible tracking API (``/v1/...``).

Thin: read the body within limits, parse it (``webhooks.segment``), authenticate the write key,
hand the messages to ``app.tracking.ingest``, answer exactly 200 once they are committed.
"""

from __future__ import annotations

import logging
import math

from flask import Blueprint, Response, jsonify, request

from app.bodies import json_document, read_capped
from app.errors import RequestError, error_response
from app.services import services
from app.tenants import resolve_write_key
from app.tracking.ingest import ingest
from app.tracking.rate_limit import admit
from webhooks.segment import (
    BATCH_PATHS,
    PATH_TYPES,
    decode_body,
    parse_messages,
    write_key_from,
)

log = logging.getLogger(__name__)

bp = Blueprint("tracking_api", __name__, url_prefix="/v1")
PATHS = (*BATCH_PATHS, *PATH_TYPES)


@bp.after_request
def _cors(response: Response) -> Response:
    # analytics.js posts from the customer's pages; 1.84+ sends Authorization, so browsers
    # preflight. The write key, not the origin, is what authenticates.
    response.headers["Access-Control-Allow-Origin"] = request.headers.get("Origin", "*")
    response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = (
        "Authorization, Content-Type, Content-Encoding"
    )
    response.headers["Access-Control-Max-Age"] = "86400"
    response.headers["Vary"] = "Origin"
    return response


@bp.route("/<path>", methods=["OPTIONS"])
def preflight(path: str):
    if path not in PATHS:
        return error_response(404, "not_found", f"unknown tracking path /v1/{path}")
    return Response(status=204)


@bp.post("/<path>")
def receive(path: str):
    if path not in PATHS:
        return error_response(404, "not_found", f"unknown tracking path /v1/{path}")
    svc = services()
    settings = svc.settings
    received_at = svc.clock()
    limit = settings.max_batch_bytes if path in BATCH_PATHS else settings.max_message_bytes
    try:
        raw = read_capped(settings.max_batch_bytes)
        decoded = decode_body(raw, request.headers.get("Content-Encoding"), limit)
        body = json_document(decoded, refuse_nul=False)  # refused per message instead
        write_key = write_key_from(request.headers.get("Authorization"), body)
        if not write_key:
            raise RequestError(
                401,
                "missing_write_key",
                "send the write key as the HTTP Basic user name or as writeKey in the body",
            )
        resolved = resolve_write_key(svc.db, write_key)
        if resolved is None:
            raise RequestError(401, "invalid_write_key", "write key is unknown or revoked")
        messages, rejections = parse_messages(body, path, received_at, settings.max_message_bytes)
    except RequestError as exc:
        return error_response(exc.status, exc.code, exc.message, **exc.details)

    count = len(messages) + len(rejections)
    wait = admit(svc.db, resolved.key_id, count, settings.ingest_messages_per_10s, received_at)
    if wait is not None:
        limit = settings.ingest_messages_per_10s
        response = error_response(
            429,
            "rate_limited",
            f"this write key may send {limit} messages per 10 seconds; retry after "
            f"{math.ceil(wait)} s (nothing of this request was stored)",
            limit_per_10s=limit,
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    ingest(svc.db, resolved.tenant_id, messages, rejections, received_at)
    if rejections:
        log.info(
            "tenant %s: %s of %s messages rejected",
            resolved.tenant_id,
            len(rejections),
            len(rejections) + len(messages),
        )
        return jsonify(success=True, rejected=[r.as_json() for r in rejections])
    return jsonify(success=True)
