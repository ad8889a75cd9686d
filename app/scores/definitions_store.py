"""Tenant definitions: the validated document, its versions, import and export.

The document's keys are the field names of ``scoring.definitions``; ``to_document`` and
``parse_document`` are inverses. Every save adds a version (who, when, a note); nothing is ever
overwritten, so any version can be restored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import yaml
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.db import Database
from app.models import DefinitionsVersion
from scoring.defaults import default_definitions
from scoring.definitions import (
    COMPLEXITIES,
    DEAL_SIZES,
    STEP_KINDS,
    TIME_FRAMES,
    TRAIT_OPS,
    Checklist,
    Condition,
    DealSizeRule,
    Definitions,
    Disqualifier,
    FitBand,
    FitRule,
    FitRules,
    InactivityPenalty,
    LeadTypeBands,
    PQLRules,
    ScoreBands,
    ScoringProfile,
    Segment,
    Step,
    TrendRule,
)
from scoring.engine import CONDITION_OPS


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class StepSchema(_Strict):
    key = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9_]{1,40}$"))
    label = fields.String(required=True, validate=validate.Length(min=1, max=120))
    kind = fields.String(required=True, validate=validate.OneOf(STEP_KINDS))
    event = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=255))
    min_count = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    within_days = fields.Integer(
        allow_none=True, load_default=None, validate=validate.Range(1, 3650)
    )
    trait = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=255))
    op = fields.String(allow_none=True, load_default=None, validate=validate.OneOf(TRAIT_OPS))
    value = fields.Raw(allow_none=True, load_default=None)

    @validates_schema
    def _kind_needs(self, data, **kwargs):
        if data["kind"] in ("event_count", "distinct_users") and not data.get("event"):
            raise ValidationError(f"a {data['kind']} step needs an event", "event")
        if data["kind"] == "trait":
            if not data.get("trait"):
                raise ValidationError("a trait step needs a trait", "trait")
            if not data.get("op"):
                raise ValidationError("a trait step needs an op", "op")
            if data["op"] != "exists" and data.get("value") is None:
                raise ValidationError(f"op {data['op']} needs a value", "value")

    @post_load
    def _make(self, data, **kwargs):
        return Step(**data)


def _checklist_field() -> fields.Field:
    return fields.List(
        fields.Nested(StepSchema),
        required=True,
        validate=validate.Length(min=1, max=10, error="a checklist has 1 to 10 steps"),
    )


class ConditionValue(fields.Field):
    """A condition's value: a scalar, or a flat list of scalars (``in``)."""

    SCALARS = (str, int, float, bool, type(None))

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, list):
            if len(value) > 1000 or not all(isinstance(v, self.SCALARS) for v in value):
                raise ValidationError("must be a list of at most 1000 plain values")
            return value
        if not isinstance(value, self.SCALARS):
            raise ValidationError("must be a plain value or a list of them")
        return value


class ConditionSchema(_Strict):
    field = fields.String(required=True, validate=validate.Length(min=1, max=255))
    op = fields.String(required=True, validate=validate.OneOf(CONDITION_OPS))
    value = ConditionValue(allow_none=True, load_default=None)

    @post_load
    def _make(self, data, **kwargs):
        return Condition(**data)


class PenaltySchema(_Strict):
    points = fields.Integer(required=True, validate=validate.Range(min=-100, max=0))
    days = fields.Integer(required=True, validate=validate.Range(min=1, max=365))
    event = fields.String(allow_none=True, load_default=None)

    @post_load
    def _make(self, data, **kwargs):
        return InactivityPenalty(**data)


class ProfileSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(min=1, max=80))
    weights = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=255)),
        values=fields.Integer(validate=validate.Range(min=0, max=10, error="weights are 0 to 10")),
        required=True,
    )
    time_frame_days = fields.Integer(load_default=7, validate=validate.OneOf(TIME_FRAMES))
    penalties = fields.List(fields.Nested(PenaltySchema), load_default=list)
    decay = fields.Boolean(load_default=False)
    applies_to = fields.List(fields.Nested(ConditionSchema), load_default=list)
    default = fields.Boolean(load_default=False)

    @post_load
    def _make(self, data, **kwargs):
        data["penalties"] = tuple(data["penalties"])
        data["applies_to"] = tuple(data["applies_to"])
        return ScoringProfile(**data)


class SegmentSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(min=1, max=80))
    conditions = fields.List(fields.Nested(ConditionSchema), required=True)
    applies_to = fields.String(load_default="account", validate=validate.OneOf(["account", "user"]))

    @post_load
    def _make(self, data, **kwargs):
        return Segment(
            name=data["name"], conditions=tuple(data["conditions"]), applies_to=data["applies_to"]
        )


class ScoreBandsSchema(_Strict):
    most_engaged = fields.Float(load_default=75, validate=validate.Range(0, 100))
    engaged = fields.Float(load_default=50, validate=validate.Range(0, 100))
    passive = fields.Float(load_default=25, validate=validate.Range(0, 100))

    @validates_schema
    def _ordered(self, data, **kwargs):
        if not data["passive"] < data["engaged"] < data["most_engaged"]:
            raise ValidationError("bands must rise: passive < engaged < most_engaged", "engaged")

    @post_load
    def _make(self, data, **kwargs):
        return ScoreBands(**data)


class TrendSchema(_Strict):
    points = fields.Float(load_default=10, validate=validate.Range(min=0, max=100))
    new_days = fields.Integer(load_default=30, validate=validate.Range(1, 3650))
    recently_inactive_from_days = fields.Integer(load_default=30, validate=validate.Range(1, 3650))
    recently_inactive_to_days = fields.Integer(load_default=60, validate=validate.Range(1, 3650))
    mature_days = fields.Integer(load_default=182, validate=validate.Range(1, 3650))

    @post_load
    def _make(self, data, **kwargs):
        return TrendRule(**data)


class DealSizeSchema(_Strict):
    trait = fields.String(load_default="employees")
    mid_from = fields.Float(load_default=50, validate=validate.Range(min=0))
    large_from = fields.Float(load_default=1000, validate=validate.Range(min=0))
    unknown = fields.String(load_default="small", validate=validate.OneOf(DEAL_SIZES))
    values = fields.Dict(
        keys=fields.String(validate=validate.OneOf(DEAL_SIZES)),
        values=fields.Float(validate=validate.Range(min=0)),
        load_default=lambda: {"small": 5_000, "mid": 25_000, "large": 100_000},
    )

    @validates_schema
    def _ordered(self, data, **kwargs):
        if data["mid_from"] >= data["large_from"]:
            raise ValidationError("mid_from must be below large_from", "mid_from")

    @post_load
    def _make(self, data, **kwargs):
        return DealSizeRule(**data)


_threshold_row = fields.Dict(
    keys=fields.String(validate=validate.OneOf(DEAL_SIZES)),
    values=fields.Float(validate=validate.Range(0, 100, error="thresholds are 0 to 100 %")),
)


class PQLSchema(_Strict):
    complexity = fields.String(load_default="simple", validate=validate.OneOf(COMPLEXITIES))
    thresholds = fields.Dict(
        keys=fields.String(validate=validate.OneOf(COMPLEXITIES)), values=_threshold_row
    )
    stage_trait = fields.String(load_default="plan")
    trial_values = fields.List(fields.String(), load_default=lambda: ["trial", "free"])
    paid_values = fields.List(fields.String(), load_default=lambda: ["paid"])
    hand_raiser_events = fields.List(fields.String(), load_default=list)
    limit_events = fields.List(fields.String(), load_default=list)
    purchase_events = fields.List(fields.String(), load_default=list)
    hand_raiser_traits = fields.List(fields.Nested(ConditionSchema), load_default=list)
    limit_traits = fields.List(fields.Nested(ConditionSchema), load_default=list)
    purchase_traits = fields.List(fields.Nested(ConditionSchema), load_default=list)
    min_fit_band = fields.String(allow_none=True, load_default=None)

    @validates_schema
    def _complete(self, data, **kwargs):
        thresholds = data.get("thresholds")
        if thresholds is None:
            return
        for complexity in COMPLEXITIES:
            missing = [s for s in DEAL_SIZES if s not in thresholds.get(complexity, {})]
            if missing:
                raise ValidationError(
                    f"{complexity} needs a threshold for {', '.join(missing)}", "thresholds"
                )

    @post_load
    def _make(self, data, **kwargs):
        for key in (
            "trial_values",
            "paid_values",
            "hand_raiser_events",
            "limit_events",
            "purchase_events",
            "hand_raiser_traits",
            "limit_traits",
            "purchase_traits",
        ):
            data[key] = tuple(data[key])
        if data.get("thresholds") is None:
            data.pop("thresholds", None)
        return PQLRules(**data)


class LeadTypeSchema(_Strict):
    activation_high = fields.Float(load_default=70, validate=validate.Range(0, 100))
    activation_medium = fields.Float(load_default=40, validate=validate.Range(0, 100))
    engagement_high = fields.Float(load_default=60, validate=validate.Range(0, 100))
    engagement_medium = fields.Float(load_default=30, validate=validate.Range(0, 100))
    fit_trait = fields.String(load_default="fit")
    poor_fit_value = fields.Raw(load_default="poor")

    @validates_schema
    def _ordered(self, data, **kwargs):
        if data["activation_medium"] >= data["activation_high"]:
            raise ValidationError("must be below activation_high", "activation_medium")
        if data["engagement_medium"] >= data["engagement_high"]:
            raise ValidationError("must be below engagement_high", "engagement_medium")

    @post_load
    def _make(self, data, **kwargs):
        return LeadTypeBands(**data)


class FitRuleSchema(_Strict):
    label = fields.String(required=True, validate=validate.Length(min=1, max=120))
    conditions = fields.List(
        fields.Nested(ConditionSchema), required=True, validate=validate.Length(min=1, max=20)
    )
    points = fields.Integer(required=True, validate=validate.Range(-100, 100))
    group = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=80))

    @post_load
    def _make(self, data, **kwargs):
        return FitRule(**{**data, "conditions": tuple(data["conditions"])})


class DisqualifierSchema(_Strict):
    label = fields.String(required=True, validate=validate.Length(min=1, max=120))
    conditions = fields.List(
        fields.Nested(ConditionSchema), required=True, validate=validate.Length(min=1, max=20)
    )

    @post_load
    def _make(self, data, **kwargs):
        return Disqualifier(data["label"], tuple(data["conditions"]))


class FitBandSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(min=1, max=20))
    min_score = fields.Float(required=True, validate=validate.Range(0, 100))

    @post_load
    def _make(self, data, **kwargs):
        return FitBand(**data)


class FitSchema(_Strict):
    rules = fields.List(fields.Nested(FitRuleSchema), load_default=list)
    group_caps = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=80)),
        values=fields.Integer(validate=validate.Range(-100, 100)),
        load_default=dict,
    )
    disqualifiers = fields.List(fields.Nested(DisqualifierSchema), load_default=list)
    bands = fields.List(
        fields.Nested(FitBandSchema),
        load_default=lambda: list(FitRules().bands),
        validate=validate.Length(min=2, max=10, error="2 to 10 fit bands"),
    )

    @validates_schema
    def _bands(self, data, **kwargs):
        bands = data.get("bands") or []
        names = [b.name for b in bands]
        if len(names) != len(set(names)):
            raise ValidationError("band names must be unique", "bands")
        minimums = [b.min_score for b in bands]
        if minimums != sorted(minimums, reverse=True) or len(set(minimums)) != len(minimums):
            raise ValidationError("bands go from the best down, each minimum lower", "bands")
        if bands and bands[-1].min_score != 0:
            raise ValidationError("the last band's minimum must be 0", "bands")
        groups = {r.group for r in data.get("rules", []) if r.group}
        unknown = sorted(set(data.get("group_caps", {})) - groups)
        if unknown:
            raise ValidationError(
                f"caps for groups no rule has: {', '.join(unknown)}", "group_caps"
            )

    @post_load
    def _make(self, data, **kwargs):
        return FitRules(
            rules=tuple(data["rules"]),
            group_caps=dict(data["group_caps"]),
            disqualifiers=tuple(data["disqualifiers"]),
            bands=tuple(data["bands"]),
        )


class DefinitionsSchema(_Strict):
    account_checklist_trial = _checklist_field()
    account_checklist_paid = _checklist_field()
    user_checklist = _checklist_field()
    profiles = fields.List(
        fields.Nested(ProfileSchema),
        required=True,
        validate=validate.Length(min=1, max=20, error="1 to 20 scoring profiles"),
    )
    key_features = fields.List(
        fields.String(validate=validate.Length(min=1, max=255)), load_default=list
    )
    frequency_days = fields.Integer(load_default=30, validate=validate.Range(1, 365))
    segments = fields.List(fields.Nested(SegmentSchema), load_default=list)
    score_bands = fields.Nested(ScoreBandsSchema, load_default=lambda: ScoreBands())
    trend = fields.Nested(TrendSchema, load_default=lambda: TrendRule())
    deal_size = fields.Nested(DealSizeSchema, load_default=lambda: DealSizeRule())
    pql = fields.Nested(PQLSchema, load_default=lambda: PQLRules())
    lead_types = fields.Nested(LeadTypeSchema, load_default=lambda: LeadTypeBands())
    fit = fields.Nested(FitSchema, load_default=lambda: FitRules())

    @validates_schema
    def _consistent(self, data, **kwargs):
        for name in ("account_checklist_trial", "account_checklist_paid", "user_checklist"):
            keys = [s.key for s in data.get(name, [])]
            if len(keys) != len(set(keys)):
                raise ValidationError("step keys must be unique within a checklist", name)
        if any(s.kind == "distinct_users" for s in data.get("user_checklist", [])):
            raise ValidationError(
                "distinct_users steps are for account checklists", "user_checklist"
            )
        profiles = data.get("profiles", [])
        defaults = [p.name for p in profiles if p.default]
        if len(defaults) != 1:
            raise ValidationError(
                f"exactly one profile must be the default ({len(defaults)} are)", "profiles"
            )
        names = [p.name for p in profiles]
        if len(names) != len(set(names)):
            raise ValidationError("profile names must be unique", "profiles")
        segment_names = [s.name for s in data.get("segments", [])]
        if len(segment_names) != len(set(segment_names)):
            raise ValidationError("segment names must be unique", "segments")
        pql, fit = data.get("pql"), data.get("fit")
        if pql and fit and pql.min_fit_band is not None:
            bands = [b.name for b in fit.bands]
            if pql.min_fit_band not in bands:
                raise ValidationError(
                    {"min_fit_band": [f"must be one of the fit bands: {', '.join(bands)}"]}, "pql"
                )

    @post_load
    def _make(self, data, **kwargs):
        return Definitions(
            account_checklist_trial=Checklist(tuple(data["account_checklist_trial"])),
            account_checklist_paid=Checklist(tuple(data["account_checklist_paid"])),
            user_checklist=Checklist(tuple(data["user_checklist"])),
            profiles=tuple(data["profiles"]),
            key_features=tuple(data["key_features"]),
            frequency_days=data["frequency_days"],
            segments=tuple(data["segments"]),
            score_bands=data["score_bands"],
            trend=data["trend"],
            deal_size=data["deal_size"],
            pql=data["pql"],
            lead_types=data["lead_types"],
            fit=data["fit"],
        )


_schema = DefinitionsSchema()


# A definitions document is a few kilobytes; these bounds are far above any real one.
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_NODES = 20_000
MAX_DEPTH = 16


def _shape_problem(document: Any) -> str | None:
    """Too deep or too many values (what a YAML alias bomb or a nested payload builds)."""
    nodes, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return f"has more than {MAX_NODES} values"
        if depth > MAX_DEPTH:
            return f"is nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return None


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: definitions never need them, and aliases expand a
    few hundred bytes into megabytes."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases are not allowed", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str | bytes) -> Any:
    """A YAML (or JSON) definitions text, bounded: no anchors or aliases, at most
    ``MAX_DOCUMENT_BYTES``. Raises ``yaml.YAMLError`` naming the problem."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_DOCUMENT_BYTES:
        raise yaml.YAMLError(f"the text is {size} bytes; the limit is {MAX_DOCUMENT_BYTES}")
    return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader subclass


def parse_document(document: Any) -> Definitions:
    """Validate a definitions document. Raises ``ValidationError`` whose ``messages`` name each
    bad field by its path."""
    if not isinstance(document, dict):
        raise ValidationError({"_schema": ["definitions must be an object"]})
    problem = _shape_problem(document)
    if problem:
        raise ValidationError({"_schema": [f"the document {problem}"]})
    return _schema.load(document)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if isinstance(value, Checklist) and f.name == "steps":
                return [_plain(s) for s in item]
            out[f.name] = _plain(item)
        return out
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_document(definitions: Definitions) -> dict[str, Any]:
    return _plain(definitions)


# --- versions ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StoredDefinitions:
    version: int
    definitions: Definitions
    document: dict[str, Any]
    created_at: dt.datetime
    created_by: str
    note: str


def _stored(row: DefinitionsVersion) -> StoredDefinitions:
    return StoredDefinitions(
        version=row.version,
        definitions=parse_document(row.document),
        document=row.document,
        created_at=row.created_at,
        created_by=row.created_by,
        note=row.note,
    )


def save_definitions(
    db: Database,
    tenant_id: int,
    document: dict[str, Any],
    created_by: str,
    note: str = "",
    now: dt.datetime | None = None,
) -> StoredDefinitions:
    """Validate and store a new version (raises ``ValidationError`` and stores nothing)."""
    definitions = parse_document(document)
    canonical = to_document(definitions)
    with db.tenant_transaction(tenant_id) as session:
        latest = session.scalar(select(func.max(DefinitionsVersion.version))) or 0
        row = DefinitionsVersion(
            tenant_id=tenant_id,
            version=latest + 1,
            document=canonical,
            created_by=created_by[:120],
            note=note[:500],
            **({"created_at": now} if now else {}),
        )
        session.add(row)
        session.flush()
        return _stored(row)


def current_definitions(db: Database, tenant_id: int) -> StoredDefinitions:
    """The newest version; a tenant without any starts from the defaults (stored as version 1)."""
    with db.tenant_session(tenant_id) as session:
        row = session.scalar(
            select(DefinitionsVersion).order_by(DefinitionsVersion.version.desc()).limit(1)
        )
        if row is not None:
            return _stored(row)
    try:
        return save_definitions(
            db, tenant_id, to_document(default_definitions()), "system", "defaults"
        )
    except IntegrityError:
        # Another process stored version 1 at the same moment: read theirs.
        with db.tenant_session(tenant_id) as session:
            row = session.scalar(
                select(DefinitionsVersion).order_by(DefinitionsVersion.version.desc()).limit(1)
            )
        if row is None:
            raise
        return _stored(row)


def definitions_version(db: Database, tenant_id: int, version: int) -> StoredDefinitions | None:
    with db.tenant_session(tenant_id) as session:
        row = session.scalar(
            select(DefinitionsVersion).where(DefinitionsVersion.version == version)
        )
        return _stored(row) if row else None


HISTORY_LIMIT = 100


def definitions_history(
    db: Database, tenant_id: int, limit: int = HISTORY_LIMIT, before: int | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` versions (older than version ``before``, to page back)."""
    with db.tenant_session(tenant_id) as session:
        rows = session.execute(
            select(
                DefinitionsVersion.version,
                DefinitionsVersion.created_at,
                DefinitionsVersion.created_by,
                DefinitionsVersion.note,
            )
            .where(*([] if before is None else [DefinitionsVersion.version < before]))
            .order_by(DefinitionsVersion.version.desc())
            .limit(limit)
        ).all()
    return [
        {"version": v, "created_at": c.isoformat(), "created_by": b, "note": n}
        for v, c, b, n in rows
    ]


def rollback_definitions(
    db: Database, tenant_id: int, version: int, created_by: str
) -> StoredDefinitions:
    """Restore an old version by saving it again as the newest."""
    old = definitions_version(db, tenant_id, version)
    if old is None:
        raise LookupError(f"tenant {tenant_id} has no definitions version {version}")
    return save_definitions(
        db, tenant_id, old.document, created_by, f"rollback to version {version}"
    )
