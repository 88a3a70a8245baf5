"""The checkpoint over fake clients: what a failed commit leaves (nothing persisted, nothing counted, the inputs
rewound to the last commit)."""

from __future__ import annotations

from confluent_kafka import KafkaError

from consumer.runtime.settings import AT_LEAST_ONCE
from tests.delivery.test_intake import prepare, relayed
from tests.runtime.fakes import FakeProducer, LoopDriver


def applied(driver: LoopDriver) -> float:
    labels = {"topic": driver.topics.mta_events, "type": "RELAYED", "outcome": "applied"}
    return driver.service.metrics.registry.get_sample_value("sendtrack_events_total", labels) or 0.0


def failures(driver: LoopDriver) -> float:
    labels = {"stage": "delivery", "kind": "checkpoint_failed"}
    return driver.service.metrics.registry.get_sample_value("sendtrack_checkpoint_failures_total", labels) or 0.0


def at_least_once() -> LoopDriver:
    driver = LoopDriver(partitions=1, processing_guarantee=AT_LEAST_ONCE)
    driver.producer = FakeProducer(transactional=False)
    driver.runner.attach(driver.producer, driver.consumer)  # type: ignore[arg-type]
    return driver


def assert_rewound_with_nothing_kept(driver: LoopDriver) -> None:
    store = driver.stage.runtimes[0].store
    assert store.offsets() == {} and list(store.scan(b"")) == []  # nothing persisted
    assert applied(driver) == 0 and failures(driver) == 1  # nothing counted; the failure is
    assert {(tp.topic, tp.offset) for tp in driver.consumer.seeks} == {(t, -2) for t in driver.topics.inputs}


def test_an_at_least_once_commit_a_partition_refused_persists_nothing_and_rewinds():
    driver = at_least_once()
    driver.consumer.refuse = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
    driver.poll([prepare(driver, "d"), relayed(driver, "d", "m1")])
    driver.checkpoint()
    assert driver.consumer.commits  # asked, and refused for the partition
    assert_rewound_with_nothing_kept(driver)
