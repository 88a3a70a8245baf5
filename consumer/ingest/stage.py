"""The ingest stage: an MTA's own records (one format, one source topic) -> contract events on mta.events.

A repartition: each event is produced keyed by its delivery_id, and the producer's partitioner picks the
mta.events partition, whatever the source topic was keyed by. It runs on the service's runner like the
delivery stage: its events go into the open transaction as records are mapped, and the checkpoint commits
them with the source offsets (exactly-once), or flushes them before committing the offsets (at-least-once).
It keeps no state: event ids derive from the source record, so a re-read record makes duplicates that the
delivery stage ignores. A record that cannot be mapped is dead-lettered; the stage goes on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Message

from consumer.codec.avro import AvroCodec
from consumer.codec.errors import InvalidEvent, ProcessingError
from consumer.codec.schemas import MTA_EVENT
from consumer.codec.validation import NO_KEY_CHECK, check_event
from consumer.ingest.classifier import Classifier
from consumer.ingest.formats import Format, IdKeys, Mapped, make_format
from consumer.kafka.producer import ANY_PARTITION, Headers, OutputProducer
from consumer.ops import logging as logs
from consumer.ops.metrics import Metrics, Tally
from consumer.runtime.dead_letters import DeadLetters
from consumer.runtime.settings import IngestSource, Settings
from consumer.runtime.stage import Beat, Coordinates, PartitionWork

RULE_HEADER = "sendtrack.bounce.rule"  # which classifier rule decided a bounce: why it counts as it does
FORMAT_HEADER = "sendtrack.source.format"
Output = tuple[bytes, bytes, Headers]  # key, value, headers of one mta.events record


def ingest_stages(settings: Settings, metrics: Metrics) -> list[IngestStage]:
    """The configured ingest stages: one per source format, sharing one classifier (the user's rules first)."""
    formats = [source.format for source in settings.ingest]
    if len(set(formats)) < len(formats):
        raise ValueError(f"one ingest stage per format: {', '.join(formats)}")
    clashes = {source.topic for source in settings.ingest} & set(settings.topics.all)
    if clashes:
        raise ValueError(f"an ingest source topic cannot be one of sendtrack's own: {', '.join(sorted(clashes))}")
    if not settings.ingest:
        return []
    ids = IdKeys(settings.delivery_id_key, settings.message_id_key)
    classifier = Classifier.load(settings.bounce_rules)
    return [
        IngestStage(source, make_format(source.format, ids, classifier), settings, metrics)
        for source in settings.ingest
    ]


class IngestStage:
    def __init__(self, source: IngestSource, mapper: Format, settings: Settings, metrics: Metrics) -> None:
        self.name = f"ingest-{mapper.name}"
        self.group_id = f"{settings.group_id}.ingest.{mapper.name}"
        self.inputs: tuple[str, ...] = (source.topic,)
        self.operations = {
            source.topic: ("READ",),
            settings.topics.mta_events: ("WRITE",),
            settings.topics.dlq: ("WRITE",),
        }
        self.poison: set[Coordinates] = set()  # stays empty: a mapper's failure is a dead letter already
        self._mapper = mapper
        self._format_header = (FORMAT_HEADER, mapper.name.encode())  # on every event: encoded once
        self._topic = settings.topics.mta_events
        self._codec = AvroCodec.named(MTA_EVENT)
        self._max_skew_ms = int(settings.max_clock_skew_s * 1000)
        self._metrics = metrics
        self._log = logs.get("sendtrack.ingest").bind(stage=self.name)

    def prepare(self) -> None:
        return None

    def start(self, base_config: dict[str, Any]) -> None:
        return None

    def attach(self, producer: OutputProducer, dead_letters: DeadLetters) -> None:
        self._producer = producer
        self._dead_letters = dead_letters

    def stop(self) -> None:
        return None

    def open(
        self, partitions: Sequence[int], committed: Mapping[int, Mapping[str, int]], beat: Beat
    ) -> dict[int, PartitionWork]:
        return {partition: PartitionWork(partition) for partition in partitions}

    def close(self, work: PartitionWork) -> None:
        return None

    # -- processing ---------------------------------------------------------------------------------------------
    def process(self, messages: Sequence[Message], works: dict[int, PartitionWork], now_s: float) -> None:
        latest_ms = int(now_s * 1000) + self._max_skew_ms
        for msg in messages:
            work = works.get(msg.partition())
            if work is None:  # revoked meanwhile; the owner reads it from the committed offset
                continue
            outcome = self._ingest(msg, latest_ms, work.tally)
            work.tally.add(self._metrics.ingest_records.labels(self._mapper.name, outcome))
            work.consumed[msg.topic()] = msg.offset() + 1

    def _ingest(self, msg: Message, latest_ms: int, tally: Tally) -> str:
        """Produce the record's events (all or none) or its dead letter; returns the outcome."""
        try:
            outputs = [self._output(item, msg, latest_ms) for item in self._mapper.map(msg.value())]
        except InvalidEvent as exc:  # unmappable, or an event the delivery stage would refuse
            self._dead_letters.send(msg, exc, tally)
            return "dead_lettered"
        except Exception:  # a bug on strange input: set the record aside, keep the stream going
            self._log.exception("ingest_failed", topic=msg.topic(), partition=msg.partition(), offset=msg.offset())
            self._dead_letters.send(msg, ProcessingError("value", "mapping this record raised; see the log"), tally)
            return "dead_lettered"
        produce, topic, events = self._producer.produce, self._topic, self._metrics.ingest_events
        for (key, value, headers), kind in outputs:
            produce(topic, value, key, ANY_PARTITION, headers=headers)
            tally.add(events.labels(self._mapper.name, kind))
        return "mapped" if outputs else "no_event"

    def _output(self, item: Mapped, msg: Message, latest_ms: int) -> tuple[Output, str]:
        event = check_event(item.event, NO_KEY_CHECK, latest_ms)
        headers: Headers = [self._format_header]
        if item.rule is not None:
            headers.append((RULE_HEADER, item.rule.encode()))
        return (event["delivery_id"].encode(), self._codec.encode(event), headers), event["type"]

    # -- checkpoint -----------------------------------------------------------------------------------------------
    def stage_checkpoint(self, work: PartitionWork, now_ms: int | None) -> None:
        return None  # the events went into the transaction as they were mapped

    def persist(self, work: PartitionWork, staged: object | None) -> None:
        return None  # its metrics are in the work's tally, which the checkpoint counts
