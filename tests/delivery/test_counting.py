"""Every counter counts what was committed, once: a checkpoint that changed nothing still counts its events, and
what a rewind aborted is not counted until it is redone and committed."""

from __future__ import annotations

from consumer.ops.metrics import Metrics, Tally
from tests.delivery.test_intake import prepare, relayed
from tests.runtime.fakes import LoopDriver


def value(driver: LoopDriver, name: str, **labels: str) -> float:
    return driver.service.metrics.registry.get_sample_value(name, labels) or 0.0


def events(driver: LoopDriver, kind: str, outcome: str) -> float:
    labels = {"topic": driver.topics.mta_events, "type": kind, "outcome": outcome}
    return value(driver, "sendtrack_events_total", **labels)


def test_the_events_of_a_checkpoint_that_changed_nothing_are_counted() -> None:
    driver = LoopDriver()
    first = [prepare(driver, "d"), relayed(driver, "d", "m1", event_id="e1")]
    driver.poll(first)
    driver.checkpoint()
    driver.poll([relayed(driver, "d", "m1", event_id="e1") for _ in range(3)])  # duplicates: no state change
    driver.checkpoint()
    assert events(driver, "RELAYED", "applied") == 1
    assert events(driver, "RELAYED", "duplicate") == 3


def test_what_a_rewind_aborted_is_counted_once_when_it_is_redone() -> None:
    driver = LoopDriver()
    poll = [prepare(driver, "d"), relayed(driver, "d", "m1"), driver.message(driver.topics.mta_events, 0, b"d", b"?")]
    driver.poll(poll)  # a sending log and a dead letter go into the open transaction
    assert driver.producer.open
    driver.runner.recover("checkpoint_failed", "for the test")  # aborted: nothing of it happened
    for name in ("sendtrack_sending_log_records_published_total", "sendtrack_dlq_records_total"):
        labels = {"reason": "decode_error"} if "dlq" in name else {}
        assert value(driver, name, **labels) == 0, name
    assert events(driver, "RELAYED", "applied") == 0

    driver.poll(poll)  # the consumer's seek brings the same records again
    driver.checkpoint()
    assert value(driver, "sendtrack_sending_log_records_published_total") == 1
    assert value(driver, "sendtrack_dlq_records_total", reason="decode_error") == 1
    assert events(driver, "RELAYED", "applied") == 1
    assert value(driver, "sendtrack_kpi_records_published_total") == 1


def test_a_tally_counts_on_commit_only() -> None:
    metrics = Metrics()
    tally = Tally()
    tally.add(metrics.anomalies, 2)
    tally.add(metrics.anomalies, 0)
    tally.add(metrics.dlq.labels("x"))
    assert tally and metrics.registry.get_sample_value("sendtrack_anomalies_total") == 0
    tally.commit()
    assert not tally
    assert metrics.registry.get_sample_value("sendtrack_anomalies_total") == 2
    assert metrics.registry.get_sample_value("sendtrack_dlq_records_total", {"reason": "x"}) == 1
