"""Charts for the admin UI as inline SVG, drawn on the server: no script, no build step, and
readable by screen readers (each chart has a title and a description; each point a title)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 40, 44


def _x(value: float, low: float, high: float) -> float:
    span = (high - low) or 1.0
    return LEFT + (value - low) / span * (WIDTH - LEFT - RIGHT)


def _y(value: float, low: float, high: float) -> float:
    span = (high - low) or 1.0
    return HEIGHT - BOTTOM - (value - low) / span * (HEIGHT - TOP - BOTTOM)


def _axes(x_label: str, y_label: str, x_ticks: list[tuple[float, str]], y_ticks) -> list[str]:
    parts = [
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" '
        'stroke="#555"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#555"/>',
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>",
        f'<text x="14" y="{(TOP + HEIGHT - BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(TOP + HEIGHT - BOTTOM) / 2})">{escape(y_label)}</text>',
    ]
    for x, label in x_ticks:
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'class="tick">{escape(label)}</text>'
        )
    for y, label in y_ticks:
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{escape(label)}</text>"
        )
    return parts


def _legend(entries: Sequence[tuple[str, str]]) -> str:
    """A legend across the top: (swatch class, label) pairs."""
    items, x = [], LEFT
    for css, label in entries:
        items.append(
            f'<circle class="{css}" cx="{x + 6}" cy="18" r="5"/>'
            f'<text x="{x + 16}" y="22" class="legend">{escape(label)}</text>'
        )
        x += 28 + 7 * len(label)
    return '<g class="legend" aria-hidden="true">' + "".join(items) + "</g>"


def _frame(chart_id: str, title: str, description: str, parts: list[str]) -> Markup:
    return Markup(
        f'<svg id="{chart_id}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" '
        'xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>' + "".join(parts) + "</svg>"
    )


def scatter_plot(
    points: Sequence[tuple[float, float, str, str, bool]],
    x_label: str,
    y_label: str,
    groups: Sequence[str | None] | None = None,
    group_names: Sequence[str] = (),
) -> Markup:
    """Points (x 0-100, y 0-100, name, link, highlighted): the PQL spectrum. With ``groups``
    (one per point, from ``group_names``), points are coloured by group instead (the fit
    bands), with a legend of the groups."""
    ticks = [0, 25, 50, 75, 100]
    parts = _axes(
        x_label,
        y_label,
        [(_x(t, 0, 100), str(t)) for t in ticks],
        [(_y(t, 0, 100), str(t)) for t in ticks],
    )
    for position, (x, y, name, link, highlighted) in enumerate(points):
        css = "point pql" if highlighted else "point"
        extra = ""
        if groups is not None:
            group = groups[position]
            rank = list(group_names).index(group) if group in group_names else None
            css = f"point group-{rank}" if rank is not None else "point group-none"
            extra = f", fit {group}" if group else ", no fit band"
        parts.append(
            f'<a href="{escape(link)}"><circle class="{css}" cx="{_x(x, 0, 100):.1f}" '
            f'cy="{_y(y, 0, 100):.1f}" r="5"><title>{escape(name)}: {x:.0f}% activated, '
            f"engagement {y:.0f}{escape(extra)}</title></circle></a>"
        )
    if groups is not None:
        parts.append(
            _legend(
                [(f"point group-{i}", f"Fit {n}") for i, n in enumerate(group_names)]
                + [("point group-none", "No fit band")]
            )
        )
    else:
        parts.append(_legend([("point pql", "PQL"), ("point", "Not a PQL")]))
    described = (
        f"{len(points)} accounts by {x_label.lower()} (across) and {y_label.lower()} (up); "
        "filled dark: product-qualified leads."
    )
    return _frame("spectrum", f"{y_label} against {x_label}", described, parts)


def line_chart(
    first: Sequence[tuple[dt.date, float]],
    second: Sequence[tuple[dt.date, float]],
    labels: tuple[str, str],
) -> Markup:
    """Two series over days (0-100): engagement and Activation over time."""
    days = sorted({d for d, _ in first} | {d for d, _ in second})
    if not days:
        return _frame(
            "history",
            f"{labels[0]} and {labels[1]} over time",
            "No history yet: it grows by a point per day of scoring.",
            [f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">No history yet</text>'],
        )
    start, end = days[0].toordinal(), days[-1].toordinal()
    if start == end:
        start -= 1
    x_ticks = [
        (_x(d.toordinal(), start, end), d.strftime("%b %d"))
        for d in days[:: max(1, len(days) // 6)]
    ]
    parts = _axes("Day", "Score", x_ticks, [(_y(t, 0, 100), str(t)) for t in (0, 25, 50, 75, 100)])
    for series, label, css in ((first, labels[0], "line-a"), (second, labels[1], "line-b")):
        coords = [(_x(d.toordinal(), start, end), _y(v, 0, 100)) for d, v in series]
        if not coords:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(
            f'<polyline class="{css}" fill="none" points="{path}">'
            f"<title>{escape(label)}</title></polyline>"
        )
        for (x, y), (d, v) in zip(coords, series, strict=True):
            parts.append(
                f'<circle class="{css}" cx="{x:.1f}" cy="{y:.1f}" r="3">'
                f"<title>{escape(label)} on {d.isoformat()}: {v:.0f}</title></circle>"
            )
    parts.append(_legend([("line-a", labels[0]), ("line-b", labels[1])]))
    described = (
        f"{labels[0]} and {labels[1]} per day from {days[0].isoformat()} to "
        f"{days[-1].isoformat()} ({len(days)} days)."
    )
    return _frame("history", f"{labels[0]} and {labels[1]} over time", described, parts)
