"""Restore partitions' state from the changelog before they process anything."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from consumer.kafka.access import reader_denial
from consumer.state.changelog import ChangelogRecord, Merge, apply_changelog, changelog_position, origin_of, overwrite
from consumer.state.store import PartitionStore

_CHUNK = 10_000


class RestoreError(RuntimeError):
    pass


class ChangelogMismatch(RestoreError):
    """A store's changelog position does not exist in the changelog (the topic was recreated)."""

    def __init__(self, partition: int, detail: str) -> None:
        super().__init__(detail)
        self.partition = partition


@dataclass
class RestoreResult:
    records: int = 0
    skipped: int = 0  # records from checkpoints that never committed (state/changelog.py)
    seconds: float = 0.0
    touched: set[bytes] = field(default_factory=set)  # keys whose records were replayed


def restore(
    stores: Mapping[int, PartitionStore],
    reader: Consumer,
    topic: str,
    group: str,
    committed: Mapping[int, Mapping[str, int]],
    beat: Callable[[str], None] = lambda _step: None,
    timeout_s: float = 300.0,
    merge: Merge = overwrite,
) -> dict[int, RestoreResult]:
    """Replay each partition's changelog from its store's position to its end, all partitions at once, merging
    records with `merge` and skipping those beyond the partition's `committed` input offsets.
    `group` is the reader's (never joined); a missing permission to read is Denied, not retried.

    The end is where the reader reports end-of-partition (the last stable offset), not a watermark
    asked for beforehand: the read must cover every committed record whatever ListOffsets answers.
    """
    started = time.perf_counter()
    results = {partition: RestoreResult() for partition in stores}
    starts = {p: changelog_position(store.offsets(), OFFSET_BEGINNING) for p, store in stores.items()}
    reader.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
    pending = set(stores)
    deadline = time.monotonic() + timeout_s
    try:
        while pending:
            beat("restore")
            if time.monotonic() > deadline:
                raise RestoreError(f"restoring {topic} {sorted(pending)} took longer than {timeout_s} s")
            batches: dict[int, list[ChangelogRecord]] = {}
            for msg in reader.consume(_CHUNK, 0.05):
                partition, error = msg.partition(), msg.error()
                if error is None:
                    record = ChangelogRecord(msg.key(), msg.value(), msg.offset(), origin_of(msg.headers()))
                    batches.setdefault(partition, []).append(record)
                elif error.code() == KafkaError._PARTITION_EOF:
                    if partition in pending:
                        pending.discard(partition)
                        results[partition].seconds = time.perf_counter() - started
                elif error.code() == KafkaError._AUTO_OFFSET_RESET:
                    raise ChangelogMismatch(partition, f"{topic}[{partition}] has no offset {starts[partition]}")
                else:
                    raise reader_denial(error, topic, group) or RestoreError(f"reading {topic}: {error}")
            for partition, batch in batches.items():
                applied = apply_changelog(stores[partition], batch, merge, committed.get(partition, {}))
                result = results[partition]
                result.touched |= applied.touched
                result.records += len(batch)
                result.skipped += applied.skipped
    finally:
        reader.unassign()
    return results
