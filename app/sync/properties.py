"""The CRM properties the app writes (DOMAIN.md "What goes into the CRM"), and their values.

One catalogue for every CRM: names are ``<prefix><field>``, types are the CRM-neutral kinds of
``connectors.base.PropertySpec``; enumeration options come from the tenant's definitions.
Values are strings as CRMs take them (numbers plain, booleans "true"/"false", datetimes as
epoch milliseconds, "" to clear).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.base import PropertySpec
from scoring.definitions import DEAL_SIZES, PQL_KINDS, Definitions
from scoring.engine import LEAD_TYPES

# Words people read in the CRM for the options whose values are ids (DOMAIN.md's names).
OPTION_LABELS = {
    "criteria": "Met the criteria",
    "hand_raiser": "Hand-raiser",
    "limit_reached": "Reached a limit",
    "touchless_purchase": "Bought without sales",
    "small": "Small",
    "mid": "Mid-size",
    "large": "Large",
}
ENGAGEMENT_SEGMENTS = ("Most engaged", "Engaged", "Passive", "Least engaged")
TREND_SEGMENTS = ("Red Hot", "Ice Cold")
GROUP_LABEL = "Product usage (PQL)"


@dataclass(frozen=True)
class Field:
    """One written trait: where its value comes from on the score row."""

    name: str
    label: str
    kind: str
    value: Callable[[Any], Any]
    description: str = ""
    options: Callable[[Definitions], tuple[str, ...]] | None = None
    percent: bool = False  # a number from 0 to 100 that reads as a percentage


def _attr(name: str) -> Callable[[Any], Any]:
    return lambda score: getattr(score, name)


COMMON = (
    Field(
        "activation_rate",
        "Activation rate",
        "number",
        _attr("activation_rate"),
        "Share of the Activation checklist done, 0-100",
        percent=True,
    ),
    Field("activated", "Activated", "bool", _attr("activated"), "Every Activation step done"),
    Field(
        "activated_at",
        "Activated at",
        "datetime",
        _attr("activated_at"),
        "When the Activation checklist was first complete",
    ),
    Field(
        "next_step",
        "Next Activation step",
        "string",
        _attr("next_step"),
        "The first Activation step not done yet",
    ),
    Field(
        "engagement_score",
        "Engagement score",
        "number",
        _attr("engagement_score"),
        "Weighted product usage in the scoring profile's time frame, graded 0-100",
    ),
    Field(
        "engagement_segment",
        "Engagement segment",
        "enumeration",
        _attr("engagement_segment"),
        options=lambda defs: ENGAGEMENT_SEGMENTS,
    ),
    Field(
        "trend",
        "Engagement trend",
        "enumeration",
        _attr("trend_segment"),
        "Red Hot: up, Ice Cold: down by more than the tenant's points vs the previous period",
        options=lambda defs: TREND_SEGMENTS,
    ),
    Field(
        "trend_change",
        "Engagement change",
        "number",
        _attr("trend_change"),
        "Engagement score change vs the previous period, in points",
    ),
    Field(
        "adoption_rate",
        "Adoption rate",
        "number",
        _attr("adoption_rate"),
        "Share of key features used in the time frame, 0-100",
        percent=True,
    ),
    Field("last_active_at", "Last active", "datetime", _attr("last_active_at")),
)

ACCOUNT_ONLY = (
    Field(
        "active_users",
        "Active users",
        "number",
        _attr("active_users"),
        "Users active in the scoring profile's time frame",
    ),
    Field("total_users", "Total users", "number", _attr("total_users")),
    Field(
        "is_pql",
        "Is a PQL",
        "bool",
        _attr("pql"),
        "Yes when the account is a product-qualified lead (see PQL kind and reason)",
    ),
    Field("pql_at", "PQL since", "datetime", _attr("pql_at"), "When the account first qualified"),
    Field("pql_kind", "PQL kind", "enumeration", _attr("pql_kind"), options=lambda defs: PQL_KINDS),
    Field(
        "pql_reason",
        "PQL reason",
        "text",
        _attr("pql_reason"),
        "Why the account qualified (or what it still lacks), in one sentence",
    ),
    Field(
        "deal_size", "Deal size", "enumeration", _attr("deal_size"), options=lambda defs: DEAL_SIZES
    ),
    Field(
        "lead_type",
        "Lead type",
        "enumeration",
        _attr("lead_type"),
        options=lambda defs: tuple(LEAD_TYPES),
    ),
    Field(
        "chance_to_convert",
        "Chance to convert",
        "number",
        _attr("chance_to_convert"),
        "The lead type's chance to convert, in percent",
        percent=True,
    ),
    Field(
        "forecast_value",
        "Forecast value",
        "number",
        _attr("forecast_value"),
        "Deal size value x chance to convert",
    ),
    Field(
        "fit_score",
        "Fit score",
        "number",
        _attr("fit_score"),
        "Who the account is (firmographics), 0-100, from the tenant's fit rules",
    ),
    Field(
        "fit_band",
        "Fit band",
        "enumeration",
        _attr("fit_band"),
        "The fit score's band (best first), or the lowest when a disqualifier applies",
        options=lambda defs: tuple(b.name for b in defs.fit.bands),
    ),
    Field(
        "fit_reason",
        "Fit reason",
        "text",
        _attr("fit_reason"),
        "Why the account has its fit band, in one sentence",
    ),
)

# Contacts carry their account's fit (the push reads it with them).
USER_ONLY = (
    Field(
        "fit_score",
        "Account fit score",
        "number",
        _attr("account_fit_score"),
        "The fit score of the contact's account, 0-100",
    ),
    Field(
        "fit_band",
        "Account fit band",
        "enumeration",
        _attr("account_fit_band"),
        "The fit band of the contact's account",
        options=lambda defs: tuple(b.name for b in defs.fit.bands),
    ),
    Field(
        "fit_reason",
        "Account fit reason",
        "text",
        _attr("account_fit_reason"),
        "Why the contact's account has its fit band",
    ),
)

ACCOUNT_FIELDS = COMMON + ACCOUNT_ONLY
USER_FIELDS = COMMON + USER_ONLY


def key_property(prefix: str, subject: str) -> str:
    return f"{prefix}{'account' if subject == 'account' else 'user'}_key"


def group_name(prefix: str) -> str:
    return prefix.rstrip("_") or "pql"


def specs(prefix: str, subject: str, defs: Definitions) -> list[PropertySpec]:
    """Every property for accounts or users: the unique key first."""
    fields = ACCOUNT_FIELDS if subject == "account" else USER_FIELDS
    out = [
        PropertySpec(
            key_property(prefix, subject),
            f"PQL {subject} id",
            "string",
            description="The product's id for this record; the app matches on it",
            unique=True,
            hidden=True,
        )
    ]
    for f in fields:
        out.append(
            PropertySpec(
                f"{prefix}{f.name}",
                f.label,
                f.kind,
                description=f.description,
                options=(options := f.options(defs) if f.options else ()),
                option_labels=tuple(OPTION_LABELS.get(o, o) for o in options),
                percent=f.percent,
            )
        )
    return out


def kinds(prefix: str) -> dict[str, str]:
    """Every property the app writes (both subjects, keys included) → its kind."""
    out = {key_property(prefix, s): "string" for s in ("account", "user")}
    for f in ACCOUNT_FIELDS:
        out[f"{prefix}{f.name}"] = f.kind
    return out


def crm_value(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == "bool":
        return "true" if value else "false"
    if kind == "datetime":
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return str(int(moment.timestamp() * 1000))
    if kind == "number":
        number = float(value)
        return str(int(number)) if number.is_integer() else f"{number:.2f}".rstrip("0")
    return str(value)


def values(prefix: str, subject: str, score: Any) -> dict[str, str]:
    """The properties' values for one score row (AccountScore or UserScore)."""
    fields = ACCOUNT_FIELDS if subject == "account" else USER_FIELDS
    return {f"{prefix}{f.name}": crm_value(f.kind, f.value(score)) for f in fields}
