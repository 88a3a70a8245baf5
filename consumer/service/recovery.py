"""Restore a partition's state from the changelog before it processes anything."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from consumer.state.changelog import CHANGELOG_OFFSET, apply_changelog
from consumer.state.store import PartitionStore

_CHUNK = 10_000


class RestoreError(RuntimeError):
    pass


class ChangelogMismatch(RestoreError):
    """The store's changelog position does not exist in the changelog (the topic was recreated)."""


@dataclass
class RestoreResult:
    records: int = 0
    seconds: float = 0.0
    touched: set[str] = field(default_factory=set)  # deliveries whose records were replayed


def restore(
    store: PartitionStore, reader: Consumer, topic: str, partition: int, timeout_s: float = 300.0
) -> RestoreResult:
    """Replay the changelog from the store's position to its end (the last stable offset).

    The end is where the reader reports end-of-partition, not a watermark asked for beforehand:
    the read must cover every committed record, whatever a broker answers to ListOffsets.
    """
    started = time.perf_counter()
    result = RestoreResult()
    start = store.offsets().get(CHANGELOG_OFFSET, OFFSET_BEGINNING)
    reader.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + timeout_s
    try:
        at_end = False
        while not at_end:
            if time.monotonic() > deadline:
                raise RestoreError(f"restoring {topic}[{partition}] took longer than {timeout_s} s")
            batch = []
            for msg in reader.consume(_CHUNK, 0.1):
                error = msg.error()
                if error is None:
                    batch.append((msg.key(), msg.value(), msg.offset()))
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end = True
                elif error.code() == KafkaError._AUTO_OFFSET_RESET:
                    raise ChangelogMismatch(f"{topic}[{partition}] has no offset {start}: {error}")
                else:
                    raise RestoreError(f"reading {topic}[{partition}]: {error}")
            result.records += apply_changelog(store, batch, result.touched) if batch else 0
    finally:
        reader.unassign()
    result.seconds = time.perf_counter() - started
    return result
