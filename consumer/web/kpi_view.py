"""Every instance's read_committed view of the compacted KPI topic: the latest record of each delivery.

`KpiView` feeds a `consumer.web.table.KpiTable` (what pages and server-sent events read) from the topic on
a background thread. A KPI record's partition is the partition of
the delivery's input, hence of the instance that owns its message-level state.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_KPI
from consumer.kafka.access import reader_denial
from consumer.kafka.config import reader_config
from consumer.ops import logging as logs
from consumer.web.table import KpiTable


class KpiView(KpiTable):
    """A KpiTable that follows the KPI topic from its beginning, committed records only."""

    def __init__(
        self,
        base: Mapping[str, Any],
        topic: str,
        group: str = "sendtrack-web",
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__()
        self.skipped = 0  # records that could not be decoded
        self.loaded = threading.Event()  # set once the topic was read to its end: a readiness signal
        self._config = reader_config(base, group)
        self._topic = topic
        self._codec = AvroCodec.named(DELIVERY_KPI)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kpi-view", daemon=True)
        self._log = logs.get("sendtrack.web.kpi_view")
        self._skipped = Counter(
            "sendtrack_web_kpi_records_skipped",
            "KPI records the Deployment view could not decode",
            registry=registry,
        )

    def start(self) -> KpiView:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        consumer = Consumer(self._config)
        try:
            remaining = self._assign_all(consumer)
            while remaining is not None and not self._stopping.is_set():
                for msg in self._consume(consumer):
                    if self._stopping.is_set():  # denied: the rest of the batch would say it again
                        break
                    self._take(msg, remaining)
                if not remaining:
                    self.loaded.set()
        finally:
            consumer.close()

    def _assign_all(self, consumer: Consumer) -> set[int] | None:
        """Every partition from the beginning, once the topic exists (the service may create it); None if stopped."""
        while not self._stopping.is_set():
            try:
                topic = consumer.list_topics(self._topic, timeout=5).topics.get(self._topic)
            except KafkaException as exc:
                self._log.warning("kpi_view_metadata_error", topic=self._topic, error=str(exc))
                topic = None
            if topic is not None and self._denied(topic.error):
                return None
            if topic is not None and topic.error is None and topic.partitions:
                consumer.assign([TopicPartition(self._topic, p, 0) for p in topic.partitions])
                return set(topic.partitions)
            self._stopping.wait(1.0)
        return None

    def _consume(self, consumer: Consumer) -> list[Any]:
        try:
            return consumer.consume(500, 0.2)
        except KafkaException as exc:  # librdkafka retries by itself: say so and go on
            self._log.warning("kpi_view_read_error", topic=self._topic, error=str(exc))
            self._stopping.wait(1.0)
            return []

    def _denied(self, error: KafkaError | None) -> bool:
        """A missing permission stops the view's reading, with one line naming it: retrying cannot help."""
        denied = reader_denial(error, self._topic, self._config["group.id"])
        if denied is not None:
            self._log.error("kafka_denied", error=str(denied))
            self._stopping.set()
        return denied is not None

    def _take(self, msg: Any, remaining: set[int]) -> None:
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                remaining.discard(msg.partition())
            elif not self._denied(error):
                self._log.warning("kpi_view_read_error", topic=self._topic, error=str(error))
            return
        if msg.value() is None:  # a tombstone: the delivery left the compacted topic
            if msg.key():
                self.remove(msg.key().decode(errors="replace"))
            return
        try:
            self.apply(msg.partition(), self._codec.decode(msg.value()))
        except Exception as exc:  # any bad record is skipped and counted; the view goes on
            self.skipped += 1
            self._skipped.inc()
            self._log.warning("kpi_record_skipped", partition=msg.partition(), offset=msg.offset(), error=str(exc))
