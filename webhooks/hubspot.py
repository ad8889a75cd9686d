"""HubSpot webhook notifications: verify the v3 signature, parse, hand typed changes on.

HubSpot signs ``method + URI + body + timestamp`` with the app's client secret (HMAC-SHA256,
base64) and sends the timestamp (epoch ms) beside it; requests older than five minutes are
refused, as HubSpot's own client does. Deliveries are retried by HubSpot, so events are
deduplicated by ``eventId`` where they are applied (``app.sync.webhook_changes``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import re
from collections import defaultdict

from flask import Blueprint, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields

from app.bodies import json_document
from app.errors import RequestError
from app.scores.definitions_store import current_definitions
from app.services import services
from app.sync.webhook_changes import apply_webhook_changes
from app.tenants import installation
from app.tracking.privacy import forget_user
from app.web.read_model import usage_card
from connectors.base import CrmChange
from connectors.hubspot import KEY
from connectors.hubspot.client import FIELD_OF_PROPERTY
from webhooks.common import InboundRequest

log = logging.getLogger(__name__)

bp = Blueprint("hubspot_webhooks", __name__)

TIMESTAMP_WINDOW = dt.timedelta(minutes=5)
SUBJECTS = {"company": "account", "contact": "user"}
# What the app subscribes to: owner and lifecycle stage changes, and deletions.
HANDLED = {
    "company.propertyChange",
    "contact.propertyChange",
    "company.deletion",
    "contact.deletion",
    "company.merge",
    "contact.merge",
    "contact.privacyDeletion",
}


class SignatureError(Exception):
    pass


# HubSpot decodes these escapes in the URI before it signs it (its v3 signature documentation).
SIGNED_URI_DECODING = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_ESCAPE = re.compile("|".join(SIGNED_URI_DECODING), re.IGNORECASE)


def signed_uri(uri: str) -> str:
    """The URI as HubSpot signs it: the listed escapes decoded, every other one kept."""
    return _ESCAPE.sub(lambda m: SIGNED_URI_DECODING[m.group(0).upper()], uri)


def signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    source = method.encode() + signed_uri(uri).encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), source, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(
    secret: str,
    method: str,
    uri: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now: dt.datetime,
) -> None:
    if not signature or not timestamp:
        raise SignatureError("missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp")
    try:
        sent = dt.datetime.fromtimestamp(int(timestamp) / 1000, dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise SignatureError("X-HubSpot-Request-Timestamp is not epoch milliseconds") from exc
    if abs(now - sent) > TIMESTAMP_WINDOW:
        raise SignatureError("X-HubSpot-Request-Timestamp is outside the 5-minute window")
    expected = signature_v3(secret, method, uri, body, timestamp)
    # Compared as bytes: a header that is not ASCII is simply a wrong signature.
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise SignatureError("signature does not match")


def verify_request(svc, body: bytes) -> None:
    """Check the current request's v3 signature: HubSpot signs the URL it called (the app's
    public URL, path and query), the method, the body and the timestamp."""
    if not svc.settings.hubspot_enabled:
        # No client secret to check against: nothing HubSpot sends can be verified.
        raise SignatureError("HubSpot is not configured on this server")
    query = request.query_string.decode()
    uri = svc.settings.public_url + request.path + (f"?{query}" if query else "")
    verify(
        svc.settings.hubspot_client_secret,
        request.method,
        uri,
        body,
        request.headers.get("X-HubSpot-Signature-v3"),
        request.headers.get("X-HubSpot-Request-Timestamp"),
        svc.clock(),
    )


class _EventSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    eventId = fields.Integer(required=True)
    portalId = fields.Integer(required=True)
    subscriptionType = fields.String(required=True)
    objectId = fields.Integer(required=True)
    occurredAt = fields.Integer(required=True)
    propertyName = fields.String(load_default=None)
    propertyValue = fields.String(load_default=None, allow_none=True)
    # Merges: the record that survives, and the ones merged into it.
    primaryObjectId = fields.Integer(load_default=None)
    mergedObjectIds = fields.List(fields.Integer(), load_default=list)
    newObjectId = fields.Integer(load_default=None)


def notification_key(event: dict) -> str:
    """HubSpot does not guarantee ``eventId`` unique: a notification is its id, subscription
    type, object, property and time together (hashed to fit the stored key)."""
    parts = (
        event["eventId"],
        event["subscriptionType"],
        event["objectId"],
        event.get("propertyName") or "",
        event["occurredAt"],
    )
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def parse(body: bytes) -> list[CrmChange]:
    document = json_document(body, list, "a JSON array of events")
    events = _EventSchema(many=True).load(document)
    changes = []
    for event in events:
        kind = event["subscriptionType"]
        if kind not in HANDLED:
            continue
        object_name, _, action = kind.partition(".")
        survivor = event["objectId"]
        merged: tuple[str, ...] = ()
        if action == "merge":
            survivor = event.get("newObjectId") or event.get("primaryObjectId") or survivor
            sources = {event.get("primaryObjectId"), *event.get("mergedObjectIds", [])}
            merged = tuple(sorted(str(s) for s in sources if s and s != survivor))
        changes.append(
            CrmChange(
                event_id=notification_key(event),
                portal=str(event["portalId"]),
                subject=SUBJECTS[object_name],
                crm_id=str(survivor),
                merged_from=merged,
                kind=action,
                occurred_at=dt.datetime.fromtimestamp(event["occurredAt"] / 1000, dt.UTC),
                name=FIELD_OF_PROPERTY.get(event.get("propertyName") or ""),
                value=event.get("propertyValue"),
            )
        )
    return changes


class SignedByHubSpot(InboundRequest):
    """A request HubSpot signed (webhooks, app card fetches)."""

    def authenticate(self) -> None:
        try:
            verify_request(self.svc, self.body)
        except SignatureError as exc:
            log.warning("HubSpot request to %s refused: %s", request.path, exc)
            raise RequestError(401, "invalid_signature", str(exc)) from exc


class WebhookDelivery(SignedByHubSpot):
    """Up to 100 notifications, possibly for several portals."""

    def parse(self) -> None:
        try:
            self.changes = parse(self.body)
        except ValidationError as exc:
            raise RequestError(400, "invalid_body", str(exc.messages)) from exc

    def resolve(self) -> None:
        self.by_portal: dict[str, list[CrmChange]] = defaultdict(list)
        for change in self.changes:
            self.by_portal[change.portal].append(change)


@bp.post("/hubspot/webhooks")
def receive():
    svc = services()
    delivery = WebhookDelivery.validated(svc)
    applied = sum(_apply(svc, portal, changes) for portal, changes in delivery.by_portal.items())
    return {"received": len(delivery.changes), "applied": applied}, 200


def _apply(svc, portal: str, changes: list[CrmChange]) -> int:
    """One portal's changes; a privacy deletion (GDPR) forgets that person here too, even
    while the app is uninstalled and its data waits for deletion."""
    done = 0
    deletions = [c for c in changes if c.kind == "privacyDeletion"]
    if deletions:
        tenant_id = installation(svc.db, KEY, portal, active=False)
        for change in deletions if tenant_id is not None else ():
            done += forget_user(svc.db, tenant_id, svc.clock(), crm_id=change.crm_id).users
    others = [c for c in changes if c.kind != "privacyDeletion"]
    if others:
        tenant_id = installation(svc.db, KEY, portal)
        if tenant_id is None:
            log.info("webhook for unknown or inactive portal %s ignored", portal)
            return done
        done += apply_webhook_changes(svc.db, tenant_id, others, svc.clock())
    return done


# --- the app card (a UI extension on company and contact records) ------------------------------

# HubSpot's object type ids as the card's context names them.
APP_CARD_OBJECTS = {"0-2": "account", "0-1": "user"}


class AppCardFetch(SignedByHubSpot):
    """The app card's ``hubspot.fetch``: HubSpot signs it (v3) and adds the portal and the
    user to the query; the card names the record."""

    def parse(self) -> None:
        self.portal = request.args.get("portalId", "")
        self.object_id = request.args.get("objectId", "")
        self.subject = APP_CARD_OBJECTS.get(request.args.get("objectTypeId", ""))
        if not self.portal.isdigit() or not self.object_id.isdigit() or self.subject is None:
            raise RequestError(
                400,
                "invalid_parameter",
                "portalId and objectId (numbers) and objectTypeId (0-1 for contacts, 0-2 for "
                "companies) are required",
            )

    def resolve(self) -> None:
        self.tenant_id = installation(self.svc.db, KEY, self.portal)
        if self.tenant_id is None:
            raise RequestError(404, "not_installed", f"the app is not installed in {self.portal}")


@bp.get("/hubspot/app-card")
def app_card():
    """What the app card shows for one company or contact."""
    svc = services()
    fetch = AppCardFetch.validated(svc)
    defs = current_definitions(svc.db, fetch.tenant_id).definitions
    with svc.db.tenant_session(fetch.tenant_id) as session:
        card = usage_card(
            session, fetch.subject, fetch.object_id, defs, f"{svc.settings.public_url}/app/"
        )
    return card, 200
