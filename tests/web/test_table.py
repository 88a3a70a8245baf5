"""The list for a year: pages newest change first, search, state counts, cursors, and the bounded progress history."""

from __future__ import annotations

from consumer.web import progress
from consumer.web.table import KpiTable
from tests.web.fakes import kpi


def filled(n: int) -> KpiTable:
    table = KpiTable()
    for i in range(n):
        table.apply(i % 4, kpi(f"d{i:03}", state="FINISHED" if i % 3 else "SENDING"))
    return table


def test_pages_go_newest_change_first_and_a_change_moves_a_delivery_to_the_top() -> None:
    table = filled(120)
    first = table.page(50)
    assert [e.delivery_id for e in first.entries][:2] == ["d119", "d118"] and len(first.entries) == 50
    second = table.page(50, first.next_before)
    assert second.entries[0].delivery_id == "d069"
    third = table.page(50, second.next_before)
    assert len(third.entries) == 20 and third.next_before is None
    table.apply(0, kpi("d000", version=2))
    assert table.page(1).entries[0].delivery_id == "d000"


def test_search_and_state_filter_and_counts() -> None:
    table = filled(120)
    found = table.page(50, search="D11")  # case-insensitive, anywhere in the id
    assert [e.delivery_id for e in found.entries] == [f"d11{i}" for i in range(9, -1, -1)]
    sending = table.page(50, state="SENDING")
    assert {e.state for e in sending.entries} == {"SENDING"} and len(sending.entries) == 40
    assert table.counts() == (120, {"SENDING": 40, "FINISHED": 80})
    table.apply(0, kpi("d000", version=2, state="FINISHED"))
    table.remove("d001")
    assert table.counts() == (119, {"SENDING": 39, "FINISHED": 80})


def test_the_changes_after_a_cursor_are_read_from_the_index() -> None:
    table = filled(3)
    cursor = table.cursor()
    table.apply(0, kpi("d001", version=2))
    assert [e.delivery_id for e in table.changes(cursor, 0)[1]] == ["d001"]


def test_the_history_is_bounded_and_keeps_the_whole_span() -> None:
    table = KpiTable()
    start = 1_795_000_000_000
    for n in range(1000):
        table.apply(0, kpi("d", version=n + 1, sent=n, failed=n // 10, updated_at=start + n * 60_000))
    points = table.history("d")
    assert progress.MAX_POINTS // 2 <= len(points) <= progress.MAX_POINTS
    assert points[0].at_s == start // 1000 and points[-1].at_s == start // 1000 + 999 * 60
    assert points[-1].values == (999, 99, 0, 0)
    table.apply(0, kpi("d", version=2000, sent=1000, updated_at=start + 999 * 60_000))  # the same second
    assert table.history("d")[-1].values[0] == 1000 and len(table.history("d")) == len(points)
