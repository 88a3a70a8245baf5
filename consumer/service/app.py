"""The service: wires Kafka, state, core and ops together and runs the poll loop.

Failure handling in one place: a record that cannot be applied is dead-lettered (intake); a checkpoint
or output that fails is rewound to the last commit and retried while Kafka is away (`_recover`, the
instance reports not-ready meanwhile); what cannot be recovered in the process ends it with a
documented exit code (errors.py), never with a commit of work that was not done.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.codec.control import COMPUTE_STATS
from consumer.core.delivery import DeliveryState
from consumer.core.processor import kpi_record
from consumer.core.status import MessageState
from consumer.kafka import admin as topic_admin
from consumer.kafka import config as kafka_config
from consumer.kafka.producer import OutputProducer
from consumer.ops import logging as logs
from consumer.ops.exchange import Handler
from consumer.ops.http import OpsServer, StatusSource
from consumer.ops.metrics import Metrics
from consumer.service.checkpoint import Checkpointer
from consumer.service.dead_letters import DeadLetters
from consumer.service.errors import KafkaFatal, ServiceError, StartupError, StateFailed
from consumer.service.health import Health, Watchdog
from consumer.service.intake import Intake, PoisonRecord
from consumer.service.partition import PartitionRuntime, StoreFactory
from consumer.service.recovery import ChangelogMismatch, RestoreResult, restore
from consumer.service.settings import Settings
from consumer.service.signals import StopSignals
from consumer.state import records
from consumer.state.store import PartitionStore, StoreError

__all__ = ["COMPUTE_STATS", "Service"]

Clock = Callable[[], float]  # seconds since the epoch
_RETRY_S = 2.0  # between attempts to reach Kafka again
_KAFKA_CALL_S = 10.0  # timeout of one blocking Kafka call made while recovering


class Service:
    def __init__(
        self,
        settings: Settings,
        clock: Clock = time.time,
        metrics: Metrics | None = None,
        client_id: str = "sendtrack",
    ) -> None:
        self.settings = settings
        self.client_id = client_id  # the consumer's: the Deployment view encodes this instance's URL in it
        self.handler: Handler | None = None  # pages served besides /metrics, /healthz, /readyz
        self.http_tls: ssl.SSLContext | None = None
        self.after_start: list[Callable[[], Any]] = []  # companions that need Kafka, started after the checks
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._log = logs.get("sendtrack.service")
        self._stores = StoreFactory(settings.store, settings.state_dir, settings.group_id)
        self._runtimes: dict[int, PartitionRuntime] = {}
        self._kpis: dict[str, dict[str, Any]] = {}  # last published KPI per owned delivery, for HTTP
        self._stopping = threading.Event()
        self._failed = False  # an error is ending the run: nothing may be committed any more
        self.health = Health()
        self._signals = StopSignals(self.stop, settings.grace_period_s, self._log)
        self._watchdog = Watchdog(settings.watchdog_timeout_s, self._log)
        self._http: OpsServer | None = None
        self._warned: dict[int, float] = {}  # Kafka error code -> when last logged

    # -- lifecycle ---------------------------------------------------------------------------------------
    def take_signals(self) -> None:
        """SIGTERM/SIGINT to the stop thread. Before any thread starts: those inherit the blocked signals."""
        self._signals.install()

    def run(self) -> int:
        self.take_signals()
        try:
            self._start()
        except KafkaException as exc:
            raise StartupError(f"cannot reach Kafka at {self.settings.bootstrap_servers}: {_reason(exc)}") from None
        try:
            self._loop()
        except BaseException:
            self._failed = True
            raise
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        self._stopping.set()
        self.health.trouble("stopping", "stopping")

    def _start(self) -> None:
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
        self._stores.prepare()  # checks that need no broker come before joining the group
        self._start_http()
        admin = AdminClient({**base, "error_cb": self._on_kafka_error})
        if s.create_topics:
            created = topic_admin.ensure_topics(admin, s.topics, s.partitions)
            if created:
                self._log.info("topics_created", topics=created, partitions=s.partitions)
        try:
            topic_admin.check_copartitioned(admin, s.topics)
        except topic_admin.TopicLayoutError as exc:
            raise StartupError(str(exc)) from None
        self._base = base
        consumer_config = kafka_config.consumer_config(base, s.group_id, s.session_timeout_ms)
        consumer_config |= {"client.id": self.client_id, "stats_cb": self._on_stats, "error_cb": self._on_kafka_error}
        self.attach(
            self._new_producer(),
            Consumer(consumer_config),
            Consumer(kafka_config.reader_config(base, f"{s.group_id}.restore", reset="error")),
        )
        self.health.watchdog = self._watchdog.start()
        for start in self.after_start:
            start()
        self._consumer.subscribe(
            list(s.topics.inputs), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def attach(self, producer: OutputProducer, consumer: Consumer, reader: Consumer) -> None:
        """Build the pipeline over these clients (run() makes real ones; tests may pass fakes)."""
        s = self.settings
        self._producer, self._consumer, self._reader = producer, consumer, reader
        self._dead_letters = DeadLetters(producer, s.topics.dlq, self.metrics, self._log)
        self._checkpointer = Checkpointer(
            producer, consumer, s.topics, self.metrics, s.commit_interval_s, self._on_published, self._log
        )
        self._intake = Intake(
            s.topics,
            self._dead_letters,
            self.metrics,
            self._log,
            int(s.max_clock_skew_s * 1000),
            self._checkpointer.produce_sending_logs,
        )

    def _new_producer(self) -> OutputProducer:
        config = kafka_config.producer_config(self._base, self.settings.transactional_id)
        return OutputProducer({**config, "error_cb": self._on_kafka_error})

    def _loop(self) -> None:
        consume, batch_size, beat = self._consumer.consume, self.settings.batch_size, self._watchdog.beat
        while not self._stopping.is_set():
            beat("poll")
            messages = consume(batch_size, 0.1)
            if messages:
                beat("process")
                self._process(messages)
            if self._checkpointer.due():
                beat("checkpoint")
                self._checkpoint()
            self._producer.poll()

    def _shutdown(self) -> None:
        self._log.info("stopping", clean=not self._failed)
        self.stop()
        self._signals.start_grace_period()  # the stop itself may hang on an unreachable broker
        try:
            if not self._failed:
                self._checkpoint()
            if hasattr(self, "_consumer"):
                self._consumer.close()  # leaves the group; the revoke callback checkpoints (or not) and closes
                self._reader.close()
                if self._failed:
                    self._producer.abort_transaction(self.settings.grace_period_s / 2)
                self._producer.close(self.settings.grace_period_s)
        except (KafkaException, ServiceError) as exc:  # the work in hand stays uncommitted: restore redoes it
            self._log.warning("stop_incomplete", error=str(exc))
        finally:
            self._signals.cancel()
            self._watchdog.stop()
            if self._http:
                self._http.stop()
        self._log.info("stopped")

    # -- processing ----------------------------------------------------------------------------------------
    def _process(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        records = [msg for msg in messages if msg.error() is None or self._on_consume_error(msg.error())]
        try:
            self._intake.process(records, self._runtimes, self._clock())
        except PoisonRecord as exc:
            self._intake.poison.add(exc.where)
            self._recover("processing_error", str(exc))
        except KafkaException as exc:  # producing an output into the transaction failed
            self._recover("produce_failed", _reason(exc), exc)
        except StoreError as exc:
            raise StateFailed(str(exc)) from None
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _on_consume_error(self, error: KafkaError) -> bool:
        if error.fatal():
            raise KafkaFatal(f"the consumer failed: {error.str()}")
        self._warn("consume_error", error)
        return False

    # -- checkpoint ------------------------------------------------------------------------------------------
    def _checkpoint(self, advance_clock: bool = True) -> None:
        now_ms = int(self._clock() * 1000) if advance_clock else None
        try:
            self._checkpointer.run(list(self._runtimes.values()), now_ms, self._watchdog.beat)
        except KafkaException as exc:
            self._recover("checkpoint_failed", _reason(exc), exc)
        except StoreError as exc:  # Kafka has the checkpoint; the local store is behind, which restore repairs
            raise StateFailed(str(exc)) from None
        else:
            self.health.clear("checkpoint")

    def _recover(self, kind: str, detail: str, error: KafkaException | None = None) -> None:
        """Abort the outputs and go back to the last committed offsets and state, waiting out Kafka."""
        self.metrics.checkpoint_failures.labels(kind).inc()
        self._log.error(kind, error=detail, recovery="rewinding to the last commit")
        self.health.trouble("checkpoint", f"{kind}: {detail}")
        if error is not None and _is_fatal(error):
            self._replace_producer()
        else:
            self._abort()
        for runtime in self._runtimes.values():
            runtime.reset()
            for topic in self.settings.topics.inputs:
                offset = runtime.committed.get(topic, OFFSET_BEGINNING)
                self._consumer.seek(TopicPartition(topic, runtime.partition, offset))

    def _abort(self) -> None:
        while True:
            self._watchdog.beat("abort")
            try:
                self._producer.abort_transaction(_KAFKA_CALL_S)
                return
            except KafkaException as exc:
                if _is_fatal(exc) or not exc.args[0].retriable() or self._stopping.is_set():
                    self._replace_producer()  # the new producer aborts the transaction when it starts
                    return
                self._waiting_for_kafka("abort_failed", exc)

    def _replace_producer(self) -> None:
        """A producer in a fatal state is replaced: the new one fences it and aborts its transaction."""
        with contextlib.suppress(Exception):
            self._producer.close(0)
        while True:
            self._watchdog.beat("new_producer")
            try:
                self._producer = self._new_producer()
                break
            except KafkaException as exc:
                if _is_fatal(exc) or exc.args[0].code() == KafkaError._FENCED:
                    raise KafkaFatal(f"cannot start a producer: {_reason(exc)}") from None
                if self._stopping.is_set():
                    raise
                self._waiting_for_kafka("producer_init_failed", exc)
        self._checkpointer.producer = self._dead_letters.producer = self._producer
        self._log.info("producer_replaced")

    def _waiting_for_kafka(self, event: str, exc: KafkaException) -> None:
        self.health.trouble("kafka", f"Kafka unreachable: {_reason(exc)}")
        self._log.warning(event, error=_reason(exc), retry_in_s=_RETRY_S)
        time.sleep(_RETRY_S)

    def _on_published(self, kpis: list[dict[str, Any]]) -> None:
        self.health.clear("kafka")
        for kpi in kpis:
            self._kpis[kpi["delivery_id"]] = kpi

    # -- rebalance ------------------------------------------------------------------------------------------
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.health.clear("group")
        self.metrics.rebalances.labels("assign").inc()
        self.health.trouble("restore", "restoring state")
        try:
            new = sorted({tp.partition for tp in partitions} - set(self._runtimes))
            runtimes = self._open_partitions(new)
            self._load_committed(runtimes)
            self._runtimes.update(runtimes)
        finally:
            self.health.clear("restore")
        self.metrics.assigned_partitions.set(len(self._runtimes))
        self._log.info("assigned", partitions=sorted(self._runtimes))

    def _load_committed(self, runtimes: dict[int, PartitionRuntime]) -> None:
        """Where each new partition's inputs stand in the group: the rewind target, and the lag's base."""
        if not runtimes:
            return
        wanted = [TopicPartition(t, p) for p in runtimes for t in self.settings.topics.inputs]
        while True:
            self._watchdog.beat("committed_offsets")
            try:
                committed = self._consumer.committed(wanted, timeout=_KAFKA_CALL_S)
                break
            except KafkaException as exc:
                self._waiting_for_kafka("committed_offsets_failed", exc)
        for tp in committed:
            if tp.offset >= 0:
                runtimes[tp.partition].committed[tp.topic] = tp.offset

    def _open_partitions(self, partitions: list[int]) -> dict[int, PartitionRuntime]:
        """Open the stores, bring them up to the changelog's end, and repair what the replay touched."""
        stores = {partition: self._stores.open(partition) for partition in partitions}
        while True:
            try:
                results = restore(stores, self._reader, self.settings.topics.changelog, self._watchdog.beat)
                break
            except ChangelogMismatch as exc:
                self._log.warning("state_discarded", partition=exc.partition, reason=str(exc))
                stores[exc.partition] = self._stores.discard(exc.partition, stores[exc.partition])
            except StoreError as exc:
                raise StateFailed(str(exc)) from None
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
        self.health.trouble("group", "rebalancing")
        # Finish and commit the work in hand while the partitions are still ours. While closing, the work was
        # committed just before and the group is being left: no new time-driven output (the next owner makes it).
        # After a failure nothing is committed: the work in hand is dropped, and its owner redoes it.
        if self._failed:
            self._drop_uncommitted()
        else:
            self._checkpoint(advance_clock=not self._stopping.is_set())
        self._close_partitions({tp.partition for tp in partitions})

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Someone else may own them already: committing could overwrite their progress, so drop everything.
        self.metrics.rebalances.labels("lost").inc()
        self.health.trouble("group", "partitions lost; rejoining")
        self._log.warning("partitions_lost", partitions=sorted({tp.partition for tp in partitions}))
        self._drop_uncommitted()
        self._close_partitions({tp.partition for tp in partitions})

    def _drop_uncommitted(self) -> None:
        self._abort()
        for runtime in self._runtimes.values():
            runtime.reset()

    def _close_partitions(self, gone: set[int]) -> None:
        for partition in sorted(gone & set(self._runtimes)):
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
        s = self.settings
        if s.http_port is None:
            return
        source = StatusSource(ready=self.readiness, delivery_kpi=self._kpis.get, alive=self.health.liveness)
        try:
            self._http = OpsServer(
                s.http_port, self.metrics.registry, source, host=s.http_host, handler=self.handler, tls=self.http_tls
            ).start()
        except OSError as exc:
            raise StartupError(f"cannot serve HTTP on {s.http_host}:{s.http_port}: {exc.strerror or exc}") from None
        self._log.info("http_listening", host=s.http_host, port=self._http.port)

    # -- message-level queries (the Deployment view's, from HTTP threads: committed state only) ----------------
    def owned_partitions(self) -> set[int]:
        return set(self._runtimes)

    def committed_messages(
        self, delivery_id: str, after: str | None, limit: int
    ) -> tuple[DeliveryState, list[tuple[str, MessageState]]] | None:
        """The delivery and up to `limit` of its messages with ids after `after`, in id order; None if the
        delivery is not this instance's."""
        owner = self._owner_of(delivery_id)
        if owner is None:
            return None
        runtime, delivery = owner
        prefix = records.messages_prefix(delivery_id)
        start = prefix + after.encode() + b"\x00" if after else prefix  # ids hold no NUL: the next key up
        found = runtime.store.read_range(prefix, start, limit)
        return delivery, [(records.split_key(k)[2], records.decode_message(v)) for k, v in found]

    def committed_message(self, delivery_id: str, message_id: str) -> tuple[DeliveryState, MessageState] | None:
        owner = self._owner_of(delivery_id)
        if owner is None:
            return None
        runtime, delivery = owner
        key = records.message_key(delivery_id, message_id)
        rows = runtime.store.read_range(key, key, 1)
        return (delivery, records.decode_message(rows[0][1])) if rows and rows[0][0] == key else None

    def _owner_of(self, delivery_id: str) -> tuple[PartitionRuntime, DeliveryState] | None:
        for runtime in list(self._runtimes.values()):
            delivery = runtime.processor.delivery(delivery_id)
            if delivery is not None:
                return runtime, delivery
        return None

    def published_kpis(self) -> dict[str, dict[str, Any]]:
        """The last published KPI of each delivery this instance owns."""
        return dict(self._kpis)

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None

    def readiness(self) -> tuple[bool, str]:
        ready, detail = self.health.readiness()
        return (True, f"{len(self._runtimes)} partitions") if ready else (False, detail)

    def _on_kafka_error(self, error: KafkaError) -> None:
        """librdkafka's client-level errors (called from poll): connectivity shows in readiness."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.health.trouble("kafka", "all brokers are down")
        self._warn("kafka_error", error)

    def _warn(self, event: str, error: KafkaError) -> None:
        """One line per kind of error per 10 s: an outage must be visible, not flood the log."""
        now = time.monotonic()
        if now - self._warned.get(error.code(), -1e9) >= 10.0:
            self._warned[error.code()] = now
            self._log.warning(event, error=error.str(), code=error.name())

    def _on_stats(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        if any(broker.get("state") == "UP" for broker in stats.get("brokers", {}).values()):
            self.health.clear("kafka")
        self._update_lag(stats)

    def _update_lag(self, stats: dict[str, Any]) -> None:
        """Lag = the partition's end (log end offset, as Kafka's tools count it: records behind an open
        upstream transaction are lag too) minus the next offset this instance will process. librdkafka's
        own consumer_lag uses committed offsets, which transactional commits don't update. The position is
        librdkafka's application offset, which, unlike our last record's offset, moves past transaction
        markers; the loop processes each batch before it consumes again, so that is what was processed."""
        inputs = set(self.settings.topics.inputs)
        for topic, data in stats.get("topics", {}).items():
            if topic not in inputs:
                continue
            for name, p in data.get("partitions", {}).items():
                runtime = self._runtimes.get(int(name)) if name != "-1" else None
                end = p.get("hi_offset", -1)
                if runtime is None or end < 0:
                    continue
                position = p.get("app_offset", -1)
                if position < 0:  # nothing consumed since the assignment: where the group stands, or the start
                    position = runtime.committed.get(topic, max(p.get("lo_offset", 0), 0))
                self.metrics.consumer_lag.labels(topic, name).set(max(0, end - position))


def _error_of(exc: BaseException) -> KafkaError | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None


def _is_fatal(exc: KafkaException) -> bool:
    error = _error_of(exc)
    return error is not None and (error.fatal() or error.code() in (KafkaError._FENCED, KafkaError._STATE))


def _reason(exc: BaseException) -> str:
    error = _error_of(exc)
    return error.str() if error is not None else str(exc)
