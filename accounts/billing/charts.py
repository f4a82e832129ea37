"""Server-rendered charts: stacked bars in an SVG, no JavaScript. Colours are CSS classes (``series-0``..),
so the dark theme and the admin's own styles decide them (static/css/charts.css)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from django.utils.formats import date_format, number_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

WIDTH, HEIGHT, GAP = 600, 160, 2
SERIES_CLASSES = 8


@dataclass(frozen=True)
class Series:
    name: str
    values: list[int]


def stacked_bars(days: list[date], series: list[Series], *, unit: str = gettext_lazy("tokens")) -> dict[str, Any]:
    """One bar per day, its series stacked in order, scaled to the biggest day; the template draws each
    segment as a rect with a title (the day and the figures, in the active language) for a tooltip."""
    totals = [sum(s.values[index] for s in series) for index in range(len(days))]
    peak = max(totals, default=0)
    step = WIDTH / max(len(days), 1)
    bars = []
    for index, day in enumerate(days):
        top = float(HEIGHT)
        segments = []
        for number, one in enumerate(series):
            value = one.values[index]
            if not value:
                continue
            height = HEIGHT * value / peak
            top -= height
            segments.append(
                {"y": round(top, 1), "height": round(height, 1), "css": f"series-{number % SERIES_CLASSES}"}
            )
        parts = ", ".join(
            f"{s.name} {number_format(s.values[index], force_grouping=True)}" for s in series if s.values[index]
        ) or _("none")
        bars.append(
            {
                "x": round(index * step + GAP / 2, 1),
                "width": round(max(step - GAP, 1), 1),
                "segments": segments,
                "title": f"{date_format(day, 'MONTH_DAY_FORMAT')}: {parts}",
            }
        )
    legend = [
        {"name": s.name, "total": sum(s.values), "css": f"series-{number % SERIES_CLASSES}"}
        for number, s in enumerate(series)
    ]
    return {"width": WIDTH, "height": HEIGHT, "bars": bars, "legend": legend, "peak": peak, "unit": unit}
