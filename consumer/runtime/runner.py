"""One stage's consumer group in a running instance: its clients, poll step, checkpoint, recovery and rebalances.

Failure handling in one place, the same for every stage: a record that cannot be processed is dead-lettered
(by the stage); a checkpoint or output that fails is rewound to the last commit and retried while Kafka is
away (`recover`, the instance reports not-ready meanwhile); what cannot be recovered in the process ends it
with a documented exit code (errors.py), never with a commit of work that was not done.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer.kafka import config as kafka_config
from consumer.kafka.access import denial, error_of, missing_permission
from consumer.kafka.producer import OutputProducer
from consumer.ops.logging import Throttle
from consumer.ops.metrics import Metrics
from consumer.runtime.checkpoint import Checkpointer
from consumer.runtime.dead_letters import DeadLetters
from consumer.runtime.errors import KafkaFatal, StateFailed
from consumer.runtime.health import Health
from consumer.runtime.settings import Settings
from consumer.runtime.stage import Beat, PartitionWork, PoisonRecord, Stage
from consumer.state.store import StoreError

Clock = Callable[[], float]  # seconds since the epoch
RETRY_S = 2.0  # between attempts to reach Kafka again
KAFKA_CALL_S = 10.0  # timeout of one blocking Kafka call made while recovering


class Warnings:
    """One line per kind of Kafka error per 10 s: an outage must be visible, not flood the log."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._throttle = Throttle()

    def __call__(self, event: str, error: KafkaError) -> None:
        if self._throttle.allows(error.code()):
            self._log.warning(event, error=error.str(), code=error.name())


class StageRunner:
    def __init__(
        self,
        stage: Stage,
        settings: Settings,
        health: Health,
        beat: Beat,
        metrics: Metrics,
        log: Any,
        stopping: threading.Event,
        clock: Clock = time.time,
    ) -> None:
        self.stage = stage
        self.works: dict[int, PartitionWork] = {}
        self.failed = False  # an error is ending the run: nothing may be committed any more
        self._settings = settings
        self._health = health
        self._beat = beat
        self._metrics = metrics
        self._log = log.bind(stage=stage.name)
        self._stopping = stopping
        self._clock = clock
        self._warn = Warnings(self._log)
        self._rebalances = metrics.rebalances
        self._assigned = metrics.assigned_partitions.labels(stage.name)
        self._trouble("group", "joining the consumer group")

    # Troubles of one stage are its own: another stage's assignment or checkpoint must not clear them.
    def _trouble(self, name: str, detail: str) -> None:
        self._health.trouble(f"{name}:{self.stage.name}", f"{self.stage.name}: {detail}")

    def _clear(self, name: str) -> None:
        self._health.clear(f"{name}:{self.stage.name}")

    # -- clients -----------------------------------------------------------------------------------------
    def start(self, base: dict[str, Any], client_id: str) -> None:
        """Make the clients and join the group (the partitions come in poll(), through on_assign). The stage's own
        start (its broker checks and clients) comes before, from the service."""
        s = self._settings
        producer_config = kafka_config.producer_config(base, self.transactional_id, s.partitioner)
        consumer_config = kafka_config.consumer_config(base, self.stage.group_id, s.session_timeout_ms)
        consumer_config |= {"client.id": client_id, "stats_cb": self.on_stats, "error_cb": self.on_kafka_error}
        self._base = base
        try:
            producer = OutputProducer({**producer_config, "error_cb": self.on_kafka_error})
        except KafkaException as exc:
            self._end_if_denied(error_of(exc))
            raise
        self.attach(producer, Consumer(consumer_config))
        self._consumer.subscribe(
            list(self.stage.inputs), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    @property
    def transactional_id(self) -> str | None:
        s = self._settings
        return f"{self.stage.group_id}-{s.instance_id}" if s.transactional else None

    def _end_if_denied(self, error: KafkaError | None, topic: str | None = None) -> None:
        """A missing permission ends the instance (Denied, exit 5): retrying cannot help. The operation on a
        topic is READ for the stage's inputs (consumed) and WRITE for the rest (produced)."""
        operation = "READ" if topic in self.stage.inputs else "WRITE"
        denied = denial(
            error, topic, topic_operation=operation, group=self.stage.group_id, transactional_id=self.transactional_id
        )
        if denied is not None and denied.resource == "topic" and denied.name is None:
            # A topic refused the transaction (AddPartitionsToTxn): Kafka's authorized operations say which.
            denied = missing_permission(self._base, self.stage.operations, KAFKA_CALL_S) or denied
        if denied is not None:
            raise denied

    def attach(self, producer: OutputProducer, consumer: Consumer) -> None:
        """Build the runner over these clients (start() makes real ones; tests may pass fakes)."""
        s = self._settings
        self._producer, self._consumer = producer, consumer
        self.stage.attach(producer, DeadLetters(producer, s.topics.dlq, self._metrics, self._log))
        self._checkpointer = Checkpointer(producer, consumer, self.stage, self._metrics, s.commit_interval_s, self._log)

    def step(self, timeout_s: float) -> None:
        """One turn of the loop: poll, process, checkpoint when due or when the input went quiet with work in hand,
        serve the producer's callbacks."""
        self._beat("poll")
        messages = self._poll(timeout_s)
        if messages:
            self._beat("process")
            self.process(messages)
        self._past_markers()
        # Input quiet for a whole poll: the work in hand need not wait out the interval (the end of a burst shows at
        # once). A busy input never leaves a poll empty, so it keeps the interval's batching.
        if self._checkpointer.due() or (not messages and self._work_in_hand() and self._checkpointer.may_run_early()):
            self._beat("checkpoint")
            self.checkpoint()
        self._producer.poll()

    def _poll(self, timeout_s: float) -> list[Message]:
        """Up to a batch of what is already fetched; if nothing is, the first record to come within the timeout and
        what is fetched by then. Waiting for a full batch would hold each record back until the batch fills, and the
        wait ends at the next checkpoint at the latest (every output of the interval would wait with it)."""
        size = self._settings.batch_size
        messages = self._consumer.consume(size, 0)
        if messages:
            return messages
        first = self._consumer.consume(1, min(timeout_s, self._checkpointer.until_due()))
        return first + self._consumer.consume(size - 1, 0) if first else first

    def _work_in_hand(self) -> bool:
        return any(work.consumed for work in self.works.values())

    def close(self) -> None:
        """Leave the group (after a last checkpoint unless the run failed) and close the clients."""
        if not hasattr(self, "_consumer"):
            return
        try:
            if not self.failed:
                self.checkpoint()
            self._consumer.close()  # leaves the group; the revoke callback checkpoints (or not) and closes
            if self.failed:
                self._producer.abort_transaction(self._settings.grace_period_s / 2)
            self._producer.close(self._settings.grace_period_s)
        finally:
            self.stage.stop()

    # -- processing ----------------------------------------------------------------------------------------
    def process(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        records = [msg for msg in messages if msg.error() is None or self._on_consume_error(msg)]
        try:
            self.stage.process(records, self.works, self._clock())
        except PoisonRecord as exc:
            self.stage.poison.add(exc.where)
            self.recover("processing_error", str(exc))
        except KafkaException as exc:  # producing an output into the transaction failed
            self.recover("produce_failed", reason(exc), exc)
        except StoreError as exc:
            raise StateFailed(str(exc)) from None
        self._metrics.batch_seconds.labels(self.stage.name).observe(time.perf_counter() - started)

    def _past_markers(self) -> None:
        """Count the transaction markers after the last processed record as done, so that the committed offset
        reaches the log end and Kafka's tools (kafka-consumer-groups) show lag 0 once everything is processed.
        librdkafka's position moves past the markers it skips; every record below it has been processed (the
        loop processes each poll before the next); a rewind's seek makes it invalid (< 0) until records come."""
        wanted = [TopicPartition(topic, p) for p in self.works for topic in self.stage.inputs]
        for tp in self._consumer.position(wanted) if wanted else ():
            work = self.works.get(tp.partition)
            if work is not None and tp.offset > work.consumed.get(tp.topic, work.committed.get(tp.topic, -1)):
                work.consumed[tp.topic] = tp.offset

    def _on_consume_error(self, msg: Message) -> bool:
        error = msg.error()
        self._end_if_denied(error, msg.topic())
        if error.fatal():
            raise KafkaFatal(f"the consumer failed: {error.str()}")
        self._warn("consume_error", error)
        return False

    def checkpoint(self, advance_clock: bool = True) -> None:
        now_ms = int(self._clock() * 1000) if advance_clock else None
        try:
            if self._checkpointer.run(list(self.works.values()), now_ms, self._beat):
                self._health.clear("kafka")
        except KafkaException as exc:
            self.recover("checkpoint_failed", reason(exc), exc)
        except StoreError as exc:  # Kafka has the checkpoint; the local store is behind, which restore repairs
            raise StateFailed(str(exc)) from None
        else:
            self._clear("checkpoint")

    # -- recovery --------------------------------------------------------------------------------------------
    def recover(self, kind: str, detail: str, error: KafkaException | None = None) -> None:
        """Abort the outputs and go back to the last committed offsets and state, waiting out Kafka."""
        if error is not None:
            self._end_if_denied(error_of(error), getattr(error, "topic", None))
        self._metrics.checkpoint_failures.labels(self.stage.name, kind).inc()
        self._log.error(kind, error=detail, recovery="rewinding to the last commit")
        self._trouble("checkpoint", f"{kind}: {detail}")
        if error is not None and is_fatal(error):
            self._renew_producer()
        else:
            self._abort()
        for work in self.works.values():
            work.reset()
            for topic in self.stage.inputs:
                offset = work.committed.get(topic, OFFSET_BEGINNING)
                self._consumer.seek(TopicPartition(topic, work.partition, offset))

    def _abort(self) -> None:
        while True:
            self._beat("abort")
            try:
                self._producer.abort_transaction(KAFKA_CALL_S)
                return
            except KafkaException as exc:
                if is_fatal(exc) or not exc.args[0].retriable() or self._stopping.is_set():
                    self._renew_producer()  # the new client aborts the transaction when it starts
                    return
                self._waiting_for_kafka("abort_failed", exc)

    def _renew_producer(self) -> None:
        """A producer in a fatal state is replaced: the new client fences it and aborts its transaction."""
        while True:
            self._beat("new_producer")
            try:
                self._producer.renew()
                break
            except KafkaException as exc:
                self._end_if_denied(error_of(exc))
                if is_fatal(exc) or exc.args[0].code() == KafkaError._FENCED:
                    raise KafkaFatal(f"cannot start a producer: {reason(exc)}") from None
                if self._stopping.is_set():
                    raise
                self._waiting_for_kafka("producer_init_failed", exc)
        self._log.info("producer_replaced")

    def _waiting_for_kafka(self, event: str, exc: KafkaException) -> None:
        self._health.trouble("kafka", f"Kafka unreachable: {reason(exc)}")
        self._log.warning(event, error=reason(exc), retry_in_s=RETRY_S)
        time.sleep(RETRY_S)

    def drop_uncommitted(self) -> None:
        self._abort()
        for work in self.works.values():
            work.reset()

    # -- rebalance ------------------------------------------------------------------------------------------
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._clear("group")
        self._rebalances.labels(self.stage.name, "assign").inc()
        self._trouble("restore", "restoring state")
        try:
            new = sorted({tp.partition for tp in partitions} - set(self.works))
            committed = self._committed_offsets(new)
            works = self.stage.open(new, committed, self._beat)
            for partition, work in works.items():
                work.committed.update(committed[partition])
            self.works.update(works)
        finally:
            self._clear("restore")
        self._assigned.set(len(self.works))
        self._log.info("assigned", partitions=sorted(self.works))

    def _committed_offsets(self, partitions: list[int]) -> dict[int, dict[str, int]]:
        """Where each new partition's inputs stand in the group: what restore checks changelog records against,
        the rewind target, and the lag's base."""
        committed: dict[int, dict[str, int]] = {partition: {} for partition in partitions}
        if not partitions:
            return committed
        wanted = [TopicPartition(t, p) for p in partitions for t in self.stage.inputs]
        while True:
            self._beat("committed_offsets")
            try:
                found = self._consumer.committed(wanted, timeout=KAFKA_CALL_S)
                break
            except KafkaException as exc:
                self._end_if_denied(error_of(exc))
                self._waiting_for_kafka("committed_offsets_failed", exc)
        for tp in found:
            if tp.offset >= 0:
                committed[tp.partition][tp.topic] = tp.offset
        return committed

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalances.labels(self.stage.name, "revoke").inc()
        self._trouble("group", "rebalancing")
        # Finish and commit the work in hand while the partitions are still ours. While closing, the work was
        # committed just before and the group is being left: no new time-driven output (the next owner makes it).
        # After a failure nothing is committed: the work in hand is dropped, and its owner redoes it.
        if self.failed:
            self.drop_uncommitted()
        else:
            self.checkpoint(advance_clock=not self._stopping.is_set())
        self._close_partitions({tp.partition for tp in partitions})

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Someone else may own them already: committing could overwrite their progress, so drop everything.
        self._rebalances.labels(self.stage.name, "lost").inc()
        self._trouble("group", "partitions lost; rejoining")
        self._log.warning("partitions_lost", partitions=sorted({tp.partition for tp in partitions}))
        self.drop_uncommitted()
        self._close_partitions({tp.partition for tp in partitions})

    def _close_partitions(self, gone: set[int]) -> None:
        for partition in sorted(gone & set(self.works)):
            self.stage.close(self.works.pop(partition))
            for topic in self.stage.inputs:  # the new owner reports this partition's lag now
                with contextlib.suppress(KeyError):
                    self._metrics.consumer_lag.remove(topic, str(partition))
        self._assigned.set(len(self.works))

    # -- observation -----------------------------------------------------------------------------------------
    def on_kafka_error(self, error: KafkaError) -> None:
        """librdkafka's client-level errors (called from poll): connectivity shows in readiness."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._health.trouble("kafka", "all brokers are down")
        self._warn("kafka_error", error)

    def on_stats(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        if any(broker.get("state") == "UP" for broker in stats.get("brokers", {}).values()):
            self._health.clear("kafka")
        self._update_lag(stats)

    def _update_lag(self, stats: dict[str, Any]) -> None:
        """Lag = the partition's end (log end offset, as Kafka's tools count it: records behind an open
        upstream transaction are lag too) minus the next offset this instance will process. librdkafka's
        own consumer_lag uses committed offsets, which transactional commits don't update. The position is
        librdkafka's application offset, which, unlike our last record's offset, moves past transaction
        markers; the loop processes each batch before it consumes again, so that is what was processed."""
        inputs = set(self.stage.inputs)
        for topic, data in stats.get("topics", {}).items():
            if topic not in inputs:
                continue
            for name, p in data.get("partitions", {}).items():
                work = self.works.get(int(name)) if name != "-1" else None
                end = p.get("hi_offset", -1)
                if work is None or end < 0:
                    continue
                position = p.get("app_offset", -1)
                if position < 0:  # nothing consumed since the assignment: where the group stands, or the start
                    position = work.committed.get(topic, max(p.get("lo_offset", 0), 0))
                self._metrics.consumer_lag.labels(topic, name).set(max(0, end - position))


def is_fatal(exc: KafkaException) -> bool:
    error = error_of(exc)
    return error is not None and (error.fatal() or error.code() in (KafkaError._FENCED, KafkaError._STATE))


def reason(exc: BaseException) -> str:
    error = error_of(exc)
    return error.str() if error is not None else str(exc)
