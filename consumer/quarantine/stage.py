"""The quarantine stage: address.signals -> each address's status on the compacted address.quarantine, with the
per-address state in a named store restored from its changelog.

Co-partitioned: partition p of address.signals, of the changelog and of address.quarantine belong together (a
signal is keyed by its normal address, and the status record goes to the partition its signals came from). The
checkpoint advances the clock with the wall clock (time-driven changes, idle addresses dropped), then produces one
complete AddressStatus per changed address, a tombstone per erased one, and the changelog of the state; the store is
written after the commit. Addresses are personal data: logs name them only by address_ref, metrics never.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message
from confluent_kafka.admin import AdminClient

from consumer.codec.avro import AvroCodec
from consumer.codec.errors import InvalidEvent, ProcessingError
from consumer.codec.schemas import ADDRESS_SIGNAL, ADDRESS_STATUS
from consumer.kafka import admin as topic_admin
from consumer.kafka.producer import OutputProducer
from consumer.ops.metrics import Metrics, Tally
from consumer.quarantine.intake import check_signal
from consumer.quarantine.partition import QuarantinePartition
from consumer.quarantine.privacy import address_ref
from consumer.quarantine.processor import ApplyFailed, QuarantineOutput
from consumer.quarantine.records import status_record
from consumer.quarantine.rules import ADDRESS_STATUSES, Rules
from consumer.quarantine.signals import FORGET, Signal, normal_address
from consumer.quarantine.state import Limits
from consumer.quarantine.state_codec import CLOCK, address_key, decode_address
from consumer.quarantine.view import committed_status_counts
from consumer.runtime.changelogs import ChangelogStage, ChangelogStores, StagedChanges, StoreSpec
from consumer.runtime.dead_letters import DeadLetters
from consumer.runtime.settings import Settings
from consumer.runtime.stage import Beat, Coordinates, PartitionWork, PoisonRecord
from consumer.runtime.stores import StoreFactory
from consumer.state.store import PartitionStore, StoreError

STORE = "addresses"


def rules_of(settings: Settings) -> Rules:
    return Rules(
        count_once_within_ms=round(settings.quarantine_error_window_s * 1000),
        quarantine_at=settings.quarantine_threshold,
        reset_after_ms=round(settings.quarantine_reset_after_s * 1000),
        mailbox_full_release_ms=round(settings.mailbox_full_release_s * 1000),
    )


def limits_of(settings: Settings) -> Limits:
    return Limits(history_size=settings.recipient_history, idle_after_ms=round(settings.address_idle_after_s * 1000))


@dataclass
class _Staged:
    changelog: StagedChanges
    output: QuarantineOutput


@dataclass
class _Batch:
    signals: list[tuple[str, Signal]]
    origins: list[Coordinates]
    done: dict[str, int]  # topic -> next offset, once the batch is applied


class QuarantineStage(ChangelogStage):
    name = "quarantine"

    def __init__(self, settings: Settings, metrics: Metrics, log: Any) -> None:
        t = self._topics = settings.topics
        self.group_id = f"{settings.group_id}.quarantine"
        self.inputs: tuple[str, ...] = (t.address_signals,)
        self.operations = {
            t.address_signals: ("READ",),
            t.address_quarantine: ("WRITE",),
            t.dlq: ("WRITE",),
            t.quarantine_changelog: ("READ", "WRITE"),  # restored from, and written at each checkpoint
        }
        self.poison: set[Coordinates] = set()
        self.rules, self.limits = rules_of(settings), limits_of(settings)
        self._max_skew_ms = round(settings.max_clock_skew_s * 1000)
        self._metrics = metrics
        self._log = log.bind(stage=self.name)
        stores = StoreFactory(settings.store, settings.state_dir, self.group_id)
        # A store offline longer than the changelog keeps its tombstones may hold an address forgotten meanwhile.
        offline_ms = int(topic_admin.COMPACTED["delete.retention.ms"])
        spec = StoreSpec(t.quarantine_changelog, name=STORE, max_offline_ms=offline_ms)
        self._changelogs = ChangelogStores([spec], stores, metrics, self._log)
        self._signal_codec = AvroCodec.named(ADDRESS_SIGNAL)
        self._status_codec = AvroCodec.named(ADDRESS_STATUS)
        # The runner's partitions, seen from HTTP threads: a reader sees a partition whole or not at all.
        self._partitions: dict[int, QuarantinePartition] = {}
        self._lock = threading.Lock()
        self._counts: dict[int, dict[str, int]] = {}  # addresses by status per owned partition, as committed

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    def check_layout(self, admin: AdminClient) -> None:
        # The dead-letter topic too: a dead letter keeps its input's partition number.
        topic_admin.check_same_partitions(admin, (*self._topics.quarantine, self._topics.dlq))

    def attach(self, producer: OutputProducer, dead_letters: DeadLetters) -> None:
        self._producer = producer
        self._dead_letters = dead_letters

    # -- partitions --------------------------------------------------------------------------------------------------
    def open(
        self, partitions: Sequence[int], committed: Mapping[int, Mapping[str, int]], beat: Beat
    ) -> dict[int, PartitionWork]:
        restored = self._changelogs.open(partitions, committed, self.restore_group, beat)
        opened = {}
        for partition in partitions:
            store, result = restored[partition][STORE].store, restored[partition][STORE].result
            opened[partition] = self.partition(partition, store)
            self._log.info("restored", partition=partition, records=result.records, seconds=round(result.seconds, 3))
        with self._lock:
            self._partitions.update(opened)
        for partition, work in opened.items():
            self._observe_state(partition, work.store)
        return dict(opened)

    def partition(self, partition: int, store: PartitionStore) -> QuarantinePartition:
        """A partition's work over its (restored) store, with the instance's rules."""
        return QuarantinePartition(partition, store, self.rules, self.limits)

    def close(self, work: PartitionWork) -> None:
        assert isinstance(work, QuarantinePartition)
        with self._lock:
            self._partitions.pop(work.partition, None)
        self._observe_state(work.partition, None)
        self._changelogs.release({STORE: work.store})

    # -- processing --------------------------------------------------------------------------------------------------
    def process(self, messages: Sequence[Message], works: dict[int, PartitionWork], now_s: float) -> None:
        """Decode and apply a poll's signals partition by partition; a record that breaks the contract is
        dead-lettered. An offset counts as done only once its record is applied or dead-lettered."""
        now_ms = int(now_s * 1000)
        batches: dict[int, _Batch] = {}
        for msg in messages:
            work = works.get(msg.partition())
            if work is None:  # revoked meanwhile; the owner reads it from the committed offset
                continue
            where = Coordinates(msg.topic(), msg.partition(), msg.offset())
            batch = batches.setdefault(where.partition, _Batch([], [], {}))
            if where in self.poison:
                error = ProcessingError("value", "processing this record raised; see the log")
                self._dead_letters.send(msg, error, work.tally)
            elif (decoded := self._decode(msg, where, work.tally, now_ms + self._max_skew_ms)) is not None:
                batch.signals.append(decoded)
                batch.origins.append(where)
            batch.done[where.topic] = where.offset + 1
        for partition, batch in batches.items():
            work = works[partition]
            assert isinstance(work, QuarantinePartition)
            self._apply(work, batch, now_ms)
            work.consumed.update(batch.done)

    def _decode(self, msg: Message, where: Coordinates, tally: Tally, latest_ms: int) -> tuple[str, Signal] | None:
        try:
            address, signal = check_signal(self._signal_codec.decode(msg.value()), msg.key(), latest_ms)
        except InvalidEvent as exc:
            self._dead_letters.send(msg, exc, tally)
            return None
        except Exception:  # a decoder bug on strange input: set the record aside, keep the stream going
            self._log.exception("decode_failed", **where._asdict())
            self._dead_letters.send(msg, ProcessingError("value", "decoding this record raised; see the log"), tally)
            return None
        if signal.kind == FORGET:  # audited where it is given; here, that it reached the state
            self._log.info("forget_received", address=address_ref(address), actor=signal.actor, **where._asdict())
        return address, signal

    def _apply(self, work: QuarantinePartition, batch: _Batch, now_ms: int) -> None:
        if not batch.signals:
            return
        try:
            work.processor.apply(batch.signals, now_ms)
        except ApplyFailed as exc:
            if isinstance(exc.__cause__, StoreError):  # the store failed, not the signal
                raise exc.__cause__ from None
            self._log.exception("apply_failed", **batch.origins[exc.index]._asdict())
            raise PoisonRecord(batch.origins[exc.index]) from exc

    # -- checkpoint --------------------------------------------------------------------------------------------------
    def stage_checkpoint(self, work: PartitionWork, now_ms: int | None) -> _Staged | None:
        assert isinstance(work, QuarantinePartition)
        if now_ms is not None:
            work.processor.advance_clock(now_ms)
        out = work.processor.take_output()
        self._tally(work.tally, out)  # counted when this checkpoint commits
        changes = work.view.stage()
        if not (changes or out.statuses or out.tombstones):
            return None
        produce, topic, encode = self._producer.produce, self._topics.address_quarantine, self._status_codec.encode
        for address in out.tombstones:  # before the statuses: an address in both was erased, then signalled again
            produce(topic, None, address.encode(), work.partition)
        for record in out.statuses:
            produce(topic, encode(record), record["address"].encode(), work.partition)
        changelog = self._changelogs.produce(self._producer, work.partition, {STORE: changes}, work.consumed)
        return _Staged(changelog, out)

    def persist(self, work: PartitionWork, staged: object | None) -> None:
        assert isinstance(work, QuarantinePartition)
        assert staged is None or isinstance(staged, _Staged)
        self._changelogs.persist({STORE: work.store}, staged and staged.changelog, work.consumed)
        if staged is not None:
            self._observe_state(work.partition, work.store)

    def _tally(self, tally: Tally, out: QuarantineOutput) -> None:
        m = self._metrics
        for (kind, outcome), count in out.outcomes.items():
            tally.add(m.quarantine_signals.labels(kind, outcome), count)
        for (old, new), count in out.transitions.items():
            tally.add(m.quarantine_transitions.labels(old or "NONE", new or "NONE"), count)
        tally.add(m.quarantine_records.labels("status"), len(out.statuses))
        tally.add(m.quarantine_records.labels("tombstone"), len(out.tombstones))

    def _observe_state(self, partition: int, store: PartitionStore | None) -> None:
        """Addresses by status over the owned partitions, from the counts committed with their state: this
        partition's read again (None: no longer owned)."""
        if store is None:
            self._counts.pop(partition, None)
        else:
            self._counts[partition] = committed_status_counts(store)
        totals: Counter[str] = Counter()
        for counts in self._counts.values():
            totals.update(counts)
        for status in ADDRESS_STATUSES:
            self._metrics.quarantine_addresses.labels(status).set(totals[status])

    # -- what the instance shows (HTTP threads: committed state only) ------------------------------------------------
    def owned_partitions(self) -> set[int]:
        with self._lock:
            return set(self._partitions)

    def committed_status(self, address: str) -> dict[str, Any] | None:
        """The address's AddressStatus record as last committed (what address.quarantine holds for it); None if no
        partition of this instance holds the address (another owns it, or nothing is known of it)."""
        address = normal_address(address)
        key = address_key(address)
        with self._lock:
            partitions = list(self._partitions.values())
        for work in partitions:
            try:
                value = work.store.read_one(key)
                if value is None:
                    continue
                clock = work.store.read_one(CLOCK)
            except StoreError:  # the partition moved away meanwhile
                continue
            state, _ = decode_address(address, value, self.limits.history_size)
            return status_record(state, 0 if clock is None else int(clock), self.rules)
        return None


def find_quarantine_stage(stages: Iterable[object]) -> QuarantineStage | None:
    """The quarantine stage among an instance's stages (the view's address page reads it)."""
    return next((stage for stage in stages if isinstance(stage, QuarantineStage)), None)
