"""Triggers firing in a scoring pass: each rescored record is compared with its stored scores
(before they are replaced, in the pass's own transaction) and one ``Delivery`` is queued per
enabled rule that fires, unless the rule fired for the same record within its frequency cap.
The outbox: the worker's ``deliver`` job (``app.jobs.deliveries``) sends them."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Account, AccountScore, Delivery, Trigger, User, UserScore
from scoring.triggers import Snapshot, fires

log = logging.getLogger(__name__)


def fire(session: Session, tenant_id: int, subject: str, rows: list[dict], now: dt.datetime) -> int:
    """Compare the new score rows with the stored ones (before they are replaced) and queue a
    delivery for every enabled rule that fires. Returns how many were queued."""
    rules = session.scalars(
        select(Trigger).where(Trigger.subject == subject, Trigger.enabled.is_(True))
    ).all()
    if not rules or not rows:
        return 0
    model, key = (
        (AccountScore, AccountScore.account_id)
        if subject == "account"
        else (UserScore, UserScore.user_id)
    )
    ids = [r["_id"] for r in rows]
    before: dict[int, Snapshot] = {}
    columns = [key, model.engagement_score, model.activation_rate, model.segments]
    if subject == "account":
        columns.append(AccountScore.pql)
    for start in range(0, len(ids), 5000):
        for found in session.execute(select(*columns).where(key.in_(ids[start : start + 5000]))):
            before[found[0]] = Snapshot(
                float(found[1]),
                float(found[2]),
                frozenset((found[3] or {}).get("names", [])),
                bool(found[4]) if subject == "account" else False,
            )
    queued: list[tuple[Trigger, int, str, Snapshot]] = []
    for row in rows:
        after = Snapshot.of(row)
        for rule in rules:
            reason = fires(rule.event, rule.params, before.get(row["_id"]), after)
            if reason:
                queued.append((rule, row["_id"], reason, after))
    if not queued:
        return 0
    recent = _recent_firings(session, rules, {sid for _, sid, _, _ in queued}, now)
    names = _names(session, subject, {sid for _, sid, _, _ in queued})
    added = 0
    for rule, sid, reason, after in queued:
        if rule.cap_hours and (rule.id, sid) in recent:
            last = recent[(rule.id, sid)]
            if now - last < dt.timedelta(hours=rule.cap_hours):
                continue
        external_id, name = names.get(sid, (str(sid), None))
        session.add(
            Delivery(
                tenant_id=tenant_id,
                trigger_id=rule.id,
                subject=subject,
                subject_id=sid,
                payload={
                    "trigger": rule.name,
                    "event": rule.event,
                    "reason": reason,
                    "subject": subject,
                    "id": external_id,
                    "name": name or external_id,
                    "engagement_score": round(after.engagement_score, 1),
                    "activation_rate": round(after.activation_rate, 1),
                    "segments": sorted(after.segments),
                    "pql": after.pql,
                    "at": now.isoformat(),
                },
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
        recent[(rule.id, sid)] = now
        added += 1
    log.info("tenant %s: %s trigger deliveries queued", tenant_id, added)
    return added


def _recent_firings(session, rules, subject_ids, now) -> dict[tuple[int, int], dt.datetime]:
    longest = max(r.cap_hours for r in rules)
    if not longest:
        return {}
    out = {}
    ids = sorted(subject_ids)
    for start in range(0, len(ids), 5000):
        for trigger_id, sid, last in session.execute(
            select(Delivery.trigger_id, Delivery.subject_id, func.max(Delivery.created_at))
            .where(
                Delivery.trigger_id.in_([r.id for r in rules]),
                Delivery.subject_id.in_(ids[start : start + 5000]),
                Delivery.created_at >= now - dt.timedelta(hours=longest),
            )
            .group_by(Delivery.trigger_id, Delivery.subject_id)
        ):
            out[(trigger_id, sid)] = last
    return out


def _names(session, subject: str, ids: set[int]) -> dict[int, tuple[str, str | None]]:
    model = Account if subject == "account" else User
    label = Account.name if subject == "account" else func.coalesce(User.name, User.email)
    return {
        sid: (ext, name)
        for sid, ext, name in session.execute(
            select(model.id, model.external_id, label).where(model.id.in_(sorted(ids)))
        )
    }
