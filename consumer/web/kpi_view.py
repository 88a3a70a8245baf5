"""Every instance's read_committed view of the compacted KPI topic: the latest record of each delivery.

`KpiTable` is the thread-safe table with change notification (what pages and server-sent events read);
`KpiView` feeds one from the topic on a background thread. A KPI record's partition is the partition of
the delivery's input, hence of the instance that owns its message-level state.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_KPI
from consumer.kafka.access import reader_denial
from consumer.kafka.config import reader_config
from consumer.ops import logging as logs
from consumer.ops.exchange import count

Kpi = dict[str, Any]  # a DeliveryKpi record, field names of schemas/delivery_kpi.avsc


@dataclass(frozen=True)
class KpiEntry:
    kpi: Kpi
    partition: int
    seq: int  # the table's change counter when this record arrived


class KpiTable:
    """Latest KPI per delivery: the highest version wins, at equal versions the later record.

    Changes are numbered; a reader asks for the changes after a cursor `"<epoch>:<seq>"`. The epoch is
    random per table, so a cursor from another instance (or before a restart) means "send everything".
    """

    def __init__(self) -> None:
        self._entries: dict[str, KpiEntry] = {}
        self._seq = 0
        self._epoch = secrets.token_hex(4)
        self._changed = threading.Condition()

    def apply(self, partition: int, kpi: Kpi) -> bool:
        """Keep the record if it is the delivery's latest; True when it changed the table."""
        with self._changed:
            current = self._entries.get(kpi["delivery_id"])
            if current is not None and (kpi["version"] < current.kpi["version"] or kpi == current.kpi):
                return False
            self._seq += 1
            self._entries[kpi["delivery_id"]] = KpiEntry(kpi, partition, self._seq)
            self._changed.notify_all()
            return True

    def remove(self, delivery_id: str) -> None:
        """A tombstone: the delivery is gone from the compacted topic."""
        with self._changed:
            if self._entries.pop(delivery_id, None) is not None:
                self._seq += 1
                self._changed.notify_all()

    def get(self, delivery_id: str) -> KpiEntry | None:
        with self._changed:
            return self._entries.get(delivery_id)

    def snapshot(self) -> tuple[str, list[KpiEntry]]:
        """A cursor and every entry, by delivery id, taken together."""
        with self._changed:
            return self._cursor(), sorted(self._entries.values(), key=lambda e: e.kpi["delivery_id"])

    def changes(self, cursor: str | None, timeout_s: float) -> tuple[str, list[KpiEntry]]:
        """The entries changed after the cursor, waiting up to timeout_s for one; a foreign cursor gets all."""
        since = self._seq_of(cursor)
        with self._changed:
            if since is not None:
                self._changed.wait_for(lambda: self._seq > since, timeout_s)
            fresh = [e for e in self._entries.values() if since is None or e.seq > since]
            return self._cursor(), sorted(fresh, key=lambda e: e.seq)

    def cursor(self) -> str:
        """Where the table is now: changes() after it are the ones still to come."""
        with self._changed:
            return self._cursor()

    def _cursor(self) -> str:
        return f"{self._epoch}:{self._seq}"

    def _seq_of(self, cursor: str | None) -> int | None:
        epoch, _, seq = (cursor or "").partition(":")
        number = count(seq)
        return number if epoch == self._epoch and number is not None and number <= self._seq else None


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
