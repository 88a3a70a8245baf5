"""The checkpoint: the one place that orders produce, commit and persist.

1. take each partition's output: complete KPI snapshots (one per changed delivery), sending
   logs, and the encoded state changes;
2. produce them (outputs, then changelog) and wait for every acknowledgement;
3. commit the consumed input offsets: inside the transaction (exactly-once) or after the
   flush (at-least-once);
4. only then write the state and the offsets it reflects to the local store, in one batch.

A crash at any step leaves the store behind the changelog, never ahead; restore replays the tail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_KPI, SENDING_LOG
from consumer.core.events import DELIVERY_EVENT_TYPES
from consumer.core.processor import Output
from consumer.kafka.producer import OutputProducer
from consumer.kafka.topics import Topics
from consumer.ops.metrics import Metrics
from consumer.service.partition import PartitionRuntime
from consumer.state.changelog import CHANGELOG_OFFSET

PublishedHook = Callable[[list[dict[str, Any]]], None]
Beat = Callable[[str], None]


def _no_beat(_step: str) -> None:
    return None


class _NextOffset:
    """Learns, from the last changelog record's delivery report, where the changelog continues."""

    def __init__(self) -> None:
        self.value: int | None = None

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is None:  # the producer records failures itself
            self.value = message.offset() + 1


class Checkpointer:
    def __init__(
        self,
        producer: OutputProducer,
        consumer: Consumer,
        topics: Topics,
        metrics: Metrics,
        interval_s: float,
        on_published: PublishedHook,
        log: Any,
        timeout_s: float = 30.0,
    ) -> None:
        self._log = log
        self.producer = producer  # the service replaces it after a fatal producer error
        self._consumer = consumer
        self._topics = topics
        self._metrics = metrics
        self._interval_s = interval_s
        self._on_published = on_published
        self._timeout_s = timeout_s
        self._kpi_codec = AvroCodec.named(DELIVERY_KPI)
        self._log_codec = AvroCodec.named(SENDING_LOG)
        self._last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last >= self._interval_s

    def run(self, runtimes: Iterable[PartitionRuntime], now_ms: int | None, beat: Beat = _no_beat) -> None:
        """Checkpoint every runtime (moving its clock to now_ms first, if given); raises KafkaException if the
        outputs or the commit failed. beat(step) tells the watchdog which step is under way."""
        started = time.perf_counter()
        self._last = time.monotonic()
        staged = []
        published: list[dict[str, Any]] = []
        for runtime in runtimes:
            if now_ms is not None:
                runtime.processor.advance_clock(now_ms)
            out = runtime.processor.take_output()
            changes = runtime.view.stage()
            if not (changes or runtime.consumed or out.kpis or out.sending_logs):
                continue
            self._produce_outputs(runtime.partition, out)
            staged.append((runtime, changes, self._produce_changelog(runtime.partition, changes), out))
            published += out.kpis
        if not staged:
            return
        offsets = [TopicPartition(t, rt.partition, o) for rt, *_ in staged for t, o in rt.consumed.items()]
        beat("checkpoint_flush")
        self.producer.flush(self._timeout_s)
        beat("checkpoint_commit")
        if self.producer.transactional:
            self.producer.commit_transaction(offsets, self._consumer.consumer_group_metadata(), self._timeout_s)
        elif offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        beat("checkpoint_persist")
        for runtime, changes, next_changelog, out in staged:
            offsets_now = dict(runtime.consumed)
            if next_changelog.value is not None:
                offsets_now[CHANGELOG_OFFSET] = next_changelog.value
            runtime.committed.update(runtime.consumed)
            runtime.store.write(changes, offsets_now)
            runtime.consumed.clear()
            self._count(out)
        self._on_published(published)
        seconds = time.perf_counter() - started
        self._metrics.checkpoint_seconds.observe(seconds)
        if seconds > self._interval_s / 4:  # it delays every KPI behind it: worth a line
            self._log.warning(
                "slow_checkpoint",
                seconds=round(seconds, 3),
                partitions=len(staged),
                changelog_records=sum(len(changes) for _, changes, _, _ in staged),
            )

    def produce_sending_logs(self, runtime: PartitionRuntime) -> None:
        """Send the status changes as they happen, into the open transaction: the checkpoint then only has
        the KPIs and the changelog left to produce, which keeps it, and the event-to-KPI latency, short."""
        logs = runtime.processor.take_sending_logs()
        produce, encode, topic = self.producer.produce, self._log_codec.encode, self._topics.sending_logs
        for log in logs:
            produce(topic, encode(log), log["delivery_id"].encode(), runtime.partition)
        self._metrics.sending_logs_published.inc(len(logs))

    def _produce_outputs(self, partition: int, out: Output) -> None:
        produce = self.producer.produce
        for kpi in out.kpis:
            key = kpi["delivery_id"].encode()
            produce(self._topics.kpis, self._kpi_codec.encode(kpi), key, partition)
        encode_log = self._log_codec.encode
        for log in out.sending_logs:  # those of the validity end and of compute-stats, made at the checkpoint
            produce(self._topics.sending_logs, encode_log(log), log["delivery_id"].encode(), partition)

    def _produce_changelog(self, partition: int, changes: dict[bytes, bytes | None]) -> _NextOffset:
        next_offset = _NextOffset()
        produce, topic = self.producer.produce, self._topics.changelog
        last = len(changes) - 1
        for i, (key, value) in enumerate(changes.items()):
            produce(topic, value, key, partition, on_delivery=next_offset if i == last else None)
        return next_offset

    def _count(self, out: Output) -> None:
        m = self._metrics
        for (kind, outcome), count in out.outcomes.items():
            topic = self._topics.deliveries if kind in DELIVERY_EVENT_TYPES else self._topics.mta_events
            m.events.labels(topic, kind, outcome).inc(count)
        for (old, new, efs), count in out.transitions.items():
            m.transitions.labels(old or "NONE", new, str(efs).lower()).inc(count)
        for rejection in out.rejections:
            m.rejected_confirmations.labels(rejection.reason).inc()
            self._log.warning("confirmation_rejected", **rejection._asdict())
        if out.anomalies:
            m.anomalies.inc(out.anomalies)
        m.kpis_published.inc(len(out.kpis))
        m.sending_logs_published.inc(len(out.sending_logs))
