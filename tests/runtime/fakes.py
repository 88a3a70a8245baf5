"""In-process stand-ins for the Kafka clients, so the real processing loop can be driven poll by poll.

FakeProducer keeps a transaction like Kafka does: records become visible on commit, vanish on abort.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from consumer.cli.run import build_service
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_KPI
from consumer.delivery.stage import find_delivery_stage
from consumer.kafka.topics import Topics
from consumer.runtime.settings import Settings
from consumer.state.memory import MemoryStore

NOW_S = 1_767_225_600.0  # 2026-01-01: the fixed wall clock of in-process runs


@dataclass(slots=True)  # bench/cpu.py holds a whole workload of them
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes]] | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def error(self) -> None:
        return None


@dataclass
class Produced:
    topic: str
    value: bytes | None
    key: bytes | None
    partition: int
    headers: list[tuple[str, bytes]] | None


@dataclass
class FakeProducer:
    transactional: bool = True
    open: list[Produced] = field(default_factory=list)
    committed: list[Produced] = field(default_factory=list)
    offsets: list[list[TopicPartition]] = field(default_factory=list)
    _callbacks: list[tuple[Any, FakeMessage]] = field(default_factory=list)
    _next: dict[tuple[str, int], itertools.count] = field(default_factory=lambda: defaultdict(itertools.count))

    def produce(self, topic, value, key, partition, headers=None, on_delivery=None) -> None:
        self.open.append(Produced(topic, value, key, partition, headers))
        offset = next(self._next[topic, partition])
        if on_delivery is not None:
            self._callbacks.append((on_delivery, FakeMessage(topic, partition, offset, key, value)))

    def produce_many(self, topic, records, partition, headers=None) -> None:
        for key, value in records:
            self.produce(topic, value, key, partition, headers)

    def flush(self, _timeout: float) -> None:
        for callback, message in self._callbacks:
            callback(None, message)
        self._callbacks.clear()

    def commit_transaction(self, offsets, _metadata, _timeout) -> None:
        self.committed += self.open
        self.open = []
        self.offsets.append(list(offsets))

    def abort_transaction(self, _timeout: float) -> None:
        self.open, self._callbacks = [], []

    def renew(self) -> None:
        self.abort_transaction(0)

    def poll(self) -> None:
        return None

    def close(self, _timeout: float) -> None:
        return None

    def on(self, topic: str) -> list[Produced]:
        return [record for record in self.committed if record.topic == topic]


class EndOfPartition(FakeMessage):
    """What a reader with enable.partition.eof gives when it reaches a partition's end."""

    def __init__(self, topic: str, partition: int) -> None:
        super().__init__(topic, partition, -1, None, None)

    def error(self) -> KafkaError:  # type: ignore[override]
        return KafkaError(KafkaError._PARTITION_EOF)


class FakeReader:
    """A changelog reader over the records in hand: each assigned partition from its start, then its end."""

    def __init__(self, records: list[Produced]) -> None:
        self._log: dict[tuple[str, int], list[FakeMessage]] = defaultdict(list)
        for record in records:
            topic, partition = record.topic, record.partition
            entries = self._log[topic, partition]
            entries.append(FakeMessage(topic, partition, len(entries), record.key, record.value, record.headers))
        self._queue: list[FakeMessage] = []

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._queue += [m for m in self._log[tp.topic, tp.partition] if m.offset() >= max(tp.offset, 0)]
            self._queue.append(EndOfPartition(tp.topic, tp.partition))

    def consume(self, count: int, _timeout: float) -> list[FakeMessage]:
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch

    def unassign(self) -> None:
        self._queue = []

    def close(self) -> None:
        return None


@dataclass
class CommitResult:
    """A partition of a plain commit's answer (TopicPartition's error cannot be set)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None = None


@dataclass
class FakeConsumer:
    seeks: list[TopicPartition] = field(default_factory=list)
    commits: list[list[TopicPartition]] = field(default_factory=list)  # plain (at-least-once) commits
    refuse: KafkaError | None = None  # the error each partition of a plain commit answers with

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> list[CommitResult]:
        self.commits.append(list(offsets))
        return [CommitResult(tp.topic, tp.partition, tp.offset, self.refuse) for tp in offsets]

    def consumer_group_metadata(self) -> None:
        return None

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append(tp)

    def close(self) -> None:
        return None


class LoopDriver:
    """A Service's delivery stage over fake clients, owning `partitions` memory-backed partitions."""

    def __init__(self, partitions: int = 2, topics: Topics | None = None, **settings: Any) -> None:
        self.topics = topics or Topics()
        self.settings = Settings(
            bootstrap_servers="unused:9092", state_dir=Path("unused"), topics=self.topics, **settings
        )
        self.service = build_service(self.settings, clock=lambda: NOW_S)
        self.runner = self.service.runners[0]
        self.stage = find_delivery_stage(self.service.stages)
        assert self.stage is not None
        self.producer, self.consumer = FakeProducer(), FakeConsumer()
        self.stage.use_reader(FakeConsumer())
        self.runner.attach(self.producer, self.consumer)  # type: ignore[arg-type]
        for p in range(partitions):
            self.runner.works[p] = self.stage.runtimes[p] = self.stage.runtime(p, MemoryStore())
        self._offsets: dict[tuple[str, int], itertools.count] = defaultdict(itertools.count)

    def message(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> FakeMessage:
        return FakeMessage(topic, partition, next(self._offsets[topic, partition]), key, value)

    def poll(self, messages: list[FakeMessage]) -> None:
        self.runner.process(messages)  # type: ignore[arg-type]

    def checkpoint(self) -> None:
        self.runner.checkpoint()

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        latest: dict[tuple[str, int], int] = {}
        for commit in self.producer.offsets:
            for tp in commit:
                latest[tp.topic, tp.partition] = tp.offset
        return latest

    def dead_letters(self) -> list[dict[str, str]]:
        return [
            {name: value.decode() for name, value in record.headers or [] if name.startswith("sendtrack.")}
            for record in self.producer.on(self.topics.dlq)
        ]

    def kpis(self) -> dict[str, dict[str, Any]]:
        codec, latest = AvroCodec.named(DELIVERY_KPI), {}
        for record in self.producer.on(self.topics.kpis):
            kpi = codec.decode(record.value)
            latest[kpi["delivery_id"]] = kpi
        return latest
