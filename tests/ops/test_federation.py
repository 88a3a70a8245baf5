"""The --workers parent's endpoint made from its workers' (ops/federation.py): real servers on loopback, no Kafka."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.ops.federation import Target, all_of, first_kpi, labelled
from consumer.ops.http import OpsServer, StatusSource
from consumer.ops.metrics import Metrics


def worker_metrics(events: int, lag: int) -> Metrics:
    metrics = Metrics()
    metrics.events.labels("mta.events", "DELIVERED", "applied").inc(events)
    metrics.consumer_lag.labels("mta.events", "0").set(lag)
    metrics.batch_seconds.labels("delivery").observe(0.01)
    return metrics


@pytest.fixture
def two_workers() -> Iterator[list[Target]]:
    """w0 ready and owning delivery d0; w1 not ready."""
    servers = [
        OpsServer(
            0,
            worker_metrics(3, 1).registry,
            StatusSource(lambda: (True, "delivery: 2 partitions"), _kpis("d0")),
            host="127.0.0.1",
        ),
        OpsServer(
            0, worker_metrics(4, 2).registry, StatusSource(lambda: (False, "rebalancing"), _kpis("")), host="127.0.0.1"
        ),
    ]
    for server in servers:
        server.start()
    try:
        yield [Target(f"w{k}", server.port) for k, server in enumerate(servers)]
    finally:
        for server in servers:
            server.stop()


def _kpis(owned: str):
    return lambda delivery_id: {"delivery_id": delivery_id} if delivery_id == owned else None


def test_each_workers_samples_carry_its_name_under_one_help_and_type_per_family():
    texts = [(f"w{k}", generate_latest(worker_metrics(3 + k, k).registry).decode()) for k in range(2)]
    merged = labelled(texts)
    names = [family.name for family in merged]
    assert len(names) == len(set(names))
    events = next(family for family in merged if family.name == "sendtrack_events")
    assert [(s.labels["worker"], s.value) for s in events.samples] == [("w0", 3.0), ("w1", 4.0)]
    batches = next(family for family in merged if family.name == "sendtrack_batch_processing_seconds")
    assert {s.labels["worker"] for s in batches.samples if s.name.endswith("_count")} == {"w0", "w1"}


def test_the_merged_text_is_valid_exposition_that_prometheus_client_reads_back():
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

    merged = labelled([(f"w{k}", generate_latest(worker_metrics(1, k).registry).decode()) for k in range(2)])

    class Fixed(Collector):
        def collect(self):
            return merged

    registry = CollectorRegistry()
    registry.register(Fixed())
    text = generate_latest(registry).decode()
    assert text.count("# TYPE sendtrack_events_total counter") == 1
    lags = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == "sendtrack_consumer_lag"]
    assert sorted((s.labels["worker"], s.value) for s in lags) == [("w0", 0.0), ("w1", 1.0)]


def test_ready_only_when_every_worker_is_naming_those_that_are_not(two_workers):
    ready, detail = all_of(two_workers, "/readyz")
    assert not ready and detail == "w1: rebalancing; w0: delivery: 2 partitions"
    assert all_of(two_workers[:1], "/readyz") == (True, "w0: delivery: 2 partitions")
    ready, detail = all_of([*two_workers[:1], Target("w2", None)], "/healthz")
    assert not ready and detail.startswith("w2: starting")


def test_a_worker_that_does_not_answer_is_named(two_workers):
    ready, detail = all_of([two_workers[0], Target("w9", 9)], "/readyz")  # nothing listens on port 9
    assert not ready and detail == "w9: not answering; w0: delivery: 2 partitions"


def test_a_delivery_is_answered_by_the_worker_that_owns_it(two_workers):
    assert first_kpi(list(reversed(two_workers)), "d0") == {"delivery_id": "d0"}
    assert first_kpi(two_workers, "nobody's") is None
