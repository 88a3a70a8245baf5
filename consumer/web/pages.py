"""HTML of the Deployment view, and the one function that formats a KPI figure for people.

Figures stay exactly as the KPI topic has them everywhere but on screen; `display` rounds them for
reading (the exact value is in each cell's title), and the live updates carry its output, so the
browser never formats a number itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from consumer.web import progress
from consumer.web.routes import segment
from consumer.web.table import KpiEntry

STATES = ("UNKNOWN", "PREPARED", "AWAITING_CONFIRMATION", "CONFIRMED", "SCHEDULED", "SENDING", "FINISHED", "CANCELLED")
# The Deployment block, in the platform's order; live updates refresh these.
DEPLOYMENT = (
    ("to_deliver", "To deliver"),
    ("sent", "Sent"),
    ("delivered_pct", "Delivered"),
    ("bounces_errors_pct", "Bounces + errors"),
    ("open_rate_pct", "Open rate"),
    ("click_through_rate_pct", "Click-through rate"),
)
DETAILS = (
    ("processed", "Processed"),
    ("pending", "Pending"),
    ("failed", "Failed"),
    ("opens_unique", "Unique opens"),
    ("opens_total", "Opens"),
    ("clicks_unique", "Unique clicks"),
    ("clicks_total", "Clicks"),
    ("complaints", "Complaints"),
    ("confirmations_rejected", "Rejected confirmations"),
    ("efs", "Email Feedback Service"),
    ("final", "Final"),
    ("version", "Version"),
)
LIVE_FIELDS = (*(f for f, _ in (*DEPLOYMENT, *DETAILS)), "progress_pct", "updated_at", "state")
STATIC = {"app.css": "text/css; charset=utf-8", "live.js": "text/javascript; charset=utf-8"}

_env = Environment(
    loader=PackageLoader("consumer.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def display(field: str, value: Any) -> str:
    """A KPI figure as people read it: percentages to two decimals, counts with thousands separators."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if field.endswith("_pct"):
        return f"{value:.2f} %"
    if field == "updated_at" or field.endswith("occurred_at"):
        return moment(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def moment(epoch_ms: int | None) -> str:
    """An event time (epoch millis) as people read it, in UTC."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if epoch_ms else "—"


def exact(value: Any) -> str:
    """The value as the topic has it, for a cell's title."""
    return "" if value is None else json.dumps(value)


def bar(kpi: Mapping[str, Any]) -> float:
    """The progress bar's position: progress_pct within 0..100 (unknown counts as 0)."""
    return min(max(kpi.get("progress_pct") or 0.0, 0.0), 100.0)


def live_change(entry: KpiEntry) -> dict[str, Any]:
    """What the browser needs to refresh a delivery: the record, and its figures formatted here."""
    kpi = entry.kpi
    return {
        "delivery_id": kpi["delivery_id"],
        "state": kpi["state"],
        "progress": bar(kpi),
        "display": {f: display(f, kpi.get(f)) for f in LIVE_FIELDS},
        "exact": {f: exact(kpi.get(f)) for f in LIVE_FIELDS},
        "kpi": kpi,
    }


CHART_WIDTH, CHART_HEIGHT = 600, 200
CHART_SERIES = (  # progress.SERIES, as the chart names them
    ("sent", "Delivered"),
    ("failed", "Bounces + errors"),
    ("opens_unique", "Opens"),
    ("clicks_unique", "Clicks"),
)


def chart(points: list[progress.Point], kpi: Mapping[str, Any]) -> dict[str, Any]:
    """The delivery's progress chart: SVG polyline points per series (counts against time, the vertical scale
    to deliver or the largest count), and the axis labels. Computed here so the browser only sets attributes."""
    top = max([kpi.get("to_deliver") or 0, *(max(p.values) for p in points), 1])
    start, end = (points[0].at_s, points[-1].at_s) if points else (0, 0)
    span = max(end - start, 1)

    def xy(point: progress.Point, index: int) -> str:
        x = (point.at_s - start) / span * CHART_WIDTH if end > start else CHART_WIDTH
        return f"{x:.1f},{CHART_HEIGHT - point.values[index] / top * CHART_HEIGHT:.1f}"

    return {
        "series": {name: " ".join(xy(p, i) for p in points) for i, (name, _) in enumerate(CHART_SERIES)},
        "latest": {
            name: display(name, points[-1].values[i]) if points else "—" for i, (name, _) in enumerate(CHART_SERIES)
        },
        "top": display("count", top),
        "start": display("updated_at", start * 1000),
        "end": display("updated_at", end * 1000),
        "points": len(points),
    }


_env.filters["segment"] = segment  # ids in paths: '/' encoded too
_env.globals.update(
    display=display,
    moment=moment,
    exact=exact,
    progress=bar,
    DEPLOYMENT=DEPLOYMENT,
    DETAILS=DETAILS,
    CHART_SERIES=CHART_SERIES,
    CHART_WIDTH=CHART_WIDTH,
    CHART_HEIGHT=CHART_HEIGHT,
)


def render(template: str, **context: Any) -> bytes:
    return _env.get_template(template).render(**context).encode()


def static_asset(name: str) -> tuple[bytes, str] | None:
    """A shipped asset and its content type; only the names listed in STATIC."""
    content_type = STATIC.get(name)
    if content_type is None:
        return None
    return (resources.files("consumer.web") / "static" / name).read_bytes(), content_type
