"""The first-run guide on the admin home: installed → events sent with a write key → first
event received → first accounts scored → first values in the CRM → what to build in the CRM.
Each step says whether it is done and, when it is not, what is missing. Read with a few
counts, so the home page can ask for it every few seconds while the admin waits."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Account, AccountScore, CrmRecord, Event, WriteKey
from app.web.read_model import crm_account_url


@dataclass
class GuideStep:
    key: str
    title: str
    done: bool
    detail: str
    link: str | None = None
    link_text: str | None = None
    extra: dict = field(default_factory=dict)


def _crm_name(crm: str) -> str:
    return {"hubspot": "HubSpot", "salesforce": "Salesforce"}.get(crm, crm)


def first_run(
    session: Session, tenant, settings: dict, prefix: str, scoring_every: int
) -> list[GuideStep]:
    crm = _crm_name(tenant.crm)
    active_keys = session.scalar(
        select(func.count())
        .select_from(WriteKey)
        .where(WriteKey.revoked_at.is_(None), WriteKey.scope == "write")
    )
    events, first_event = session.execute(
        select(func.count(), func.min(Event.received_at)).select_from(Event)
    ).one()
    scored = session.scalar(select(func.count()).select_from(AccountScore))
    accounts = session.scalar(select(func.count()).select_from(Account))
    written = session.execute(
        select(CrmRecord.crm_id, Account.name)
        .join(Account, Account.id == CrmRecord.subject_id)
        .where(
            CrmRecord.object_type == "account",
            CrmRecord.crm_id.is_not(None),
            CrmRecord.pushed_at.is_not(None),
        )
        .order_by(CrmRecord.pushed_at)
        .limit(1)
    ).first()
    installed = tenant.status == "active"
    steps = [
        GuideStep(
            "installed",
            f"Installed in {crm}",
            installed,
            "The app's properties are in your CRM."
            if installed
            else f"The app is {tenant.status}: install it again from {crm}.",
        ),
        GuideStep(
            "key",
            "Send your product's events with a write key",
            bool(active_keys),
            "Paste one of the snippets below into your product's backend or web app."
            if active_keys
            else "Every write key is revoked: rotate one below to get a new key.",
        ),
        GuideStep(
            "event",
            "First event received",
            bool(events),
            f"{events:,} events so far; the first arrived {first_event:%Y-%m-%d %H:%M} UTC."
            if events
            else "Nothing has arrived yet. Send an identify, a group and a track call with "
            "the snippet; this page updates by itself.",
        ),
        GuideStep(
            "scored",
            "First accounts scored",
            bool(scored),
            f"{scored:,} accounts scored."
            if scored
            else (
                f"{accounts:,} accounts are waiting for the next scoring pass (every "
                f"{scoring_every} s)."
                if accounts
                else "No account yet: accounts come from group calls (or a groupId in the "
                "context of track calls)."
            ),
            link="/app/accounts" if scored else None,
            link_text="See the accounts" if scored else None,
        ),
    ]
    pause, error = settings.get("sync_paused"), settings.get("sync_error")
    if written:
        link = crm_account_url(tenant, written[0])
        detail = f"{written[1] or 'An account'} has its engagement and Activation in {crm}."
    else:
        link = None
        if pause:
            detail = f"Syncing is paused until {pause.get('until')}: {pause.get('reason')}"
        elif error:
            detail = f"The last sync failed: {error.get('error')}"
        elif scored:
            detail = "The next sync writes the scored accounts (within a minute)."
        else:
            detail = "Waits for the first scored accounts."
    steps.append(
        GuideStep(
            "written",
            f"First values written to {crm}",
            written is not None,
            detail,
            link=link,
            link_text=f"Open it in {crm}" if link else None,
        )
    )
    steps.append(
        GuideStep(
            "next",
            f"Put it to work in {crm}",
            False,
            "Suggested next steps (they stay here for reference).",
            extra={"crm": crm, "prefix": prefix},
        )
    )
    return steps


def guide_done(steps: list[GuideStep]) -> bool:
    """Every step but the suggestions is done: the guide folds away."""
    return all(s.done for s in steps if s.key != "next")
