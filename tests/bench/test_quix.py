"""The Quix Streams baseline's state function (bench/quix.py) against the core and the ground truth, no broker."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from bench import run
from bench.quix import apply_event
from consumer.cli.workload import WorkloadSpec, generate, matches
from consumer.core.processor import PartitionProcessor
from consumer.delivery.view import StateView
from consumer.state.memory import MemoryStore


class DeliveryStore:
    """Quix's State as the function sees it: the keys of one record key (delivery)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get_bytes(self, key: bytes, default: bytes | None = None) -> bytes | None:
        return self.data.get(key, default)

    def set_bytes(self, key: bytes, value: bytes) -> None:
        self.data[key] = value


def run_baseline(events: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], int]:
    """The latest KPI record per delivery, and how many records were emitted."""
    stores: defaultdict[str, DeliveryStore] = defaultdict(DeliveryStore)
    latest: dict[str, dict[str, Any]] = {}
    emitted = 0
    for event in events:
        for kpi in apply_event(event, stores[event["delivery_id"]]):
            latest[kpi["delivery_id"]] = kpi
            emitted += 1
    return latest, emitted


def test_final_kpis_equal_the_ground_truth_and_the_core():
    workload = generate(WorkloadSpec(deliveries=6, messages=400, seed=3))
    events = workload.delivery_events + workload.mta_events  # the bench produces them in this order
    latest, emitted = run_baseline(events)
    core = PartitionProcessor(StateView(MemoryStore()))
    core.apply(events)
    expected_by_core = {kpi["delivery_id"]: kpi for kpi in core.take_output().kpis}
    for delivery_id, expected in workload.expected.items():
        assert matches(latest[delivery_id], expected) == []
        assert {**latest[delivery_id], "version": 0} == {**expected_by_core[delivery_id], "version": 0}
    duplicates = len(events) - len({e["event_id"] for e in events})
    assert emitted <= len(events) - duplicates  # a re-sent event changes nothing and emits nothing


def test_a_replayed_event_changes_nothing():
    workload = generate(WorkloadSpec(deliveries=2, messages=100, seed=4))
    events = workload.delivery_events + workload.mta_events
    once, _ = run_baseline(events)
    twice, _ = run_baseline(events + events)
    assert {d: {**k, "version": 0} for d, k in twice.items()} == {d: {**k, "version": 0} for d, k in once.items()}


def test_mta_events_before_their_prepared_give_the_same_kpis():
    """A PREPARED that switches EFS after messages were counted (as in a full bench run): the counters kept for
    the other EFS setting take over, as sendtrack's walk over the messages would recompute them."""
    workload = generate(WorkloadSpec(deliveries=4, messages=300, seed=5))  # EFS on for every other delivery
    events = workload.mta_events[:600] + workload.delivery_events + workload.mta_events[600:]
    latest, _ = run_baseline(events)
    core = PartitionProcessor(StateView(MemoryStore()))
    core.apply(events)
    by_core = {kpi["delivery_id"]: kpi for kpi in core.take_output().kpis}
    for delivery_id, expected in workload.expected.items():
        assert matches(latest[delivery_id], expected) == []
        assert {**latest[delivery_id], "version": 0} == {**by_core[delivery_id], "version": 0}


def test_the_report_quotes_the_ratio_or_says_why_quix_did_not_run():
    spec = {"events": 10, "deliveries": 1, "messages": 5}
    machine = {"cpus": 2, "cpu": "cpu", "versions": {"broker": "Apache Kafka 4.1.1"}}
    runs = [
        {"name": name, "events": 10, "seconds": 10 / rate, "events_per_s": rate, "correct": True}
        for name, rate in (("limit", 10.0), (run.SCENARIOS[0].name, 5.0), (run.QUIX_NAME, 2.5))
    ]
    result = {"started": "now", "machine": machine, "partitions": 1, "workload": spec}
    assert "sendtrack / Quix Streams (both RocksDB, exactly-once, one process): 2.00." in run.markdown(
        {**result, "throughput": runs}
    )
    skipped = run.markdown({**result, "throughput": runs[:2], "quix_skipped": "quixstreams is not installed"})
    assert f"{run.QUIX_NAME}: skipped, quixstreams is not installed." in skipped
