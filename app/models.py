"""Database models: one place for every table.

Every row of a tenant's data carries ``tenant_id`` (the ``TenantOwned`` mixin), and tenant
sessions (``app.db``) filter on it automatically.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

# Named constraints make migrations reproducible and let Alembic's batch mode alter SQLite tables.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONDoc = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; pass an aware UTC datetime")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSONDoc}


class TenantOwned:
    """Mixin for every table that holds one tenant's data."""

    @declared_attr
    def tenant_id(cls) -> Mapped[int]:
        # Not indexed here: each table leads a unique key or an index with tenant_id instead.
        return mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)


class Tenant(Base):
    """One installation: a HubSpot portal or a Salesforce org (or a development tenant)."""

    __tablename__ = "tenants"
    __table_args__ = (UniqueConstraint("crm", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # "hubspot", "salesforce", or "none" for a tenant not connected to a CRM yet.
    crm: Mapped[str] = mapped_column(String(20))
    # HubSpot portal (hub) id or Salesforce org id; null until connected.
    external_id: Mapped[str | None] = mapped_column(String(64))
    # "active", "needs_reauth" or "uninstalled".
    status: Mapped[str] = mapped_column(String(20), default="active")
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    refresh_token_encrypted: Mapped[str | None] = mapped_column(Text)
    access_token_expires_at: Mapped[dt.datetime | None]
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    uninstalled_at: Mapped[dt.datetime | None]

    def __repr__(self) -> str:
        return f"<Tenant {self.id} {self.crm}:{self.external_id} {self.status}>"


class WriteKey(TenantOwned, Base):
    """An API key: an ingestion write key or an admin key. Only a SHA-256 digest of the key is
    stored (see ``app.security``)."""

    __tablename__ = "write_keys"
    __table_args__ = (Index("ix_write_keys_tenant_id", "tenant_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the key, enough for an admin to tell keys apart.
    display_prefix: Mapped[str] = mapped_column(String(16))
    # Fernet-encrypted with the token keys, for keys issued where a cipher was at hand (the
    # install, the admin UI): the UI can show them again. Null: shown once only.
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(100), default="")
    # "write": ingestion only (it ships inside customers' apps); "admin": the JSON API.
    scope: Mapped[str] = mapped_column(String(10), default="write", server_default="write")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Account(TenantOwned, Base):
    """A customer company (Segment ``group``)."""

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("tenant_id", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Segment groupId.
    external_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    domain: Mapped[str | None] = mapped_column(String(255), index=True)
    traits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # When each trait was last set, so that an older message never overwrites a newer value.
    trait_times: Mapped[dict[str, Any]] = mapped_column(default=dict)
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Time of the newest message about this account (event time, skew-corrected).
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The last track, page or screen: identify and group calls are not activity.
    last_active_at: Mapped[dt.datetime | None]
    # When ingestion last changed the account's traits (new events are found through
    # events.received_at instead, which costs no row update).
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class User(TenantOwned, Base):
    """A person using the product (Segment ``userId`` and/or ``anonymousId``)."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_id"),
        UniqueConstraint("tenant_id", "anonymous_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Segment userId; null while the person is only known by an anonymousId.
    external_id: Mapped[str | None] = mapped_column(String(255))
    anonymous_id: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    traits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    trait_times: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Set by ``alias``: this anonymous user now lives on as another user.
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # The account of the user's latest ``group`` call: where a track without a groupId goes
    # when the user belongs to several accounts.
    current_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Kept to within an hour (see app.tracking.ingest.LAST_SEEN_RESOLUTION).
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The last track, page or screen: identify and group calls are not activity.
    last_active_at: Mapped[dt.datetime | None]
    # When ingestion last changed the user's traits.
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class AccountMembership(TenantOwned, Base):
    """A user belongs to an account (Segment ``group`` call). A user may be in several."""

    __tablename__ = "account_memberships"
    __table_args__ = (Index("ix_account_memberships_tenant_id", "tenant_id"),)

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Event(TenantOwned, Base):
    """A raw message as received (track, identify, group, page, screen, alias)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "message_id"),
        # An account's recent events (account detail), and ON DELETE SET NULL of accounts.
        Index("ix_events_account_id_timestamp", "account_id", "timestamp"),
        # Incremental scoring finds who had new events since its last pass through this.
        Index("ix_events_tenant_id_received_at", "tenant_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(16))
    # The track event's name (or page/screen name); null for identify/group/alias.
    name: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    # Skew-corrected time the event happened (Segment's timestamp rule).
    timestamp: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Plain JSON, not JSONB: never queried by content, and JSON text is cheaper to insert.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class UserEventDay(TenantOwned, Base):
    """How often a user did a track event on a (UTC) day: what user scoring reads."""

    __tablename__ = "user_event_days"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    event: Mapped[str] = mapped_column(String(255), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class AccountEventDay(TenantOwned, Base):
    """How often each user did a track event for an account on a (UTC) day.

    Keeping the user here lets account scoring count distinct users per event without raw events.
    """

    __tablename__ = "account_event_days"
    __table_args__ = (
        Index("ix_account_event_days_user_id", "user_id"),
        # An incremental pass reads the current day's rows of the accounts it rescores: by
        # day, not through each account's whole history (hundreds of rows). Users have few
        # enough rows that the primary key serves, and ingestion pays for every index.
        Index("ix_account_event_days_day", "day"),
    )

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    event: Mapped[str] = mapped_column(String(255), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    count: Mapped[int] = mapped_column(Integer, default=0)


class RejectedMessage(TenantOwned, Base):
    """A message of an accepted request that failed validation, kept with the reason so the admin
    can see what their SDK sends wrong (Segment shows these in its debugger)."""

    __tablename__ = "rejected_messages"
    __table_args__ = (
        Index("ix_rejected_messages_tenant_id_received_at", "tenant_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    message_id: Mapped[str | None] = mapped_column(String(100))
    errors: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The message as received, cut to the per-message size limit.
    payload_excerpt: Mapped[str] = mapped_column(Text, default="")


class DefinitionsVersion(TenantOwned, Base):
    """One saved version of a tenant's definitions document (never updated, only added)."""

    __tablename__ = "definitions_versions"
    __table_args__ = (UniqueConstraint("tenant_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(120))
    note: Mapped[str] = mapped_column(String(500), default="")


class _ScoreColumns:
    """What scoring computes for an account or a user (see scoring.engine)."""

    definitions_version: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[dt.datetime]
    # Written since the CRM push last looked at it: the push reads only these rows.
    crm_pending: Mapped[bool] = mapped_column(default=True, server_default=true())
    profile: Mapped[str] = mapped_column(String(80))
    activation_rate: Mapped[float]
    activated: Mapped[bool]
    activated_at: Mapped[dt.datetime | None]
    next_step: Mapped[str | None] = mapped_column(String(120))
    steps_done: Mapped[dict[str, Any]] = mapped_column(default=dict)
    engagement_raw: Mapped[float]
    engagement_score: Mapped[float]
    engagement_segment: Mapped[str] = mapped_column(String(40))
    trend_change: Mapped[float | None]
    trend_segment: Mapped[str | None] = mapped_column(String(20))
    adoption_rate: Mapped[float]
    adoption_rate_ever: Mapped[float]
    active_days: Mapped[int] = mapped_column(Integer)
    last_active_at: Mapped[dt.datetime | None]
    segments: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AccountScore(_ScoreColumns, TenantOwned, Base):
    __tablename__ = "account_scores"
    __table_args__ = (
        Index("ix_account_scores_tenant_id_engagement", "tenant_id", "engagement_score"),
    )

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    active_users: Mapped[int] = mapped_column(Integer)
    total_users: Mapped[int] = mapped_column(Integer)
    activated_users: Mapped[int] = mapped_column(Integer)
    average_user_activation: Mapped[float]
    pql: Mapped[bool]
    pql_at: Mapped[dt.datetime | None]
    pql_kind: Mapped[str | None] = mapped_column(String(30))
    pql_reason: Mapped[str] = mapped_column(Text, default="")
    deal_size: Mapped[str | None] = mapped_column(String(10))
    # Trial and free accounts only; None for a paying account.
    lead_type: Mapped[str | None] = mapped_column(String(40))
    chance_to_convert: Mapped[int | None] = mapped_column(Integer)
    forecast_value: Mapped[float | None]
    # Ice Cold only because the scoring rules changed (the pass that applied them found a drop
    # the old rules did not show): not an engagement drop, so no CS task while it lasts.
    drop_excused: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Fit (scoring.fit): None while the tenant has no fit rules.
    fit_score: Mapped[float | None]
    fit_band: Mapped[str | None] = mapped_column(String(20))
    fit_reason: Mapped[str | None] = mapped_column(Text)


class UserScore(_ScoreColumns, TenantOwned, Base):
    __tablename__ = "user_scores"
    __table_args__ = (Index("ix_user_scores_tenant_id", "tenant_id"),)

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


class ScoreHistory(TenantOwned, Base):
    """One day's engagement score and Activation rate per account ('a') or user ('u'), rounded
    to whole numbers: a few bytes a row, enough for trends and charts."""

    __tablename__ = "score_history"
    __table_args__ = (Index("ix_score_history_tenant_id_day", "tenant_id", "day"),)

    subject: Mapped[str] = mapped_column(String(1), primary_key=True)
    subject_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    engagement_score: Mapped[int] = mapped_column(SmallInteger)
    activation_rate: Mapped[int] = mapped_column(SmallInteger)


class ActivityBasis(TenantOwned, Base):
    """A subject's activity on every day before ``ScoringRun.basis_day``, aggregated per event.

    Built by the daily full pass (and rebuilt for a subject when late events or a merge change
    its past), so an incremental pass reads a few rows per subject plus that day's rollups
    instead of the subject's whole history. The row with event ``""`` marks the subject as
    present and holds its active days within the frequency window.
    """

    __tablename__ = "activity_bases"

    # The tenant leads the key: a full pass replaces one tenant's rows, one index to maintain.
    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    subject: Mapped[str] = mapped_column(String(1), primary_key=True)  # "u" or "a"
    subject_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event: Mapped[str] = mapped_column(String(255), primary_key=True)
    total: Mapped[int] = mapped_column(BigInteger)
    first_day: Mapped[dt.date | None] = mapped_column(Date)
    last_day: Mapped[dt.date | None] = mapped_column(Date)
    # The count within each time frame (scoring.definitions.TIME_FRAMES) on its days before
    # basis_day: plain columns, read for a million rows in a full pass (JSON costs seconds).
    in_1: Mapped[int] = mapped_column(BigInteger, default=0)
    in_7: Mapped[int] = mapped_column(BigInteger, default=0)
    in_30: Mapped[int] = mapped_column(BigInteger, default=0)
    # Accounts, team events only: the ids of the users who did it.
    users: Mapped[list | None] = mapped_column(JSON)
    active_days: Mapped[int | None] = mapped_column(Integer)


class ScoringRun(TenantOwned, Base):
    """A recompute pass: full (every subject) or incremental (those touched since the last)."""

    __tablename__ = "scoring_runs"
    __table_args__ = (Index("ix_scoring_runs_tenant_id_started_at", "tenant_id", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    full: Mapped[bool]
    started_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]
    definitions_version: Mapped[int] = mapped_column(Integer)
    accounts: Mapped[int] = mapped_column(Integer, default=0)
    users: Mapped[int] = mapped_column(Integer, default=0)
    # The 90th percentiles used for grading, per "account:<profile>" / "user:<profile>".
    percentiles: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Full passes: the day their ActivityBasis rows end before (the pass's UTC day).
    basis_day: Mapped[dt.date | None] = mapped_column(Date)


class JobLease(Base):
    """Who runs a tenant's job now. A worker may run ``job`` for ``tenant_id`` only while it
    holds an unexpired lease, so two worker processes never run it at once; a crashed holder's
    lease simply expires."""

    __tablename__ = "job_leases"

    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    job: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(120), default="")
    leased_until: Mapped[dt.datetime]


class CrmRecord(TenantOwned, Base):
    """An account or user as the CRM knows it: the CRM record id, the property values the CRM
    last accepted from us (so a push sends only what changed), the last error writing it, and
    what we pulled from it (owner, lifecycle stage, sales activity)."""

    __tablename__ = "crm_records"
    __table_args__ = (
        UniqueConstraint("tenant_id", "object_type", "subject_id"),
        Index("ix_crm_records_tenant_id_object_type_crm_id", "tenant_id", "object_type", "crm_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    object_type: Mapped[str] = mapped_column(String(20))  # "account" / "user"
    subject_id: Mapped[int] = mapped_column(BigInteger)  # Account.id / User.id
    crm_id: Mapped[str | None] = mapped_column(String(64))
    pushed: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pushed_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    failed_at: Mapped[dt.datetime | None]
    failures: Mapped[int] = mapped_column(Integer, default=0)
    crm_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pulled_at: Mapped[dt.datetime | None]


class CrmOwner(TenantOwned, Base):
    """A CRM user who can own records (HubSpot owners), for routing tasks and for segments."""

    __tablename__ = "crm_owners"

    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    owner_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(255))
    archived: Mapped[bool] = mapped_column(default=False)


class CrmWebhookEvent(TenantOwned, Base):
    """A CRM webhook notification already applied: deliveries are retried, so dedupe by id."""

    __tablename__ = "crm_webhook_events"

    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CsTask(TenantOwned, Base):
    """A task created in the CRM for Customer Success when an account's engagement dropped.
    One per drop: the drop is identified by the day it was first seen."""

    __tablename__ = "cs_tasks"
    __table_args__ = (UniqueConstraint("tenant_id", "account_id", "drop_seen_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    drop_seen_on: Mapped[dt.date] = mapped_column(Date)
    crm_task_id: Mapped[str | None] = mapped_column(String(64))
    owner_id: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
    # When the account was first seen no longer dropping: the next drop is a new one.
    resolved_at: Mapped[dt.datetime | None]


class Trigger(TenantOwned, Base):
    """An admin's rule: when ``event`` happens to an account or user (with ``params``: a
    threshold, a segment, a minimum change), run ``action`` (``action_params``: a Slack URL,
    a webhook URL and secret), at most once per record per ``cap_hours``."""

    __tablename__ = "triggers"
    __table_args__ = (Index("ix_triggers_tenant_id_enabled", "tenant_id", "enabled"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    subject: Mapped[str] = mapped_column(String(10))  # "account" / "user"
    event: Mapped[str] = mapped_column(String(30))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    action: Mapped[str] = mapped_column(String(20))
    action_params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cap_hours: Mapped[int] = mapped_column(Integer, default=24)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ScoringJob(TenantOwned, Base):
    """A scoring pass or a definitions preview an admin asked for: run by the worker under the
    tenant's scoring lease (never beside another pass of the tenant), not in a web request.
    ``status``: queued, running, done, failed; ``result`` what the pass or preview found."""

    __tablename__ = "scoring_jobs"
    __table_args__ = (Index("ix_scoring_jobs_tenant_id_status", "tenant_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # "run" / "preview"
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(10), default="queued")
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str | None] = mapped_column(String(255))
    requested_at: Mapped[dt.datetime]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class Delivery(TenantOwned, Base):
    """One firing of a trigger for one record, and its delivery: written in the scoring pass
    that saw the change (an outbox row), sent by the worker, retried with backoff, logged."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index(
            "ix_deliveries_tenant_id_trigger_id_subject_id_created_at",
            "tenant_id",
            "trigger_id",
            "subject_id",
            "created_at",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    trigger_id: Mapped[int] = mapped_column(ForeignKey("triggers.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(10))
    subject_id: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # "pending" (waiting for its next attempt), "delivered", "failed" (gave up).
    status: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(String(255))  # e.g. the CRM task's id
    created_at: Mapped[dt.datetime]
    delivered_at: Mapped[dt.datetime | None]


class Handoff(TenantOwned, Base):
    """The CS handoff per account: the stage it was last seen in and when the handoff note
    was written to the CRM (once, when a trial or free account became paying)."""

    __tablename__ = "handoffs"

    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    stage: Mapped[str] = mapped_column(String(10))  # "trial" / "paid" / "other"
    note_id: Mapped[str | None] = mapped_column(String(64))
    written_at: Mapped[dt.datetime | None]


class SyncCursor(TenantOwned, Base):
    """Where an incremental pull got to (e.g. the last modified time seen per object type)."""

    __tablename__ = "sync_cursors"

    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class IngestWindow(Base):
    """How many messages one write key sent in one 10-second window (``window_start``: epoch
    seconds, a multiple of 10): the per-key ingestion limit, shared by every web process."""

    __tablename__ = "ingest_windows"

    key_id: Mapped[int] = mapped_column(
        ForeignKey("write_keys.id", ondelete="CASCADE"), primary_key=True
    )
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    messages: Mapped[int] = mapped_column(Integer, default=0)


class TenantIngestWindow(Base):
    """How many messages one tenant's keys together sent in one 10-second window: the
    per-tenant cap, well below what the service can take, so one tenant cannot use it all."""

    __tablename__ = "tenant_ingest_windows"

    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    messages: Mapped[int] = mapped_column(Integer, default=0)


class RateWindow(Base):
    """The request times granted within the last window for one rate-limited key (a HubSpot
    portal), shared by every process: a grant happens under this row's lock."""

    __tablename__ = "rate_windows"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    # Epoch seconds of the requests granted within the window, oldest first.
    grants: Mapped[list] = mapped_column(JSON, default=list)
    # After a 429: nobody sends before this (epoch seconds).
    paused_until: Mapped[float] = mapped_column(Float, default=0.0)
