"""Pictures for the console, drawn here as inline SVG: nothing to download, works offline."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

STATE_COLOURS = {"up": "#2e7d32", "degraded": "#f9a825", "down": "#c62828", "unknown": "#cfd8dc"}
TIER_COLOURS = ["#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#5d4037"]


def health_strip(cells: list[dict[str, Any]], *, cell_width: int = 2, height: int = 28) -> str:
    """One thin bar per hour, coloured by the worst state of its checks; a title on each bar
    says the hour and state (hover in a browser)."""
    width = max(1, len(cells)) * cell_width
    bars = []
    for index, cell in enumerate(cells):
        state = cell["state"]
        bars.append(
            f'<rect x="{index * cell_width}" y="0" width="{cell_width}" height="{height}" '
            f'fill="{STATE_COLOURS.get(state, STATE_COLOURS["unknown"])}" class="cell-{state}">'
            f"<title>{html.escape(str(cell['hour']))[:16].replace('T', ' ')} UTC: {state}</title>"
            "</rect>"
        )
    return (
        f'<svg class="strip" role="img" aria-label="Health per hour, last 30 days" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" preserveAspectRatio="none">' + "".join(bars) + "</svg>"
    )


def series_chart(
    series: dict[str, list[tuple[datetime, float]]],
    *,
    title: str,
    unit: str,
    width: int = 560,
    height: int = 180,
) -> str:
    """Lines with dots, one per series (tier), over a shared time axis; the axis labels give the
    range, a legend names the series."""
    points = [p for values in series.values() for p in values]
    left, right, top, bottom = 56, 12, 22, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg class="chart" role="img" aria-label="{html.escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
        f'<text x="{left}" y="14" font-size="12" font-weight="bold">{html.escape(title)}</text>',
    ]
    if not points:
        parts.append(
            f'<text x="{left}" y="{top + plot_h / 2}" font-size="12" fill="#666">'
            "No verified backups yet</text></svg>"
        )
        return "".join(parts)
    t0 = min(p[0] for p in points).timestamp()
    t1 = max(p[0] for p in points).timestamp()
    top_value = max(p[1] for p in points) or 1.0
    span = (t1 - t0) or 1.0

    def x(at: datetime) -> float:
        return left + (at.timestamp() - t0) / span * plot_w if t1 > t0 else left + plot_w / 2

    def y(value: float) -> float:
        return top + plot_h - value / top_value * plot_h

    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#999"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>'
        f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">'
        f"{_short(top_value)} {html.escape(unit)}</text>"
        f'<text x="{left - 4}" y="{top + plot_h}" font-size="10" text-anchor="end">0</text>'
        f'<text x="{left}" y="{height - 8}" font-size="10">'
        f"{min(p[0] for p in points):%Y-%m-%d}</text>"
        f'<text x="{left + plot_w}" y="{height - 8}" font-size="10" text-anchor="end">'
        f"{max(p[0] for p in points):%Y-%m-%d}</text>"
    )
    for index, (name, values) in enumerate(series.items()):
        colour = TIER_COLOURS[index % len(TIER_COLOURS)]
        ordered = sorted(values)
        if len(ordered) > 1:
            path = " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v in ordered)
            parts.append(f'<polyline fill="none" stroke="{colour}" points="{path}"/>')
        for at, value in ordered:
            parts.append(
                f'<circle cx="{x(at):.1f}" cy="{y(value):.1f}" r="2.5" fill="{colour}">'
                f"<title>{html.escape(name)} {at:%Y-%m-%d %H:%M}: {_short(value)} "
                f"{html.escape(unit)}</title></circle>"
            )
        legend_x = left + 8 + index * 110
        parts.append(
            f'<rect x="{legend_x}" y="{top + 2}" width="8" height="8" fill="{colour}"/>'
            f'<text x="{legend_x + 11}" y="{top + 10}" font-size="10">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _short(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"
