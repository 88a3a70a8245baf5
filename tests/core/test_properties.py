"""Invariants over random event histories: order, duplicates and batching never change the KPIs."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.core.events import MTA_EVENT_TYPES
from consumer.core.processor import PartitionProcessor
from consumer.delivery.view import StateView
from consumer.state.memory import MemoryStore

DELIVERIES = ("d1", "d2")
REASONS = (None, "mailbox_full", "user_unknown", "unreachable")


@st.composite
def mta_events(draw: st.DrawFn, index: int) -> dict[str, Any]:
    return {
        "event_id": f"mta-{index}",
        "delivery_id": draw(st.sampled_from(DELIVERIES)),
        "message_id": draw(st.sampled_from(("m1", "m2", "m3", "m4"))),
        "type": draw(st.sampled_from(MTA_EVENT_TYPES)),
        "occurred_at": draw(st.integers(0, 200)),
        "attempt": draw(st.integers(0, 3)),
        "reason": draw(st.sampled_from(REASONS)),
        "url": None,
        "address": None,
    }


@st.composite
def delivery_events(draw: st.DrawFn, delivery_id: str) -> list[dict[str, Any]]:
    events = []
    if draw(st.booleans()):
        events.append(
            {
                "event_id": f"{delivery_id}-prepared",
                "delivery_id": delivery_id,
                "type": "PREPARED",
                "occurred_at": draw(st.integers(0, 200)),
                "to_deliver": draw(st.integers(0, 6)),
                "efs": draw(st.sampled_from((None, True, False))),
                "validity_end": draw(st.sampled_from((None, 50, 120, 190))),
                "confirmation_required": draw(st.booleans()),
            }
        )
    for i, roles in enumerate(draw(st.lists(st.sampled_from(([], ["start_deliveries"])), max_size=2))):
        events.append(
            {
                "event_id": f"{delivery_id}-confirmed-{i}",
                "delivery_id": delivery_id,
                "type": "CONFIRMED",
                "occurred_at": draw(st.integers(0, 200)),
                "actor": "someone",
                "actor_roles": roles,
            }
        )
    return events


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(0, 40))
    events = [draw(mta_events(i)) for i in range(count)]
    for delivery_id in DELIVERIES:
        events += draw(delivery_events(delivery_id))
    return events


def run(
    events: list[dict[str, Any]], batch_sizes: list[int], efs_default: bool = False
) -> tuple[dict, PartitionProcessor]:
    """Apply in batches, checkpointing between them; the latest KPI per delivery, version aside."""
    store = MemoryStore()
    processor = PartitionProcessor(StateView(store), efs_default)
    latest: dict[str, dict] = {}
    start, sizes = 0, iter(batch_sizes)
    while start < len(events):
        size = next(sizes, len(events)) or 1
        processor.apply(events[start : start + size])
        start += size
        for kpi in processor.take_output().kpis:
            latest[kpi["delivery_id"]] = {k: v for k, v in kpi.items() if k != "version"}
        store.write(processor._state.stage(), {})
    return latest, processor


batchings = st.lists(st.integers(1, 10), max_size=10)


@settings(max_examples=300, deadline=None)
@given(histories(), st.randoms(use_true_random=False), batchings, batchings)
def test_kpis_do_not_depend_on_order_or_batching(events, rnd, batches_a, batches_b):
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert run(events, batches_a)[0] == run(shuffled, batches_b)[0]


@settings(max_examples=300, deadline=None)
@given(histories(), st.data(), batchings)
def test_duplicates_change_nothing(events, data, batches):
    duplicated = list(events)
    for event in data.draw(st.lists(st.sampled_from(events), max_size=15)) if events else []:
        duplicated.insert(data.draw(st.integers(0, len(duplicated))), dict(event))
    assert run(events, [])[0] == run(duplicated, batches)[0]


@settings(max_examples=300, deadline=None)
@given(histories(), batchings, st.booleans())
def test_recompute_matches_and_counts_add_up(events, batches, efs_default):
    latest, processor = run(events, batches, efs_default)
    for delivery_id in processor.delivery_ids():
        delivery = processor.delivery(delivery_id)
        assert processor.recompute(delivery_id) == delivery.counters
        kpi = latest[delivery_id]
        assert kpi["sent"] + kpi["failed"] + kpi["pending"] == kpi["processed"]
        assert sum(kpi["failures_by_reason"].values()) == kpi["failed"]
        assert kpi["opens_unique"] <= kpi["sent"] and kpi["clicks_unique"] <= kpi["opens_unique"]


@settings(max_examples=200, deadline=None)
@given(histories(), batchings)
def test_sending_logs_replay_to_the_final_statuses(events, batches):
    store = MemoryStore()
    processor = PartitionProcessor(StateView(store))
    last_status: dict[tuple[str, str], str] = {}
    start, sizes = 0, iter(batches)
    while start < len(events):
        size = next(sizes, len(events))
        processor.apply(events[start : start + size])
        start += size
        for log in processor.take_output().sending_logs:
            key = (log["delivery_id"], log["message_id"])
            assert log["old_status"] == last_status.get(key)  # the logs form an unbroken chain
            last_status[key] = log["new_status"]
        store.write(processor._state.stage(), {})
    for delivery_id in processor.delivery_ids():
        counters = processor.delivery(delivery_id).counters
        statuses = [s for (d, _), s in last_status.items() if d == delivery_id]
        assert (counters.sent, counters.failed, counters.pending) == (
            statuses.count("SENT"),
            statuses.count("FAILED"),
            statuses.count("PENDING"),
        )


@settings(max_examples=300, deadline=None)
@given(histories(), st.data(), batchings)
def test_confirmation_ids_equal_to_engagement_ids_change_nothing(events, data, batches):
    # Confirmations and MTA events come from different topics whose producers choose ids independently:
    # a confirmation may carry an open's or a click's id, and neither may hide the other.
    renamed = [dict(event) for event in events]
    for delivery_id in DELIVERIES:
        engagements = [
            e["event_id"] for e in events if e["delivery_id"] == delivery_id and e["type"] in ("OPEN", "CLICK")
        ]
        confirmations = [
            e for e in renamed if "message_id" not in e and e["delivery_id"] == delivery_id and e["type"] == "CONFIRMED"
        ]
        ids = data.draw(st.permutations(engagements))  # distinct: confirmations must keep distinct ids
        for confirmation, event_id in zip(confirmations, ids, strict=False):
            confirmation["event_id"] = event_id
    assert run(renamed, batches)[0] == run(events, batches)[0]
