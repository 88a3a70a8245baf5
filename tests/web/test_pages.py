"""The one formatting function, what live updates carry, and escaping."""

from __future__ import annotations

import pytest

from consumer.web import pages
from consumer.web.app import ListQuery
from consumer.web.table import KpiTable
from tests.web.fakes import kpi


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("delivered_pct", 33.333333333333336, "33.33 %"),
        ("bounces_errors_pct", 0.005, "0.01 %"),
        ("open_rate_pct", 100.0, "100.00 %"),
        ("progress_pct", None, "—"),
        ("to_deliver", 2_000_000, "2,000,000"),
        ("to_deliver", None, "—"),
        ("sent", 0, "0"),
        ("final", True, "yes"),
        ("efs", False, "no"),
        ("updated_at", 1_795_000_000_000, "2026-11-18 11:06:40 UTC"),
        ("updated_at", 0, "—"),
        ("state", "SENDING", "SENDING"),
    ],
)
def test_display(field: str, value, shown: str) -> None:
    assert pages.display(field, value) == shown


def test_a_live_change_carries_the_exact_record_and_its_display() -> None:
    record = kpi("d", delivered_pct=200 / 3, progress_pct=123.4, state="FINISHED")
    table = KpiTable()
    table.apply(1, record)
    change = pages.live_change(table.get("d"))
    assert change["kpi"] == record
    assert change["display"]["delivered_pct"] == "66.67 %"
    assert change["exact"]["delivered_pct"] == repr(200 / 3) == "66.66666666666667"
    assert change["progress"] == 100.0  # the bar stops at its end; the figure says 123.40 %
    assert change["display"]["progress_pct"] == "123.40 %"
    assert set(change["display"]) == set(pages.LIVE_FIELDS)


def test_delivery_ids_are_escaped_everywhere() -> None:
    hostile = '<script>alert("x")</script>'
    table = KpiTable()
    table.apply(0, kpi(hostile))
    query = ListQuery(None, hostile, None)
    html = pages.render(
        "index.html",
        identity=None,
        page=table.page(50),
        query=query,
        cursor="c",
        states=pages.STATES,
        total=1,
        by_state={},
    ).decode()
    assert "<script>alert" not in html
    assert "&lt;script&gt;" in html


def test_only_the_shipped_assets_are_served() -> None:
    body, content_type = pages.static_asset("live.js")
    assert b"EventSource" in body and content_type.startswith("text/javascript")
    assert pages.static_asset("../app.py") is None
    assert pages.static_asset("templates/base.html") is None
