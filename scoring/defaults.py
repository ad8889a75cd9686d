"""The definitions a new tenant starts from (DOMAIN.md's defaults; every one is editable)."""

from __future__ import annotations

from scoring.definitions import (
    Checklist,
    Definitions,
    InactivityPenalty,
    ScoringProfile,
    Step,
)

ACCOUNT_TRIAL_STEPS = (
    Step("report", "Created a report", "event_count", event="Report Created"),
    Step("invites", "Invited 3 teammates", "event_count", event="Teammate Invited", min_count=3),
    Step("team", "3 people logged in", "distinct_users", event="Logged In", min_count=3),
    Step("integration", "Connected an integration", "event_count", event="Integration Connected"),
    Step("share", "Shared a dashboard", "event_count", event="Dashboard Shared"),
)

ACCOUNT_PAID_STEPS = (
    Step("team", "5 people logged in", "distinct_users", event="Logged In", min_count=5),
    Step("integration", "Connected an integration", "event_count", event="Integration Connected"),
    Step("share", "Shared a dashboard", "event_count", event="Dashboard Shared"),
    Step("export", "Downloaded an export", "event_count", event="Export Downloaded"),
)

USER_STEPS = (
    Step("profile", "Set up a profile", "trait", trait="name", op="exists"),
    Step("report", "Created a report", "event_count", event="Report Created"),
    Step(
        "dashboards",
        "Viewed dashboards 3 times",
        "event_count",
        event="Dashboard Viewed",
        min_count=3,
    ),
)

DEFAULT_WEIGHTS = {
    "Logged In": 1,
    "Dashboard Viewed": 2,
    "Export Downloaded": 4,
    "Dashboard Shared": 6,
    "Teammate Invited": 7,
    "Report Created": 8,
    "Integration Connected": 9,
}


def default_definitions() -> Definitions:
    return Definitions(
        account_checklist_trial=Checklist(ACCOUNT_TRIAL_STEPS),
        account_checklist_paid=Checklist(ACCOUNT_PAID_STEPS),
        user_checklist=Checklist(USER_STEPS),
        profiles=(
            ScoringProfile(
                name="Default",
                weights=dict(DEFAULT_WEIGHTS),
                time_frame_days=7,
                penalties=(InactivityPenalty(points=-5, days=7, event="Logged In"),),
                decay=False,
                default=True,
            ),
        ),
        key_features=(
            "Report Created",
            "Dashboard Shared",
            "Teammate Invited",
            "Integration Connected",
            "Export Downloaded",
        ),
    )
