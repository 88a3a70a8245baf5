"""The checkpoint order over fake clients: produce -> flush -> commit -> persist -> count, and what a failed commit
leaves (nothing persisted, nothing counted, the inputs rewound to the last commit)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.ops.metrics import Tally
from consumer.runtime.settings import AT_LEAST_ONCE
from tests.delivery.test_intake import prepare, relayed
from tests.runtime.fakes import FakeConsumer, FakeProducer, LoopDriver


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


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    """Every step of a checkpoint, in the order it happened."""
    steps: list[str] = []
    commit = Tally.commit
    monkeypatch.setattr(Tally, "commit", lambda self: (steps.append("count"), commit(self))[1])
    return steps


def record(driver: LoopDriver, steps: list[str], partitions: int = 1) -> None:
    producer = driver.producer
    produce, flush, commit = producer.produce, producer.flush, producer.commit_transaction
    producer.produce = lambda topic, *args, **kw: (steps.append(f"produce {topic}"), produce(topic, *args, **kw))[1]
    producer.flush = lambda *args: (steps.append("flush"), flush(*args))[1]
    producer.commit_transaction = lambda *args: (steps.append("commit"), commit(*args))[1]
    for p in range(partitions):
        store = driver.stage.runtimes[p].store
        write = store.write
        store.write = lambda changes, offsets, write=write: (steps.append("persist"), write(changes, offsets))[1]


def test_a_checkpoint_produces_flushes_commits_then_persists_then_counts(calls):
    driver = LoopDriver(partitions=1)
    driver.poll([prepare(driver, "d"), relayed(driver, "d", "m1")])
    record(driver, calls)
    calls.clear()
    driver.checkpoint()
    t = driver.topics
    steps = [step for i, step in enumerate(calls) if i == 0 or calls[i - 1] != step]  # one per run of records
    assert steps == [f"produce {t.kpis}", f"produce {t.changelog}", "flush", "commit", "persist", "count"]
    assert driver.stage.runtimes[0].store.offsets()[t.mta_events] == 1 and applied(driver) == 1


def test_a_failed_commit_persists_nothing_counts_nothing_and_rewinds_to_the_last_commit(calls):
    driver = LoopDriver(partitions=1)
    driver.poll([prepare(driver, "d"), relayed(driver, "d", "m1")])
    record(driver, calls)

    def refused(*_args):
        calls.append("commit")
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "the coordinator did not answer"))

    driver.producer.commit_transaction = refused
    driver.checkpoint()
    assert "persist" not in calls and "count" not in calls and calls[-1] == "commit"
    assert_rewound_with_nothing_kept(driver)
    assert not driver.producer.open  # the transaction was aborted


def test_a_revoke_checkpoints_the_work_in_hand_then_gives_the_partition_up(calls):
    driver = LoopDriver(partitions=2, store="memory")  # a memory store outlives the revoke: it can be looked at
    driver.poll([prepare(driver, "d", partition=1), relayed(driver, "d", "m1", partition=1)])
    record(driver, calls, partitions=2)
    store = driver.stage.runtimes[1].store
    driver.runner._on_revoke(None, [TopicPartition(driver.topics.mta_events, 1)])
    assert calls.index("commit") < calls.index("persist")
    assert driver.committed_offsets()[driver.topics.mta_events, 1] == 1
    assert store.offsets()[driver.topics.mta_events] == 1
    assert set(driver.runner.works) == {0} and set(driver.stage.runtimes) == {0}


def test_a_lost_partition_is_dropped_without_a_commit(calls):
    driver = LoopDriver(partitions=2, store="memory")
    driver.poll([prepare(driver, "d", partition=1), relayed(driver, "d", "m1", partition=1)])
    record(driver, calls, partitions=2)
    store = driver.stage.runtimes[1].store
    driver.runner._on_lost(None, [TopicPartition(driver.topics.mta_events, 1)])
    assert "commit" not in calls and "persist" not in calls and not driver.producer.open  # aborted
    assert store.offsets() == {} and applied(driver) == 0
    assert set(driver.runner.works) == {0} and set(driver.stage.runtimes) == {0}


class PollingConsumer(FakeConsumer):
    """Answers polls from a queue of fetched records (more arrive with `arrive`) and keeps each poll's size and wait."""

    def __init__(self) -> None:
        super().__init__()
        self.polls: list[tuple[int, float]] = []
        self.fetched: list = []
        self._arriving: list[list] = []  # what comes in while a poll waits, one entry per wait

    def arrive(self, records: list) -> None:
        self._arriving.append(records)

    def consume(self, count: int, timeout: float) -> list:
        self.polls.append((count, timeout))
        if timeout > 0 and not self.fetched and self._arriving:
            self.fetched = list(self._arriving.pop(0))
        batch, self.fetched = self.fetched[:count], self.fetched[count:]
        return batch

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1) for tp in partitions]


def polling(monkeypatch, now: list[float]) -> tuple[LoopDriver, PollingConsumer, list]:
    """A driver whose checkpointer runs on the clock `now` (its interval, 1 s, starts at now[0]); the checkpoints it
    runs are recorded, not run."""
    monkeypatch.setattr("consumer.runtime.checkpoint.time.monotonic", lambda: now[0])
    driver = LoopDriver(partitions=1)
    consumer = PollingConsumer()
    driver.runner.attach(driver.producer, consumer)  # type: ignore[arg-type]
    checkpoints: list[float] = []
    monkeypatch.setattr(driver.runner, "checkpoint", lambda: checkpoints.append(now[0]))
    return driver, consumer, checkpoints


def test_a_poll_waits_no_longer_than_until_the_next_checkpoint_is_due(monkeypatch):
    now = [1_000.0]
    driver, consumer, checkpoints = polling(monkeypatch, now)
    for now[0] in (1_000.5, 1_000.95, 1_001.25):
        driver.runner.step(0.1)
    assert [timeout for count, timeout in consumer.polls if count == 1] == [0.1, pytest.approx(0.05), 0.0]
    assert checkpoints == [1_001.25]  # nothing in hand: only the poll that found it due ran one


def test_a_poll_takes_what_is_fetched_at_once_and_otherwise_waits_for_the_first_record_only(monkeypatch):
    driver, consumer, _ = polling(monkeypatch, [1_000.0])
    size = driver.settings.batch_size
    consumer.fetched = [prepare(driver, f"d{i}") for i in range(size + 2)]
    consumer.arrive([prepare(driver, f"e{i}") for i in range(3)])
    driver.runner.step(0.1)  # a full batch was there: no wait
    driver.runner.step(0.1)  # two were left: taken, no wait for more
    driver.runner.step(0.1)  # none: wait for one, then take what came with it
    assert consumer.polls == [(size, 0), (size, 0), (size, 0), (1, 0.1), (size - 1, 0)]
    assert driver.runner.works[0].consumed == {driver.topics.deliveries: size + 5}


def test_an_empty_poll_checkpoints_the_work_in_hand_at_once(monkeypatch):
    now = [1_000.0]
    driver, consumer, checkpoints = polling(monkeypatch, now)
    consumer.arrive([prepare(driver, "d")])
    now[0] = 1_000.1
    driver.runner.step(0.1)  # a record came: processed, and the interval is not over
    assert checkpoints == []
    now[0] = 1_000.2
    driver.runner.step(0.1)  # nothing came for a whole poll, with work in hand
    assert checkpoints == [1_000.2]
    driver.runner.works[0].consumed.clear()  # what the real checkpoint leaves
    now[0] = 1_000.3
    driver.runner.step(0.1)  # quiet, and nothing in hand: nothing to checkpoint before the interval is over
    assert checkpoints == [1_000.2]


def test_a_quiet_input_checkpoints_early_at_most_ten_times_an_interval(monkeypatch):
    now = [1_000.0]
    driver, consumer, checkpoints = polling(monkeypatch, now)
    consumer.arrive([prepare(driver, "d")])
    now[0] = 1_000.02
    driver.runner.step(0.1)  # a record, processed
    now[0] = 1_000.05
    driver.runner.step(0.1)  # quiet, work in hand, but within a tenth of the interval of the last checkpoint
    assert checkpoints == []
    now[0] = 1_000.1
    driver.runner.step(0.1)
    assert checkpoints == [1_000.1]
