"""A tenant's definitions: what Activation, engagement, segments, PQL and lead types mean.

Plain frozen values; validation lives at the edge (``app.scores.definitions_store``).
Every default here is DOMAIN.md's, and every one is a tenant setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STEP_KINDS = ("event_count", "distinct_users", "trait")
TRAIT_OPS = ("equals", "gte", "lte", "contains", "exists")
TIME_FRAMES = (1, 7, 30)
COMPLEXITIES = ("simple", "intermediate", "complex")
DEAL_SIZES = ("small", "mid", "large")
PQL_KINDS = ("criteria", "hand_raiser", "limit_reached", "touchless_purchase")


@dataclass(frozen=True)
class Step:
    """One Activation checklist step.

    * ``event_count``: did ``event`` at least ``min_count`` times (ever, or within the first
      ``within_days`` days after the subject was first seen).
    * ``distinct_users`` (accounts): at least ``min_count`` different users did ``event``.
    * ``trait``: the trait ``trait`` satisfies ``op`` against ``value``.
    """

    key: str
    label: str
    kind: str
    event: str | None = None
    min_count: int = 1
    within_days: int | None = None
    trait: str | None = None
    op: str | None = None
    value: object = None


@dataclass(frozen=True)
class Checklist:
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class InactivityPenalty:
    """``points`` (negative) when ``event`` (any event if None) did not happen in ``days``."""

    points: int
    days: int
    event: str | None = None


@dataclass(frozen=True)
class Condition:
    """A filter over a record's fields: ``field`` ``op`` ``value``.

    Fields are names such as ``engagement_score``, ``activation_rate``, ``pql``,
    ``last_active_days``, ``trait.plan``, ``crm.owner_id``, ``crm.lifecycle_stage``.
    """

    field: str
    op: str
    value: object = None


@dataclass(frozen=True)
class ScoringProfile:
    name: str
    weights: dict[str, int]
    time_frame_days: int = 7
    penalties: tuple[InactivityPenalty, ...] = ()
    decay: bool = False
    # Which subjects this profile scores (all conditions must hold); empty = everyone.
    applies_to: tuple[Condition, ...] = ()
    default: bool = False


@dataclass(frozen=True)
class Segment:
    name: str
    conditions: tuple[Condition, ...]
    applies_to: str = "account"  # "account" or "user"


@dataclass(frozen=True)
class ScoreBands:
    """Engagement segments: > most_engaged, >= engaged, >= passive, else least engaged (a
    boundary belongs to the band it opens; most_engaged itself is Engaged)."""

    most_engaged: float = 75
    engaged: float = 50
    passive: float = 25


@dataclass(frozen=True)
class TrendRule:
    """A change of more than ``points`` period-on-period is Red Hot (up) or Ice Cold (down);
    a drop of more than ``points`` is an engagement drop (a CS task on paying accounts)."""

    points: float = 10
    new_days: int = 30
    recently_inactive_from_days: int = 30
    recently_inactive_to_days: int = 60
    mature_days: int = 182


@dataclass(frozen=True)
class DealSizeRule:
    """Deal size from a numeric trait: below ``mid_from`` small, below ``large_from`` mid."""

    trait: str = "employees"
    mid_from: float = 50
    large_from: float = 1000
    # The band an account whose size trait is unknown is counted in (PQL threshold, forecast);
    # the reason says the size was unknown.
    unknown: str = "small"
    # Money per deal size for the forecast (deal value × chance to convert).
    values: dict[str, float] = field(
        default_factory=lambda: {"small": 5_000, "mid": 25_000, "large": 100_000}
    )


@dataclass(frozen=True)
class PQLRules:
    complexity: str = "simple"
    # Activation % an account must reach, per complexity and deal size.
    thresholds: dict[str, dict[str, float]] = field(
        default_factory=lambda: {
            "simple": {"small": 80, "mid": 60, "large": 25},
            "intermediate": {"small": 60, "mid": 40, "large": 20},
            "complex": {"small": 40, "mid": 25, "large": 10},
        }
    )
    # The account trait that says where it is in its life, and the values that are a trial.
    stage_trait: str = "plan"
    trial_values: tuple[str, ...] = ("trial", "free")
    paid_values: tuple[str, ...] = ("paid",)
    hand_raiser_events: tuple[str, ...] = ("Demo Requested", "Contact Sales Clicked")
    limit_events: tuple[str, ...] = ("Plan Limit Reached",)
    purchase_events: tuple[str, ...] = ("Order Completed", "Subscription Started")
    # Each kind may also come from the account's traits: all conditions hold (none = unused),
    # e.g. [Condition("trait.demo_requested", "equals", True)].
    hand_raiser_traits: tuple[Condition, ...] = ()
    limit_traits: tuple[Condition, ...] = ()
    purchase_traits: tuple[Condition, ...] = ()
    # The lowest fit band a PQL may have (None: fit does not gate PQLs).
    min_fit_band: str | None = None


@dataclass(frozen=True)
class LeadTypeBands:
    """Activation and engagement levels: >= high is high, >= medium is medium, else low."""

    activation_high: float = 70
    activation_medium: float = 40
    engagement_high: float = 60
    engagement_medium: float = 30
    # A trait that says an account is a poor fit when it equals ``poor_fit_value``.
    fit_trait: str = "fit"
    poor_fit_value: object = "poor"


@dataclass(frozen=True)
class FitRule:
    """Points (negative to take away) for an account where every condition holds; rules of
    one ``group`` add up to at most that group's cap."""

    label: str
    conditions: tuple[Condition, ...]
    points: int
    group: str | None = None


@dataclass(frozen=True)
class Disqualifier:
    """Conditions that make an account the lowest fit band whatever else it has; ``label`` is
    the reason ("personal email domain", "a competitor")."""

    label: str
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class FitBand:
    name: str
    min_score: float


@dataclass(frozen=True)
class FitRules:
    """Who the account is: a 0–100 fit score from firmographic conditions (traits, the CRM's
    fields), its band and why. No rules and no disqualifiers: fit is not scored."""

    rules: tuple[FitRule, ...] = ()
    group_caps: dict[str, int] = field(default_factory=dict)
    disqualifiers: tuple[Disqualifier, ...] = ()
    # Best first; the last one's minimum is 0.
    bands: tuple[FitBand, ...] = (
        FitBand("A", 75),
        FitBand("B", 50),
        FitBand("C", 25),
        FitBand("D", 0),
    )

    @property
    def enabled(self) -> bool:
        return bool(self.rules or self.disqualifiers)


@dataclass(frozen=True)
class Definitions:
    account_checklist_trial: Checklist
    account_checklist_paid: Checklist
    user_checklist: Checklist
    profiles: tuple[ScoringProfile, ...]
    key_features: tuple[str, ...]
    frequency_days: int = 30
    segments: tuple[Segment, ...] = ()
    score_bands: ScoreBands = field(default_factory=ScoreBands)
    trend: TrendRule = field(default_factory=TrendRule)
    deal_size: DealSizeRule = field(default_factory=DealSizeRule)
    pql: PQLRules = field(default_factory=PQLRules)
    lead_types: LeadTypeBands = field(default_factory=LeadTypeBands)
    fit: FitRules = field(default_factory=FitRules)

    @property
    def default_profile(self) -> ScoringProfile:
        for profile in self.profiles:
            if profile.default:
                return profile
        return self.profiles[0]
