"""Times as people read them: "3 minutes ago" with the exact time on hover (a ``<time>`` whose
``datetime`` a few lines of script turn into the admin's own time zone; without scripts the
hover shows UTC)."""

from __future__ import annotations

import datetime as dt

from markupsafe import Markup, escape

UNITS = (
    (365 * 86400, "year"),
    (30 * 86400, "month"),
    (7 * 86400, "week"),
    (86400, "day"),
    (3600, "hour"),
    (60, "minute"),
)


def relative(moment: dt.datetime | dt.date, now: dt.datetime) -> str:
    """ "just now", "5 minutes ago", "yesterday", "in 2 hours", "3 weeks ago"."""
    if not isinstance(moment, dt.datetime):
        days = (now.date() - moment).days
        if days == 0:
            return "today"
        if days == 1:
            return "yesterday"
        if days == -1:
            return "tomorrow"
        moment = dt.datetime.combine(moment, dt.time(), dt.UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    seconds = (now - moment).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 60:
        return "just now"
    for size, unit in UNITS:
        if seconds >= size:
            n = int(seconds // size)
            text = f"{n} {unit}{'s' if n != 1 else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "just now"


def when(moment: dt.datetime | dt.date | str | None, now: dt.datetime) -> Markup:
    """A ``<time>`` element: relative text, the exact time (UTC) as its title."""
    if moment in (None, ""):
        return Markup("")
    if isinstance(moment, str):
        try:
            moment = dt.datetime.fromisoformat(moment)
        except ValueError:
            return Markup(escape(moment))
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        exact = moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        iso = moment.astimezone(dt.UTC).isoformat(timespec="seconds")
    else:
        exact = iso = moment.isoformat()
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        iso, exact, relative(moment, now)
    )
