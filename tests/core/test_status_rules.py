"""One test per row of the two seed tables (without and with EFS), through the whole core."""

from __future__ import annotations

import pytest

from consumer.core.status import FAILED, PENDING, SENT, message_status
from tests.core.builders import kpi_after, mta, prepared, processor

VALIDITY_END = 10_000

# (row, MTA event types in arrival order, validity over?, status, delivered %, bounces+errors %)
WITHOUT_EFS = [
    ("relayed", ["RELAYED"], False, SENT, 100.0, 0.0),
    ("delivered", ["RELAYED", "DELIVERED"], False, SENT, 100.0, 0.0),
    ("hard bounce", ["RELAYED", "HARD_BOUNCE"], False, FAILED, 0.0, 100.0),
    ("soft bounce, retrying", ["RELAYED", "SOFT_BOUNCE"], False, SENT, 100.0, 0.0),
    ("soft bounce, retry succeeds", ["RELAYED", "SOFT_BOUNCE", "DELIVERED"], False, SENT, 100.0, 0.0),
    (
        "soft bounce, retries exhausted",
        ["RELAYED", "SOFT_BOUNCE", "RETRIES_EXHAUSTED"],
        False,
        FAILED,
        0.0,
        100.0,
    ),
    ("soft bounce at validity end", ["RELAYED", "SOFT_BOUNCE"], True, FAILED, 0.0, 100.0),
    ("delivered, then async hard bounce", ["RELAYED", "DELIVERED", "HARD_BOUNCE"], False, FAILED, 0.0, 100.0),
]
WITH_EFS = [
    ("relayed", ["RELAYED"], False, PENDING, 0.0, 0.0),
    ("delivered", ["RELAYED", "DELIVERED"], False, SENT, 100.0, 0.0),
    ("hard bounce", ["RELAYED", "HARD_BOUNCE"], False, FAILED, 0.0, 100.0),
    ("soft bounce, retrying", ["RELAYED", "SOFT_BOUNCE"], False, FAILED, 0.0, 100.0),
    ("soft bounce, retry succeeds", ["RELAYED", "SOFT_BOUNCE", "DELIVERED"], False, SENT, 100.0, 0.0),
    (
        "soft bounce, retries exhausted",
        ["RELAYED", "SOFT_BOUNCE", "RETRIES_EXHAUSTED"],
        False,
        FAILED,
        0.0,
        100.0,
    ),
    ("soft bounce at validity end", ["RELAYED", "SOFT_BOUNCE"], True, FAILED, 0.0, 100.0),
    ("delivered, then async hard bounce", ["RELAYED", "DELIVERED", "HARD_BOUNCE"], False, FAILED, 0.0, 100.0),
    ("relayed, validity over without news", ["RELAYED"], True, PENDING, 0.0, 0.0),
]


def _run(efs: bool, kinds: list[str], validity_over: bool) -> dict:
    events = [prepared("d", efs=efs, validity_end=VALIDITY_END)]
    events += [mta("d", "m1", kind, at=1_000 + i, attempt=i) for i, kind in enumerate(kinds)]
    if validity_over:  # another delivery's event moves the partition's watermark past the end
        events.append(mta("other", "x", "RELAYED", at=VALIDITY_END + 1))
    p = processor()
    p.apply(events)
    return {kpi["delivery_id"]: kpi for kpi in p.take_output().kpis}["d"]


ROWS = [(False, *row) for row in WITHOUT_EFS] + [(True, *row) for row in WITH_EFS]


@pytest.mark.parametrize(
    ("efs", "row", "kinds", "over", "status", "delivered", "bounces"),
    ROWS,
    ids=[f"{'efs' if r[0] else 'no efs'}: {r[1]}" for r in ROWS],
)
def test_seed_table_row(efs, row, kinds, over, status, delivered, bounces):
    kpi = _run(efs, kinds, over)
    assert (kpi["sent"], kpi["failed"], kpi["pending"]) == (status == SENT, status == FAILED, status == PENDING)
    assert kpi["delivered_pct"] == delivered
    assert kpi["bounces_errors_pct"] == bounces
    assert kpi["final"] == over


def test_without_efs_delivered_starts_at_100_and_falls_with_bounces():
    events = [prepared("d", efs=False)] + [mta("d", f"m{i}", "RELAYED") for i in range(4)]
    assert kpi_after(events)["delivered_pct"] == 100.0
    events.append(mta("d", "m0", "HARD_BOUNCE", reason="user_unknown"))
    assert kpi_after(events)["delivered_pct"] == 75.0


def test_with_efs_delivered_starts_at_0_and_rises_with_confirmations():
    events = [prepared("d", efs=True)] + [mta("d", f"m{i}", "RELAYED") for i in range(4)]
    assert kpi_after(events)["delivered_pct"] == 0.0
    events.append(mta("d", "m0", "DELIVERED"))
    assert kpi_after(events)["delivered_pct"] == 25.0


def test_ignored_and_complaint_change_no_status():
    assert message_status(16, efs=True, validity_over=False) is None  # IGNORED only
    kpi = kpi_after(
        [
            prepared("d", efs=True),
            mta("d", "m", "RELAYED"),
            mta("d", "m", "IGNORED"),
            mta("d", "m", "COMPLAINT"),
        ]
    )
    assert (kpi["pending"], kpi["complaints"]) == (1, 1)
