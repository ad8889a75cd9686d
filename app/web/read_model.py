"""What the admin pages and the JSON API show of scored accounts and users, built once: the
account with its scores and what came back from the CRM (owner with its name, lifecycle stage),
and segment membership with one meaning everywhere.

A subject is in a segment when the segment is one of its custom segments, its engagement
segment ("Most engaged" ...) or its trend segment ("Red Hot", "Ice Cold"). Distributions
within a segment read ``trait.X``, ``crm.X`` or any score field of these records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.models import (
    Account,
    AccountEventDay,
    AccountScore,
    CrmOwner,
    CrmRecord,
    User,
    UserEventDay,
    UserScore,
)
from connectors import registry
from scoring.definitions import Definitions
from scoring.engine import trait_distribution

ENGAGEMENT_SEGMENTS = ("Most engaged", "Engaged", "Passive", "Least engaged")
TREND_SEGMENTS = ("Red Hot", "Ice Cold")


def segment_names(defs: Definitions) -> list[str]:
    """Every segment a subject can be in: the tenant's own, then the built-in ones."""
    return [*[s.name for s in defs.segments], *ENGAGEMENT_SEGMENTS, *TREND_SEGMENTS]


def segments_of(score: AccountScore | UserScore) -> list[str]:
    custom = (score.segments or {}).get("names", [])
    return [*custom, *[s for s in (score.engagement_segment, score.trend_segment) if s]]


@dataclass(frozen=True)
class Scored:
    """One scored account or user as people read it."""

    subject_id: int
    external_id: str
    name: str
    traits: dict[str, Any]
    score: AccountScore | UserScore
    crm: dict[str, Any] = field(default_factory=dict)  # pulled fields (owner_id, lifecycle_stage…)
    crm_id: str | None = None
    owner_name: str | None = None
    email: str | None = None

    @property
    def owner_id(self) -> str | None:
        return self.crm.get("owner_id")

    @property
    def lifecycle_stage(self) -> str | None:
        return self.crm.get("lifecycle_stage")

    @property
    def segments(self) -> list[str]:
        return segments_of(self.score)

    def in_segment(self, name: str) -> bool:
        return name in self.segments

    def record(self) -> dict[str, Any]:
        """The fields conditions and distributions read (``trait.plan``, ``crm.owner_id``,
        ``engagement_score`` ...)."""
        s = self.score
        return {
            "id": self.external_id,
            "name": self.name,
            "trait": self.traits,
            "traits": self.traits,
            "crm": {**self.crm, "owner": self.owner_name},
            "engagement_score": s.engagement_score,
            "activation_rate": s.activation_rate,
            "engagement_segment": s.engagement_segment,
            "trend_segment": s.trend_segment,
            "lead_type": getattr(s, "lead_type", None),
            "pql": getattr(s, "pql", None),
            "segments": self.segments,
        }


def owner_names(session: Session) -> dict[str, str]:
    """CRM owner ids to the names people know them by."""
    return {o.owner_id: o.name or o.email or o.owner_id for o in session.scalars(select(CrmOwner))}


def accounts_query() -> Select:
    """Scored accounts with their CRM record (if synced); add filters and an order."""
    return (
        select(Account, AccountScore, CrmRecord)
        .join(AccountScore, AccountScore.account_id == Account.id)
        .outerjoin(
            CrmRecord, (CrmRecord.subject_id == Account.id) & (CrmRecord.object_type == "account")
        )
    )


def users_query() -> Select:
    return (
        select(User, UserScore, CrmRecord)
        .join(UserScore, UserScore.user_id == User.id)
        .outerjoin(CrmRecord, (CrmRecord.subject_id == User.id) & (CrmRecord.object_type == "user"))
    )


def scored(rows: Iterable, owners: dict[str, str]) -> list[Scored]:
    """Rows of ``accounts_query``/``users_query`` as ``Scored`` values."""
    out = []
    for subject, score, record in rows:
        crm = dict((record.crm_fields if record else None) or {})
        crm.pop("field_times", None)
        out.append(
            Scored(
                subject_id=subject.id,
                external_id=subject.external_id,
                name=(getattr(subject, "name", None) or subject.external_id),
                traits=dict(subject.traits or {}),
                score=score,
                crm=crm,
                crm_id=record.crm_id if record else None,
                owner_name=owners.get(crm.get("owner_id")) if crm.get("owner_id") else None,
                email=getattr(subject, "email", None),
            )
        )
    return out


@dataclass
class SegmentView:
    """One segment: how many are in it, one page of its members (by id), how a field is
    spread among all of them, and their engagement segments."""

    count: int = 0
    page: list[Scored] = field(default_factory=list)
    distribution: list[dict] = field(default_factory=list)
    engagement: Counter = field(default_factory=Counter)


SEGMENT_CHUNK = 1000


def segment_view(
    session: Session,
    name: str,
    subject: str = "account",
    field_name: str | None = None,
    limit: int = 500,
    offset: int = 0,
) -> SegmentView:
    """Read the subjects a thousand at a time (membership lives in JSON and in two columns,
    so it is decided here): memory holds one chunk and one page, whatever the segment's size."""
    model = Account if subject == "account" else User
    query = (accounts_query() if subject == "account" else users_query()).order_by(model.id)
    owners = owner_names(session)
    view = SegmentView()

    def members():
        result = session.execute(query.execution_options(yield_per=SEGMENT_CHUNK))
        for partition in result.partitions():
            for row in scored(partition, owners):
                if not row.in_segment(name):
                    continue
                if offset <= view.count < offset + limit:
                    view.page.append(row)
                view.count += 1
                view.engagement[row.score.engagement_segment] += 1
                yield row.record()

    records = members()
    if field_name:
        try:
            view.distribution = trait_distribution(records, field_name)
        except (KeyError, ValueError, TypeError):
            view.distribution = []
    for _ in records:  # what the distribution did not read (none, or after a bad field)
        pass
    return view


def usage_card(
    session: Session, subject: str, crm_id: str, defs: Definitions, admin_url: str
) -> dict[str, Any]:
    """What the CRM record's app card shows of the account or user synced to ``crm_id``:
    Activation with the next step, engagement with its segment and trend, PQL with its kind and
    reason, lead type and chance to convert, the key features used and not. ``status`` is
    "not_synced" when no scored subject is linked to that record yet."""
    query = accounts_query() if subject == "account" else users_query()
    found = scored(session.execute(query.where(CrmRecord.crm_id == crm_id)), owner_names(session))
    if not found:
        return {"status": "not_synced", "subject": subject, "adminUrl": admin_url}
    row = found[0]
    score = row.score
    rollup = AccountEventDay if subject == "account" else UserEventDay
    key = rollup.account_id if subject == "account" else rollup.user_id
    used = set(
        session.scalars(
            select(rollup.event).where(key == row.subject_id, rollup.event.in_(defs.key_features))
        )
    )
    card: dict[str, Any] = {
        "status": "synced",
        "subject": subject,
        "name": row.name,
        "activation": {"rate": round(score.activation_rate), "nextStep": score.next_step},
        "engagement": {
            "score": round(score.engagement_score),
            "segment": score.engagement_segment,
            "trend": score.trend_segment,
            "change": None if score.trend_change is None else round(score.trend_change),
        },
        "features": {
            "used": [f for f in defs.key_features if f in used],
            "notUsed": [f for f in defs.key_features if f not in used],
        },
        "adminUrl": admin_url,
    }
    if subject == "account":
        card["pql"] = {
            "isPql": score.pql,
            "kind": score.pql_kind,
            "reason": score.pql_reason,
            "at": score.pql_at.isoformat() if score.pql_at else None,
        }
        card["leadType"] = score.lead_type or None
        card["chanceToConvert"] = score.chance_to_convert if score.lead_type else None
    return card


def crm_account_url(tenant, crm_id: str | None) -> str | None:
    """The link to an account's record in the tenant's CRM (None when it has none)."""
    if not crm_id:
        return None
    try:
        provider = registry.get(tenant.crm)
    except registry.UnknownProvider:
        return None
    return provider.account_url(tenant, crm_id)
