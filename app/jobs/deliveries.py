"""Triggers: admins' rules on score changes, and the delivery of what they ask for.

A scoring pass compares each rescored record with its stored scores (``app.scores.firing``, in
the pass's own transaction) and writes one ``Delivery`` per rule that fires, unless the rule
fired for the same record within its frequency cap: the outbox. The worker's ``deliver`` job
then sends them
(CRM task or note through the tenant's connector, Slack incoming webhook, signed webhook),
retrying with exponential backoff and logging every attempt on the row. Sending is at least
once: a crash after a send and before its row is marked repeats that one send.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy import select

from app.db import Database
from app.jobs import outbound
from app.models import (
    AccountMembership,
    CrmRecord,
    Delivery,
    Tenant,
    Trigger,
    User,
)
from connectors.base import CrmError, TaskSpec
from scoring.triggers import ACTIONS, check

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
FIRST_RETRY = dt.timedelta(minutes=1)
HTTP_DEADLINE = 10.0  # seconds of wall-clock time a target has to answer one delivery
# Seconds one tenant's deliveries may take per round: what is left waits for the next round,
# so a slow target delays its own tenant's queue, not everyone's.
TENANT_BUDGET = 30.0
BATCH = 100


# --- rules ------------------------------------------------------------------------------------


def check_trigger(values: dict[str, Any], allow_loopback: bool = False) -> dict[str, str]:
    """Problems with a trigger's settings, by field. A target URL is checked as it will be at
    send time (``app.jobs.outbound``); ``allow_loopback`` outside production only."""
    problems = check(values.get("subject", ""), values.get("event", ""), values.get("params", {}))
    if not str(values.get("name") or "").strip():
        problems["name"] = "give the trigger a name"
    action = values.get("action")
    action_params = values.get("action_params") or {}
    if action not in ACTIONS:
        problems["action"] = f"must be one of {', '.join(ACTIONS)}"
    if action in ("slack", "webhook"):
        url = str(action_params.get("url") or "")
        try:
            outbound.resolve(url, allow_loopback, slack=action == "slack")
        except outbound.UnsafeTarget as exc:
            problems["url"] = str(exc)
    if action == "webhook" and len(str(action_params.get("secret") or "")) < 16:
        problems["secret"] = "at least 16 characters, to sign the requests"
    cap = values.get("cap_hours")
    if not isinstance(cap, int) or not 0 <= cap <= 24 * 90:
        problems["cap_hours"] = "hours from 0 (no cap) to 2160"
    return problems


# --- firing (inside a scoring pass) -----------------------------------------------------------


# --- delivery (the worker) ----------------------------------------------------------------------


def message(payload: dict[str, Any]) -> str:
    kind = "Account" if payload["subject"] == "account" else "User"
    return (
        f"{kind} {payload['name']}: {payload['reason']} "
        f"(engagement {payload['engagement_score']:.0f}, Activation "
        f'{payload["activation_rate"]:.0f}%) — trigger "{payload["trigger"]}"'
    )


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature: hex HMAC-SHA256 of ``timestamp.body`` with the trigger's
    secret, sent as ``X-PQL-Signature: v1=<hex>`` beside ``X-PQL-Timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


class DeliveryError(Exception):
    """This attempt failed; the delivery is retried later."""


def _post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    allow_loopback: bool,
    slack: bool = False,
    deadline: float = HTTP_DEADLINE,
) -> str:
    """The target is checked again (its host may resolve elsewhere by now). Only the host
    and the status code are recorded: the URL's path is a credential for Slack, and an
    answer's body is the target's text, not ours to store."""
    host = urlsplit(url).hostname or "the target"
    try:
        status = outbound.post(url, body, headers, deadline, allow_loopback, slack)
    except outbound.UnsafeTarget as exc:
        raise DeliveryError(str(exc)) from exc
    except outbound.DeadlinePassed as exc:
        raise DeliveryError(f"{host}: {exc}") from exc
    except requests.RequestException as exc:
        raise DeliveryError(f"no answer from {host}: {exc.__class__.__name__}") from exc
    if not 200 <= status < 300:
        raise DeliveryError(f"{host} answered HTTP {status}")
    return f"HTTP {status}"


def send_slack(
    rule: Trigger,
    payload: dict[str, Any],
    allow_loopback: bool = False,
    deadline: float = HTTP_DEADLINE,
) -> str:
    body = json.dumps({"text": message(payload)}).encode()
    return _post(
        rule.action_params["url"],
        body,
        {"Content-Type": "application/json"},
        allow_loopback,
        slack=True,
        deadline=deadline,
    )


def webhook_secret(rule: Trigger, cipher=None) -> str:
    """The trigger's signing secret: stored encrypted (``secret_encrypted``); a plain
    ``secret`` is what rules saved before that kept."""
    params = rule.action_params
    if params.get("secret_encrypted"):
        if cipher is None:
            raise DeliveryError("the signing secret is encrypted and no key was given")
        return cipher.decrypt(params["secret_encrypted"])
    return str(params.get("secret") or "")


def send_webhook(
    rule: Trigger,
    payload: dict[str, Any],
    allow_loopback: bool = False,
    deadline: float = HTTP_DEADLINE,
    cipher=None,
) -> str:
    body = json.dumps(payload, sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-PQL-Timestamp": timestamp,
        "X-PQL-Signature": sign(webhook_secret(rule, cipher), timestamp, body),
        "User-Agent": "pql-engine-triggers",
    }
    return _post(rule.action_params["url"], body, headers, allow_loopback, deadline=deadline)


def _crm_target(db: Database, tenant_id: int, delivery: Delivery) -> tuple[str, str | None, dict]:
    """The account's CRM id (the user's account for users), the user's CRM id, and the
    account's pulled CRM fields (its owner)."""
    with db.tenant_session(tenant_id) as session:
        account_id = delivery.subject_id
        user_crm = None
        if delivery.subject == "user":
            user_crm = session.scalar(
                select(CrmRecord.crm_id).where(
                    CrmRecord.object_type == "user", CrmRecord.subject_id == delivery.subject_id
                )
            )
            account_id = session.scalar(
                select(User.current_account_id).where(User.id == delivery.subject_id)
            ) or session.scalar(
                select(AccountMembership.account_id)
                .where(AccountMembership.user_id == delivery.subject_id)
                .limit(1)
            )
        record = session.scalar(
            select(CrmRecord).where(
                CrmRecord.object_type == "account", CrmRecord.subject_id == account_id
            )
        )
        if record is None or not record.crm_id:
            raise DeliveryError("the account is not in the CRM yet (the next sync puts it there)")
        return record.crm_id, user_crm, dict(record.crm_fields or {})


def deliver_pending(
    db: Database,
    tenant_id: int,
    now: dt.datetime,
    connector_factory: Callable[[], Any] | None = None,
    senders: dict[str, Callable[[Trigger, dict], str]] | None = None,
    allow_loopback: bool = False,
    budget: float = TENANT_BUDGET,
    deadline: float = HTTP_DEADLINE,
    cipher=None,
) -> dict[str, int]:
    """Send this tenant's due deliveries (oldest first, a batch per call) within ``budget``
    seconds: once it is spent, the rest waits for the next round ("deferred"). Each target has
    ``deadline`` seconds to answer. Each attempt is recorded on its row, ``delivered_at`` being
    when it was sent; failures are retried after 1, 2, 4, 8, 16 minutes, then given up."""
    senders = senders or {
        "slack": functools.partial(send_slack, allow_loopback=allow_loopback, deadline=deadline),
        "webhook": functools.partial(
            send_webhook, allow_loopback=allow_loopback, deadline=deadline, cipher=cipher
        ),
    }
    counts = {"delivered": 0, "retrying": 0, "failed": 0, "deferred": 0}
    started = time.monotonic()

    def at() -> dt.datetime:  # the round's time, moved on by what this round has spent
        return now + dt.timedelta(seconds=time.monotonic() - started)

    with db.tenant_session(tenant_id) as session:
        due = session.execute(
            select(Delivery, Trigger)
            .join(Trigger, Trigger.id == Delivery.trigger_id)
            .where(
                Delivery.status == "pending",
                Delivery.next_attempt_at <= now,
                Trigger.enabled.is_(True),  # a disabled trigger's queue is not sent
            )
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(BATCH)
        ).all()
        settings = dict(session.get(Tenant, tenant_id).settings or {}) if due else {}
        session.expunge_all()
    connector = None
    for done, (delivery, rule) in enumerate(due):
        if time.monotonic() - started >= budget:
            counts["deferred"] = len(due) - done
            log.info(
                "tenant %s: delivery budget of %ss spent, %s deliveries wait for the next round",
                tenant_id,
                budget,
                counts["deferred"],
            )
            break
        try:
            if rule.action in senders:
                result = senders[rule.action](rule, delivery.payload)
            else:
                if connector is None:
                    if connector_factory is None:
                        raise DeliveryError("the tenant is not connected to a CRM")
                    connector = connector_factory()
                account_crm, user_crm, fields = _crm_target(db, tenant_id, delivery)
                owner = fields.get("owner_id") or settings.get("default_cs_owner_id")
                text = message(delivery.payload)
                if rule.action == "crm_task":
                    result = connector.create_task(
                        TaskSpec(
                            f"{delivery.payload['name']}: {delivery.payload['reason']}"[:250],
                            text,
                            account_crm,
                            owner,
                            now + dt.timedelta(days=1),
                            priority="MEDIUM",
                            user_crm_id=user_crm,
                        )
                    )
                else:
                    result = connector.create_note(account_crm, rule.name, text, owner)
        except (DeliveryError, CrmError) as exc:
            _attempted(db, tenant_id, delivery.id, now, at(), error=str(exc))
            counts["failed" if delivery.attempts + 1 >= MAX_ATTEMPTS else "retrying"] += 1
            log.warning(
                "tenant %s: delivery %s (%s) failed: %s", tenant_id, delivery.id, rule.action, exc
            )
            continue
        _attempted(db, tenant_id, delivery.id, now, at(), result=str(result)[:255])
        counts["delivered"] += 1
    return counts


def _attempted(
    db: Database,
    tenant_id: int,
    delivery_id: int,
    now: dt.datetime,
    sent_at: dt.datetime,
    result: str | None = None,
    error: str | None = None,
) -> None:
    with db.tenant_transaction(tenant_id) as session:
        row = session.get(Delivery, delivery_id)
        row.attempts += 1
        if error is None:
            row.status, row.result, row.delivered_at, row.last_error = (
                "delivered",
                result,
                sent_at,
                None,
            )
        else:
            row.last_error = error[:2000]
            if row.attempts >= MAX_ATTEMPTS:
                row.status = "failed"
            else:
                row.next_attempt_at = now + FIRST_RETRY * 2 ** (row.attempts - 1)
