"""From consumed records to applied events, commands and dead letters, partition by partition.

An input offset counts as done (`runtime.consumed`) only once its record is applied or dead-lettered,
so no failure can let a checkpoint commit past an event that was never counted. Events of a partition
are applied in batches; a control command first applies what came before it, keeping the input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from consumer.codec.avro import AvroCodec
from consumer.codec.control import parse_control
from consumer.codec.errors import DeliveryArchived, InvalidEvent, ProcessingError
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT
from consumer.codec.validation import check_event
from consumer.core.events import Event
from consumer.core.processor import ApplyFailed
from consumer.delivery.partition import PartitionRuntime
from consumer.kafka.topics import Topics
from consumer.ops.metrics import Metrics
from consumer.runtime.dead_letters import DeadLetters
from consumer.runtime.stage import Coordinates, PoisonRecord
from consumer.state.store import StoreError


@dataclass
class _Batch:
    events: list[Event] = field(default_factory=list)
    origins: list[Message] = field(default_factory=list)  # each event's record, for its coordinates if it fails
    done: dict[str, int] = field(default_factory=dict)  # topic -> next offset, once the batch is applied


class Intake:
    def __init__(
        self,
        topics: Topics,
        dead_letters: DeadLetters,
        metrics: Metrics,
        log: Any,
        max_skew_ms: int,
        after_apply: Callable[[PartitionRuntime], None],
        poison: set[Coordinates],
    ) -> None:
        self._control = topics.control
        self._codecs = {
            topics.deliveries: AvroCodec.named(DELIVERY_EVENT),
            topics.mta_events: AvroCodec.named(MTA_EVENT),
        }
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._log = log
        self._max_skew_ms = max_skew_ms
        self._after_apply = after_apply
        self.poison = poison  # records to dead-letter instead of applying

    def process(self, messages: Iterable[Message], runtimes: dict[int, PartitionRuntime], now_s: float) -> None:
        """Apply or dead-letter every record of a poll; raises PoisonRecord (see there)."""
        now_ms = int(now_s * 1000)
        latest_ms = now_ms + self._max_skew_ms
        batches: dict[int, _Batch] = {}
        poison = self.poison
        for msg in messages:
            partition = msg.partition()
            runtime = runtimes.get(partition)
            if runtime is None:  # revoked meanwhile; the owner reads it from the committed offset
                continue
            batch = batches.get(partition)
            if batch is None:  # not setdefault(): that would make a _Batch for every record
                batch = batches[partition] = _Batch()
            # Coordinates only when needed (a poison record, a command, a failure): one per record cost 0.23 us.
            topic, offset = msg.topic(), msg.offset()
            if poison and Coordinates(topic, partition, offset) in poison:
                error = ProcessingError("value", "processing this record raised; see the log")
                self._dead_letters.send(msg, error, runtime.tally)
            elif topic == self._control:
                self._apply(runtime, batch, now_ms)
                self._command(runtime, msg, Coordinates(topic, partition, offset))
            else:
                self._decode(msg, topic, runtime, batch, latest_ms)
            batch.done[topic] = offset + 1
        for partition, batch in batches.items():
            self._apply(runtimes[partition], batch, now_ms)

    def _decode(self, msg: Message, topic: str, runtime: PartitionRuntime, batch: _Batch, latest_ms: int) -> None:
        try:
            event = check_event(self._codecs[topic].decode(msg.value()), msg.key(), latest_ms)
            # Archiving happens at the end of a batch's apply, so this sees it for every record after it.
            if runtime.processor.archived(event["delivery_id"]) is not None:
                raise DeliveryArchived("delivery_id", f"delivery {event['delivery_id']!r} is archived")
        except InvalidEvent as exc:
            self._dead_letters.send(msg, exc, runtime.tally)
            return
        except StoreError:  # the store failed, not the record
            raise
        except Exception:  # a decoder bug on strange input: set the record aside, keep the stream going
            self._log.exception("decode_failed", **_coordinates(msg)._asdict())
            error = ProcessingError("value", "decoding this record raised; see the log")
            self._dead_letters.send(msg, error, runtime.tally)
            return
        batch.events.append(event)
        batch.origins.append(msg)

    def _apply(self, runtime: PartitionRuntime, batch: _Batch, now_ms: int) -> None:
        if batch.events:
            try:
                runtime.processor.apply(batch.events, now_ms)
            except ApplyFailed as exc:
                if isinstance(exc.__cause__, StoreError):  # the store failed, not the event
                    raise exc.__cause__ from None
                where = _coordinates(batch.origins[exc.index])
                self._log.exception("apply_failed", **where._asdict())
                raise PoisonRecord(where) from exc
            self._after_apply(runtime)
            age_s = max(0.0, now_ms / 1000 - batch.events[-1]["occurred_at"] / 1000)
            self._metrics.event_age.observe(age_s)
            batch.events, batch.origins = [], []
        runtime.consumed.update(batch.done)
        batch.done = {}

    def _command(self, runtime: PartitionRuntime, msg: Message, where: Coordinates) -> None:
        try:
            command = parse_control(msg.value(), msg.key())
        except InvalidEvent as exc:
            self._dead_letters.send(msg, exc, runtime.tally)
            return
        try:
            matched = runtime.processor.compute_stats(command.delivery_id)
        except StoreError:
            raise
        except Exception as exc:
            self._log.exception("command_failed", **where._asdict())
            raise PoisonRecord(where) from exc
        context = {"delivery_id": command.delivery_id, "partition": runtime.partition}
        if matched is None:
            self._log.warning("compute_stats_unknown_delivery", **context)
        elif runtime.processor.delivery(command.delivery_id).archived:
            self._log.info("compute_stats_archived", **context)  # its final counters are republished as they are
        elif not matched:
            runtime.tally.add(self._metrics.stats_mismatches.labels("command"))
            self._log.error("compute_stats_mismatch", **context)
        else:
            self._log.info("compute_stats_matched", **context)


def _coordinates(msg: Message) -> Coordinates:
    return Coordinates(msg.topic(), msg.partition(), msg.offset())
