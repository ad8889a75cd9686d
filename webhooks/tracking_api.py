"""HTTP routes of the Segment-compatible tracking API (``/v1/...``).

Thin: a ``TrackingRequest`` reads the body within limits, authenticates the write key, counts
the request against the key's and the tenant's limits (before any validation, so refused
requests count too) and parses the messages (``webhooks.segment``); the route hands them to
``app.tracking.ingest`` and answers exactly 200 once they are committed.
"""

from __future__ import annotations

import logging
import math

from flask import Blueprint, Response, jsonify, request

from app.bodies import json_document
from app.errors import RequestError, error_response
from app.services import services
from app.tenants import resolve_write_key
from app.tracking.ingest import ingest
from app.tracking.rate_limit import admit
from webhooks.common import InboundRequest
from webhooks.segment import (
    BATCH_PATHS,
    PATH_TYPES,
    decode_body,
    parse_int,
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


class TrackingRequest(InboundRequest):
    """One call of the Segment HTTP API: a message, or a batch of them."""

    def __init__(self, svc, path: str):
        self.max_bytes = svc.settings.max_batch_bytes
        super().__init__(svc)
        self.path = path
        self.received_at = svc.clock()

    def authenticate(self) -> None:
        """The write key: HTTP Basic user name, or ``writeKey`` in the (decoded) body."""
        settings = self.svc.settings
        batch = self.path in BATCH_PATHS
        limit = settings.max_batch_bytes if batch else settings.max_message_bytes
        decoded = decode_body(self.body, request.headers.get("Content-Encoding"), limit)
        # NULs and numbers that cannot be stored are refused per message, not per request.
        self.document = json_document(decoded, refuse_nul=False, parse_int=parse_int)
        write_key = write_key_from(request.headers.get("Authorization"), self.document)
        if not write_key:
            raise RequestError(
                401,
                "missing_write_key",
                "send the write key as the HTTP Basic user name or as writeKey in the body",
            )
        self.key = resolve_write_key(self.svc.db, write_key)
        if self.key is None:
            raise RequestError(401, "invalid_write_key", "write key is unknown or revoked")

    def parse(self) -> None:
        self.admit()
        self.messages, self.rejections = parse_messages(
            self.document, self.path, self.received_at, self.svc.settings.max_message_bytes
        )

    def admit(self) -> None:
        """The key's and the tenant's limits, before the messages are validated: what the
        request names counts (a batch's items, else one), also when it is then refused."""
        settings = self.svc.settings
        items = self.document.get("batch") if self.path in BATCH_PATHS else None
        count = max(1, len(items)) if isinstance(items, list) else 1
        refusal = admit(
            self.svc.db,
            self.key.key_id,
            self.key.tenant_id,
            count,
            settings.ingest_messages_per_10s,
            settings.ingest_tenant_messages_per_10s,
            self.received_at,
        )
        if refusal is None:
            return
        wait = str(math.ceil(refusal.retry_after))
        who = "this write key" if refusal.scope == "key" else "this account's write keys together"
        raise RequestError(
            429,
            "rate_limited",
            f"{who} may send {refusal.limit} messages per 10 seconds; retry after {wait} s "
            "(nothing of this request was stored)",
            headers={"Retry-After": wait},
            limit_per_10s=refusal.limit,
            scope=refusal.scope,
        )

    def resolve(self) -> None:
        self.tenant_id = self.key.tenant_id


@bp.post("/<path>")
def receive(path: str):
    if path not in PATHS:
        return error_response(404, "not_found", f"unknown tracking path /v1/{path}")
    svc = services()
    call = TrackingRequest.validated(svc, path)
    messages, rejections, received_at = call.messages, call.rejections, call.received_at
    ingest(svc.db, call.tenant_id, messages, rejections, received_at)
    if rejections:
        log.info(
            "tenant %s: %s of %s messages rejected",
            call.tenant_id,
            len(rejections),
            len(rejections) + len(messages),
        )
        return jsonify(success=True, rejected=[r.as_json() for r in rejections])
    return jsonify(success=True)
