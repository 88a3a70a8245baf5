"""The runtime's side of a stateful stage: its named stores, each with a changelog, restored on assignment and
written at the checkpoint.

A stage declares its stores (StoreSpec: a name, its changelog topic, and where a replayed record must not just
overwrite, a merge) and keeps its own record codec over the bytes. The runtime does the rest, the same for every
stage: open each store per partition, restore it from its changelog (records of checkpoints that never committed
are skipped: state/changelog.py), produce the staged changes to the changelog at the checkpoint, stamped with the
input offsets they came from, and after the commit write them to the store with those offsets and the changelog
position, in one batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message
from confluent_kafka.admin import AdminClient

from consumer.kafka.admin import TopicLayoutError
from consumer.kafka.config import reader_config
from consumer.kafka.producer import OutputProducer
from consumer.ops.metrics import Metrics
from consumer.runtime.errors import StartupError, StateFailed
from consumer.runtime.recovery import ChangelogMismatch, RestoreResult, restore
from consumer.runtime.stage import Beat
from consumer.runtime.stores import DEFAULT_STORE, StoreFactory
from consumer.state.changelog import CHANGELOG_OFFSET, Merge, overwrite, stamp
from consumer.state.store import Changes, PartitionStore, StoreError


@dataclass(frozen=True)
class StoreSpec:
    """One named store of a stage: its changelog topic (compacted, co-partitioned with the inputs) and its merge."""

    changelog: str
    name: str = DEFAULT_STORE
    merge: Merge = overwrite
    # A store whose last checkpoint is older than this is emptied before its restore, which then replays the whole
    # changelog. Compaction drops a tombstone delete.retention.ms after it was written: a store offline longer may
    # have missed the deletion of a key it still holds, and would keep the key for good (for a stage that erases
    # personal data on request, that is the data it was asked to erase). None: kept however old.
    max_offline_ms: int | None = None


@dataclass
class Restored:
    """A partition's store after its restore, and what the replay touched (for the stage's own repair)."""

    store: PartitionStore
    result: RestoreResult


# The store's offsets entry: when its last checkpoint was persisted (epoch ms; "@" is in no topic name).
PERSISTED_AT = "@persisted_at"


class _NextOffset:
    """Learns, from the last changelog record's delivery report, where the changelog continues."""

    def __init__(self) -> None:
        self.value: int | None = None

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is None:  # the producer records failures itself
            self.value = message.offset() + 1


@dataclass
class StagedChanges:
    """A partition's checkpoint of its stores: the changes produced, and where each changelog continues."""

    changes: dict[str, Changes] = field(default_factory=dict)
    next_offsets: dict[str, _NextOffset] = field(default_factory=dict)


class ChangelogStores:
    """The named stores of one stage, per partition."""

    def __init__(
        self,
        specs: Sequence[StoreSpec],
        factory: StoreFactory,
        metrics: Metrics,
        log: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self._clock = clock
        self._factory = factory
        self._metrics = metrics
        self._log = log
        self._reader: Consumer | None = None

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(spec.changelog for spec in self.specs.values())

    def prepare(self) -> None:
        self._factory.prepare()

    def use_reader(self, reader: Consumer) -> None:
        """The consumer that reads the changelogs on restore (never joins its group)."""
        self._reader = reader

    def stop(self) -> None:
        if self._reader is not None:
            self._reader.close()

    # -- assignment -----------------------------------------------------------------------------------------------
    def open(
        self, partitions: Sequence[int], committed: Mapping[int, Mapping[str, int]], group: str, beat: Beat
    ) -> dict[int, dict[str, Restored]]:
        """Open every store of these partitions and bring it up to its changelog's end (what the group committed)."""
        opened: dict[int, dict[str, Restored]] = {partition: {} for partition in partitions}
        if not partitions:
            return opened
        for spec in self.specs.values():
            for partition, restored in self._restore(spec, partitions, committed, group, beat).items():
                opened[partition][spec.name] = restored
        return opened

    def _restore(
        self,
        spec: StoreSpec,
        partitions: Sequence[int],
        committed: Mapping[int, Mapping[str, int]],
        group: str,
        beat: Beat,
    ) -> dict[int, Restored]:
        assert self._reader is not None, "use_reader() comes first"
        stores = {partition: self._factory.open(partition, spec.name) for partition in partitions}
        stores = {partition: self._unless_stale(spec, partition, store) for partition, store in stores.items()}
        while True:
            try:
                results = restore(stores, self._reader, spec.changelog, group, committed, beat, merge=spec.merge)
                break
            except ChangelogMismatch as exc:
                self._log.warning("state_discarded", store=spec.name, partition=exc.partition, reason=str(exc))
                stores[exc.partition] = self._factory.discard(exc.partition, stores[exc.partition], spec.name)
            except StoreError as exc:
                raise StateFailed(str(exc)) from None
        for partition, result in results.items():
            self._metrics.restore_records.inc(result.records)
            self._metrics.restore_seconds.observe(result.seconds)
            if result.skipped:
                self._log.info("restore_skipped", store=spec.name, partition=partition, uncommitted=result.skipped)
        return {partition: Restored(stores[partition], results[partition]) for partition in partitions}

    def _unless_stale(self, spec: StoreSpec, partition: int, store: PartitionStore) -> PartitionStore:
        """The store, or an empty one if its last checkpoint is older than the spec's max_offline_ms."""
        limit_ms = spec.max_offline_ms
        persisted = store.offsets().get(PERSISTED_AT)
        if limit_ms is None or persisted is None or self._clock() * 1000 - persisted <= limit_ms:
            return store
        reason = f"last checkpoint {round(self._clock() - persisted / 1000)} s ago, beyond {limit_ms / 1000:.0f} s"
        self._log.warning("state_discarded", store=spec.name, partition=partition, reason=reason)
        return self._factory.discard(partition, store, spec.name)

    def release(self, stores: Mapping[str, PartitionStore]) -> None:
        for store in stores.values():
            self._factory.release(store)

    # -- checkpoint -------------------------------------------------------------------------------------------------
    def produce(
        self, producer: OutputProducer, partition: int, changes: Mapping[str, Changes], consumed: Mapping[str, int]
    ) -> StagedChanges:
        """Produce each store's changes to its changelog, stamped with the input offsets this checkpoint commits."""
        staged = StagedChanges()
        headers = stamp(consumed)
        for name, store_changes in changes.items():
            next_offset = staged.next_offsets[name] = _NextOffset()
            staged.changes[name] = store_changes
            topic, records = self.specs[name].changelog, list(store_changes.items())
            if records:  # the last record's delivery report says where the changelog continues
                producer.produce_many(topic, records[:-1], partition, headers)
                producer.produce(topic, records[-1][1], records[-1][0], partition, headers, next_offset)
        return staged

    def persist(
        self, stores: Mapping[str, PartitionStore], staged: StagedChanges | None, consumed: Mapping[str, int]
    ) -> None:
        """After the commit: each store gets its committed changes, the input offsets and its changelog position."""
        for name, store in stores.items():
            offsets = dict(consumed)
            changes = staged.changes.get(name, {}) if staged else {}
            next_offset = staged.next_offsets.get(name) if staged else None
            if next_offset is not None and next_offset.value is not None:
                offsets[CHANGELOG_OFFSET] = next_offset.value
            if self.specs[name].max_offline_ms is not None:
                offsets[PERSISTED_AT] = int(self._clock() * 1000)
            if changes or offsets:
                store.write(changes, offsets)


class ChangelogStage:
    """The lifecycle every stage with named stores shares: the stores' preparation, a start that checks the stage's
    topic layout and makes the changelog reader, and its stop. A stage sets `group_id` and `_changelogs` and says
    what its layout must be (check_layout)."""

    group_id: str
    _changelogs: ChangelogStores

    def prepare(self) -> None:
        self._changelogs.prepare()

    def start(self, base_config: dict[str, Any]) -> None:
        try:
            self.check_layout(AdminClient(base_config))
        except TopicLayoutError as exc:
            raise StartupError(str(exc)) from None
        self.use_reader(Consumer(reader_config(base_config, self.restore_group, reset="error")))

    def check_layout(self, admin: AdminClient) -> None:
        """Raise TopicLayoutError unless the stage's topics are there and partitioned as its state needs."""
        raise NotImplementedError

    @property
    def restore_group(self) -> str:
        """The changelog reader's: never joined, only looked up (DESCRIBE)."""
        return f"{self.group_id}.restore"

    def use_reader(self, reader: Consumer) -> None:
        """The consumer that reads the changelogs on restore (start() makes a real one; tests may pass fakes)."""
        self._changelogs.use_reader(reader)

    def stop(self) -> None:
        self._changelogs.stop()
