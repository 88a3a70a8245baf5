"""The service: wires Kafka, state, core and ops together and runs the poll loop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.codec.avro import AvroCodec
from consumer.codec.errors import FieldError, InvalidEvent
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT
from consumer.codec.validation import check_event
from consumer.core.events import Event
from consumer.core.processor import kpi_record
from consumer.kafka import admin as topic_admin
from consumer.kafka import config as kafka_config
from consumer.kafka.producer import OutputProducer
from consumer.ops import logging as logs
from consumer.ops.http import OpsServer, StatusSource
from consumer.ops.metrics import Metrics
from consumer.service.checkpoint import Checkpointer
from consumer.service.partition import PartitionRuntime, StoreFactory
from consumer.service.recovery import ChangelogMismatch, RestoreResult, restore
from consumer.service.settings import Settings
from consumer.state.store import PartitionStore

COMPUTE_STATS = "compute-stats"
Clock = Callable[[], float]  # seconds since the epoch


class Service:
    def __init__(self, settings: Settings, clock: Clock = time.time, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._log = logs.get("sendtrack.service")
        self._stores = StoreFactory(settings.store, settings.state_dir, settings.group_id)
        self._runtimes: dict[int, PartitionRuntime] = {}
        self._kpis: dict[str, dict[str, Any]] = {}  # last published KPI per owned delivery, for HTTP
        self._stopping = threading.Event()
        self._joined = False
        self._restoring = False
        topics = settings.topics
        self._codecs = {
            topics.deliveries: AvroCodec.named(DELIVERY_EVENT),
            topics.mta_events: AvroCodec.named(MTA_EVENT),
        }
        self._http: OpsServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        base = kafka_config.base_config(s.bootstrap_servers, s.security)
        self._log.info(
            "starting",
            config=kafka_config.redacted(base),
            group_id=s.group_id,
            store=s.store,
            guarantee=s.processing_guarantee,
            instance_id=s.instance_id,
        )
        admin = AdminClient(base)
        if s.create_topics:
            created = topic_admin.ensure_topics(admin, s.topics, s.partitions)
            if created:
                self._log.info("topics_created", topics=created, partitions=s.partitions)
        topic_admin.check_copartitioned(admin, s.topics)
        self._start_http()
        self._producer = OutputProducer(kafka_config.producer_config(base, s.transactional_id))
        consumer_config = kafka_config.consumer_config(base, s.group_id, s.session_timeout_ms)
        self._consumer = Consumer({**consumer_config, "stats_cb": self._on_stats})
        self._reader = Consumer(kafka_config.reader_config(base, f"{s.group_id}.restore", reset="error"))
        self._checkpointer = Checkpointer(
            self._producer, self._consumer, s.topics, self.metrics, s.commit_interval_s, self._on_published, self._log
        )
        self._install_signal_handlers()
        self._consumer.subscribe(
            list(s.topics.inputs), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        self._stopping.set()

    def _loop(self) -> None:
        consume, batch_size = self._consumer.consume, self.settings.batch_size
        while not self._stopping.is_set():
            messages = consume(batch_size, 0.1)
            if messages:
                self._process(messages)
            if self._checkpointer.due():
                self._checkpoint()
            self._producer.poll()

    def _shutdown(self) -> None:
        self._log.info("stopping")
        deadline = threading.Timer(self.settings.grace_period_s, self._grace_exceeded)
        deadline.daemon = True
        deadline.start()
        try:
            self._checkpoint()
            self._consumer.close()  # leaves the group; the revoke callback checkpoints and closes stores
            self._reader.close()
            self._producer.close(self.settings.grace_period_s)
        finally:
            deadline.cancel()
            if self._http:
                self._http.stop()
        self._log.info("stopped")

    def _grace_exceeded(self) -> None:
        self._log.error("grace_period_exceeded", seconds=self.settings.grace_period_s)
        os._exit(3)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    # -- processing ----------------------------------------------------------------------------------------
    def _process(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        batches: dict[int, list[Event]] = defaultdict(list)
        control = self.settings.topics.control
        for msg in messages:
            error = msg.error()
            if error is not None:
                self._on_consume_error(error)
                continue
            topic, partition = msg.topic(), msg.partition()
            runtime = self._runtimes.get(partition)
            if runtime is None:  # revoked meanwhile; the owner will read it from the committed offset
                continue
            try:
                if topic == control:
                    self._apply(runtime, batches.pop(partition, None))
                    self._control(runtime, msg)
                else:
                    batches[partition].append(check_event(self._codecs[topic].decode(msg.value()), msg.key()))
            except InvalidEvent as exc:
                self._dead_letter(msg, exc)
            runtime.consumed[topic] = msg.offset() + 1
        now = self._clock()
        for partition, events in batches.items():
            runtime = self._runtimes[partition]
            self._apply(runtime, events)
            self._checkpointer.produce_sending_logs(runtime)
            self.metrics.event_age.observe(max(0.0, now - events[-1]["occurred_at"] / 1000))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    @staticmethod
    def _apply(runtime: PartitionRuntime, events: list[Event] | None) -> None:
        if events:
            runtime.processor.apply(events)

    def _control(self, runtime: PartitionRuntime, msg: Message) -> None:
        try:
            command = json.loads(msg.value() or b"")
        except ValueError:
            raise FieldError("value", "a control command must be a JSON object") from None
        if not isinstance(command, dict) or command.get("command") != COMPUTE_STATS:
            raise FieldError("command", f"unknown control command; expected {{'command': '{COMPUTE_STATS}', ...}}")
        delivery_id = command.get("delivery_id")
        if not isinstance(delivery_id, str) or (msg.key() or b"") != delivery_id.encode():
            raise FieldError("delivery_id", "must be a string equal to the record key")
        matched = runtime.processor.compute_stats(delivery_id)
        if matched is None:
            self._log.warning("compute_stats_unknown_delivery", delivery_id=delivery_id, partition=runtime.partition)
        elif not matched:
            self.metrics.stats_mismatches.labels("command").inc()
            self._log.error("compute_stats_mismatch", delivery_id=delivery_id, partition=runtime.partition)
        else:
            self._log.info("compute_stats_matched", delivery_id=delivery_id, partition=runtime.partition)

    def _dead_letter(self, msg: Message, exc: InvalidEvent) -> None:
        headers = [
            *list(msg.headers() or []),
            ("sendtrack.error.code", exc.code.encode()),
            ("sendtrack.error.field", exc.field.encode()),
            ("sendtrack.error.message", str(exc).encode()),
            ("sendtrack.source.topic", msg.topic().encode()),
            ("sendtrack.source.partition", str(msg.partition()).encode()),
            ("sendtrack.source.offset", str(msg.offset()).encode()),
        ]
        # Part of the checkpoint's transaction (or flushed before its commit): acknowledged before the offset counts.
        self._producer.produce(self.settings.topics.dlq, msg.value(), msg.key(), msg.partition(), headers=headers)
        self.metrics.dlq.labels(exc.code).inc()
        self._log.warning(
            "dead_lettered",
            code=exc.code,
            field=exc.field,
            error=str(exc),
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
        )

    def _on_consume_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        self._log.warning("consume_error", error=str(error))

    # -- checkpoint ------------------------------------------------------------------------------------------
    def _checkpoint(self, advance_clock: bool = True) -> None:
        now_ms = int(self._clock() * 1000) if advance_clock else None
        try:
            self._checkpointer.run(list(self._runtimes.values()), now_ms)
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is not None and error.fatal():
                self.metrics.checkpoint_failures.labels("fatal").inc()
                raise
            self.metrics.checkpoint_failures.labels("rewound").inc()
            self._log.error("checkpoint_failed", error=str(exc))
            self._rewind()

    def _rewind(self) -> None:
        """Abort the outputs and go back to the last committed offsets and state."""
        self._producer.abort_transaction(self.settings.grace_period_s)
        assigned = [TopicPartition(t, p) for p in self._runtimes for t in self.settings.topics.inputs]
        for runtime in self._runtimes.values():
            runtime.reset()
        for tp in self._consumer.committed(assigned, timeout=30):
            self._consumer.seek(
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
            )

    def _on_published(self, kpis: list[dict[str, Any]]) -> None:
        for kpi in kpis:
            self._kpis[kpi["delivery_id"]] = kpi

    # -- rebalance ------------------------------------------------------------------------------------------
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._joined = True
        self.metrics.rebalances.labels("assign").inc()
        self._restoring = True
        try:
            new = sorted({tp.partition for tp in partitions} - set(self._runtimes))
            self._runtimes.update(self._open_partitions(new))
        finally:
            self._restoring = False
        self.metrics.assigned_partitions.set(len(self._runtimes))
        self._log.info("assigned", partitions=sorted(self._runtimes))

    def _open_partitions(self, partitions: list[int]) -> dict[int, PartitionRuntime]:
        """Open the stores, bring them up to the changelog's end, and repair what the replay touched."""
        stores = {partition: self._stores.open(partition) for partition in partitions}
        while True:
            try:
                results = restore(stores, self._reader, self.settings.topics.changelog)
                break
            except ChangelogMismatch as exc:
                self._log.warning("state_discarded", partition=exc.partition, reason=str(exc))
                stores[exc.partition] = self._stores.discard(exc.partition, stores[exc.partition])
        return {p: self._runtime_after_restore(p, stores[p], results[p]) for p in partitions}

    def _runtime_after_restore(self, partition: int, store: PartitionStore, result: RestoreResult) -> PartitionRuntime:
        self.metrics.restore_records.inc(result.records)
        self.metrics.restore_seconds.observe(result.seconds)
        runtime = PartitionRuntime(partition, store, self.settings.efs_default)
        for delivery_id in sorted(result.touched):  # replayed records are made consistent by a recompute
            if runtime.processor.compute_stats(delivery_id, publish=False) is False:
                self.metrics.stats_mismatches.labels("restore").inc()
                self._log.warning("restore_repaired_counters", delivery_id=delivery_id, partition=partition)
        for delivery_id in runtime.processor.delivery_ids():
            self._kpis[delivery_id] = kpi_record(runtime.processor.delivery(delivery_id))
        self._log.info("restored", partition=partition, records=result.records, seconds=round(result.seconds, 3))
        return runtime

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("revoke").inc()
        self._joined = False  # until the next assignment: a rebalance is under way
        # Finish and commit the work in hand while the partitions are still ours. While closing, the work was
        # committed just before and the group is being left: no new time-driven output (the next owner makes it).
        self._checkpoint(advance_clock=not self._stopping.is_set())
        self._close_partitions({tp.partition for tp in partitions})

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Someone else may own them already: committing could overwrite their progress, so drop everything.
        self.metrics.rebalances.labels("lost").inc()
        self._joined = False
        self._log.warning("partitions_lost", partitions=sorted({tp.partition for tp in partitions}))
        self._producer.abort_transaction(self.settings.grace_period_s)
        for runtime in self._runtimes.values():
            runtime.reset()
        self._close_partitions({tp.partition for tp in partitions})

    def _close_partitions(self, lost: set[int]) -> None:
        for partition in sorted(lost & set(self._runtimes)):
            runtime = self._runtimes.pop(partition)
            for delivery_id in runtime.processor.delivery_ids():
                self._kpis.pop(delivery_id, None)
            self._stores.release(runtime.store)
            for topic in self.settings.topics.inputs:  # the new owner reports this partition's lag now
                with contextlib.suppress(KeyError):
                    self.metrics.consumer_lag.remove(topic, str(partition))
        self.metrics.assigned_partitions.set(len(self._runtimes))

    # -- observation -----------------------------------------------------------------------------------------
    def _start_http(self) -> None:
        if self.settings.http_port is None:
            return
        source = StatusSource(ready=self.readiness, delivery_kpi=self._kpis.get)
        self._http = OpsServer(self.settings.http_port, self.metrics.registry, source).start()
        self._log.info("http_listening", port=self._http.port)

    def published_kpis(self) -> dict[str, dict[str, Any]]:
        """The last published KPI of each delivery this instance owns."""
        return dict(self._kpis)

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None

    def readiness(self) -> tuple[bool, str]:
        if not self._joined:
            return False, "joining the consumer group"
        if self._restoring:
            return False, "restoring state"
        if self._stopping.is_set():
            return False, "stopping"
        return True, f"{len(self._runtimes)} partitions"

    def _on_stats(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        inputs = set(self.settings.topics.inputs)
        for topic, data in stats.get("topics", {}).items():
            if topic not in inputs:
                continue
            for partition, p in data.get("partitions", {}).items():
                lag = p.get("consumer_lag", -1)
                if partition != "-1" and lag >= 0:
                    self.metrics.consumer_lag.labels(topic, partition).set(lag)
