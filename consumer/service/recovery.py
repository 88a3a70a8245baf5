"""Restore a partition's state from the changelog before it processes anything."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, TopicPartition

from consumer.state.changelog import CHANGELOG_OFFSET, apply_changelog
from consumer.state.store import PartitionStore

_CHUNK = 10_000


class RestoreError(RuntimeError):
    pass


@dataclass
class RestoreResult:
    records: int = 0
    seconds: float = 0.0
    stale: bool = False  # the local state did not match the changelog and was discarded
    touched: set[str] = field(default_factory=set)  # deliveries whose records were replayed


def changelog_start(store: PartitionStore, low: int, high: int) -> int | None:
    """Where to resume reading, or None if the local state cannot be trusted (changelog recreated)."""
    start = store.offsets().get(CHANGELOG_OFFSET, 0)
    if start > high or (start < low and start != 0):
        return None
    return max(start, low)


def restore(
    store: PartitionStore, reader: Consumer, topic: str, partition: int, timeout_s: float = 300.0
) -> RestoreResult:
    """Replay the changelog from the store's position to the end (the last stable offset)."""
    started = time.perf_counter()
    result = RestoreResult()
    low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    start = changelog_start(store, low, high)
    if start is None:
        result.stale = True
        return result
    if start >= high:
        result.seconds = time.perf_counter() - started
        return result
    reader.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if time.monotonic() > deadline:
                raise RestoreError(f"restoring {topic}[{partition}] took longer than {timeout_s} s")
            batch, at_end = [], False
            for msg in reader.consume(_CHUNK, 0.1):
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise RestoreError(f"reading {topic}[{partition}]: {error}")
                    at_end = True
                    continue
                batch.append((msg.key(), msg.value(), msg.offset()))
            result.records += apply_changelog(store, batch, result.touched) if batch else 0
            if at_end:
                break
    finally:
        reader.unassign()
    result.seconds = time.perf_counter() - started
    return result
