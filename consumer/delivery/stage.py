"""The delivery stage: deliveries, MTA events and control commands -> message statuses, KPIs and sending logs (and,
with --quarantine, address signals), with partitioned state restored from the changelog. Its checkpoint output is
one complete KPI snapshot per changed delivery and the changelog of the state changes; the state is written after
the commit."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message
from confluent_kafka.admin import AdminClient

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import ADDRESS_SIGNAL, DELIVERY_KPI, SENDING_LOG
from consumer.core.address_signals import normal_address
from consumer.core.delivery import DeliveryState
from consumer.core.events import DELIVERY_EVENT_TYPES
from consumer.core.processor import Output, kpi_record
from consumer.core.status import MessageState
from consumer.delivery import records
from consumer.delivery.intake import Intake
from consumer.delivery.merge import merge
from consumer.delivery.partition import PartitionRuntime
from consumer.delivery.view import leftovers_of_archived
from consumer.kafka import admin as topic_admin
from consumer.kafka.producer import ANY_PARTITION, OutputProducer
from consumer.ops.metrics import Metrics, Tally
from consumer.runtime.changelogs import ChangelogStage, ChangelogStores, Restored, StagedChanges, StoreSpec
from consumer.runtime.dead_letters import DeadLetters
from consumer.runtime.settings import Settings
from consumer.runtime.stage import Beat, Coordinates, PartitionWork
from consumer.runtime.stores import DEFAULT_STORE, StoreFactory
from consumer.state.store import PartitionStore


@dataclass
class _Staged:
    changelog: StagedChanges
    output: Output


class DeliveryStage(ChangelogStage):
    name = "delivery"

    def __init__(self, settings: Settings, metrics: Metrics, log: Any) -> None:
        self._settings = settings
        self._topics = settings.topics
        self.group_id = settings.group_id
        self.inputs: tuple[str, ...] = settings.topics.inputs
        t = settings.topics
        self.operations = {topic: ("READ",) for topic in self.inputs}
        self.operations |= {topic: ("WRITE",) for topic in (t.kpis, t.sending_logs, t.dlq)}
        if settings.quarantine:
            self.operations[t.address_signals] = ("WRITE",)
        self.operations[t.changelog] = ("READ", "WRITE")  # restored from, and written at each checkpoint
        self.poison: set[Coordinates] = set()
        self._metrics = metrics
        self._log = log.bind(stage=self.name)
        stores = StoreFactory(settings.store, settings.state_dir, settings.group_id)
        self._changelogs = ChangelogStores([StoreSpec(t.changelog, merge=merge)], stores, metrics, self._log)
        self._kpi_codec = AvroCodec.named(DELIVERY_KPI)
        self._log_codec = AvroCodec.named(SENDING_LOG)
        self._signal_codec = AvroCodec.named(ADDRESS_SIGNAL)
        self.runtimes: dict[int, PartitionRuntime] = {}  # the runner's, seen from HTTP threads
        self._kpis: dict[str, dict[str, Any]] = {}  # last published KPI per owned delivery, for HTTP
        # HTTP threads read `runtimes` and `_kpis` while rebalances and checkpoints change them: a reader sees all of
        # a change or none of it (never half a checkpoint's KPIs, nor a revoked partition's).
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def check_layout(self, admin: AdminClient) -> None:
        topic_admin.check_copartitioned(admin, self._topics)

    def attach(self, producer: OutputProducer, dead_letters: DeadLetters) -> None:
        self._producer = producer
        self._intake = Intake(
            self._topics,
            dead_letters,
            self._metrics,
            self._log,
            int(self._settings.max_clock_skew_s * 1000),
            self._produce_applied,
            self.poison,
        )

    # -- partitions --------------------------------------------------------------------------------------------
    def open(
        self, partitions: Sequence[int], committed: Mapping[int, Mapping[str, int]], beat: Beat
    ) -> dict[int, PartitionWork]:
        """Restore the stores (the runtime's), then repair what the replay touched."""
        restored = self._changelogs.open(partitions, committed, self.restore_group, beat)
        opened = {p: self._runtime_after_restore(p, restored[p][DEFAULT_STORE]) for p in partitions}
        kpis = {d: kpi_record(r.processor.delivery(d)) for r in opened.values() for d in r.processor.delivery_ids()}
        with self._lock:
            self.runtimes.update(opened)
            self._kpis.update(kpis)
        self._observe_state()
        return dict(opened)

    def _runtime_after_restore(self, partition: int, restored: Restored) -> PartitionRuntime:
        result = restored.result
        touched = {delivery_id for key in result.touched if (delivery_id := records.delivery_of(key)) is not None}
        store = restored.store
        leftovers = [key for delivery_id in sorted(touched) for key in leftovers_of_archived(store, delivery_id)]
        if leftovers:  # before the processor loads the live deliveries
            restored.store.write(dict.fromkeys(leftovers), {})
            self._log.warning("restore_dropped_archived_leftovers", partition=partition, keys=len(leftovers))
        runtime = self.runtime(partition, restored.store)
        for delivery_id in sorted(touched):  # replayed records are made consistent by a recompute
            if runtime.processor.compute_stats(delivery_id, publish=False) is False:
                self._metrics.stats_mismatches.labels("restore").inc()
                self._log.warning("restore_repaired_counters", delivery_id=delivery_id, partition=partition)
        self._log.info("restored", partition=partition, records=result.records, seconds=round(result.seconds, 3))
        return runtime

    def runtime(self, partition: int, store: PartitionStore) -> PartitionRuntime:
        """A partition's runtime over its (restored) store, with the instance's rules."""
        retention_s = self._settings.state_retention_s
        retention_ms = None if retention_s is None else int(retention_s * 1000)
        settings = self._settings
        return PartitionRuntime(partition, store, settings.efs_default, retention_ms, settings.quarantine)

    def close(self, work: PartitionWork) -> None:
        assert isinstance(work, PartitionRuntime)
        with self._lock:
            self.runtimes.pop(work.partition, None)
            for delivery_id in work.processor.delivery_ids():
                self._kpis.pop(delivery_id, None)
        self._observe_state()
        self._changelogs.release({DEFAULT_STORE: work.store})

    # -- processing and checkpoint ------------------------------------------------------------------------------
    def process(self, messages: Sequence[Message], works: dict[int, PartitionWork], now_s: float) -> None:
        self._intake.process(messages, works, now_s)  # type: ignore[arg-type]  # our works are PartitionRuntimes

    def _produce_applied(self, runtime: PartitionRuntime) -> None:
        """Send the status changes and address signals as they happen, into the open transaction: the checkpoint
        then only has the KPIs and the changelog left to produce, which keeps it, and the event-to-KPI latency,
        short."""
        logs = runtime.processor.take_sending_logs()
        self._send_logs(logs, runtime.partition)
        runtime.tally.add(self._metrics.sending_logs_published, len(logs))
        self._send_signals(runtime.processor.take_address_signals(), runtime.tally)

    def _send_logs(self, logs: list[dict[str, Any]], partition: int) -> None:
        encode = self._log_codec.encode
        records = ((log["delivery_id"].encode(), encode(log)) for log in logs)
        self._producer.produce_many(self._topics.sending_logs, records, partition)

    def _send_signals(self, signals: list[dict[str, Any]], tally: Tally) -> None:
        """address.signals is partitioned by address, not by delivery: the configured partitioner places each
        signal by its key, the normal address, which is also the record's address."""
        produce, encode, topic = self._producer.produce, self._signal_codec.encode, self._topics.address_signals
        counted = self._metrics.address_signals
        for signal in signals:
            address = signal["address"] = normal_address(signal["address"])
            produce(topic, encode(signal), address.encode(), ANY_PARTITION)
            tally.add(counted.labels(signal["kind"]))

    def stage_checkpoint(self, work: PartitionWork, now_ms: int | None) -> _Staged | None:
        assert isinstance(work, PartitionRuntime)
        if now_ms is not None:
            work.processor.advance_clock(now_ms)
        out = work.processor.take_output()
        self._tally(work.tally, out)  # counted when this checkpoint commits, even one that changed nothing
        changes = work.view.stage()
        if not (changes or out.kpis or out.sending_logs or out.address_signals):
            return None
        self._produce_outputs(work.partition, out)
        self._send_signals(out.address_signals, work.tally)  # the validity end's, made at the checkpoint
        changelog = self._changelogs.produce(self._producer, work.partition, {DEFAULT_STORE: changes}, work.consumed)
        return _Staged(changelog, out)

    def persist(self, work: PartitionWork, staged: object | None) -> None:
        assert isinstance(work, PartitionRuntime)
        assert staged is None or isinstance(staged, _Staged)
        self._changelogs.persist({DEFAULT_STORE: work.store}, staged and staged.changelog, work.consumed)
        if staged is not None:
            for rejection in staged.output.rejections:
                self._log.warning("confirmation_rejected", **rejection._asdict())
            with self._lock:
                for kpi in staged.output.kpis:
                    if kpi["archived"]:  # its last KPI is on the topic; the instance's map holds live deliveries
                        self._kpis.pop(kpi["delivery_id"], None)
                    else:
                        self._kpis[kpi["delivery_id"]] = kpi
            self._observe_state()

    def _observe_state(self) -> None:
        """What the owned state costs: keys a restore would replay, deliveries held in memory."""
        with self._lock:
            runtimes = list(self.runtimes.values())
        self._metrics.state_keys.set(sum(runtime.store.approximate_keys() for runtime in runtimes))
        self._metrics.live_deliveries.set(sum(runtime.processor.live_deliveries for runtime in runtimes))

    def _produce_outputs(self, partition: int, out: Output) -> None:
        produce = self._producer.produce
        for kpi in out.kpis:
            produce(self._topics.kpis, self._kpi_codec.encode(kpi), kpi["delivery_id"].encode(), partition)
        self._send_logs(out.sending_logs, partition)  # the validity end's and compute-stats', made at the checkpoint

    def _tally(self, tally: Tally, out: Output) -> None:
        m = self._metrics
        for (kind, outcome), count in out.outcomes.items():
            topic = self._topics.deliveries if kind in DELIVERY_EVENT_TYPES else self._topics.mta_events
            tally.add(m.events.labels(topic, kind, outcome), count)
        for (old, new, efs), count in out.transitions.items():
            tally.add(m.transitions.labels(old or "NONE", new, str(efs).lower()), count)
        for rejection in out.rejections:
            tally.add(m.rejected_confirmations.labels(rejection.reason))
        tally.add(m.anomalies, out.anomalies)
        tally.add(m.kpis_published, len(out.kpis))
        tally.add(m.sending_logs_published, len(out.sending_logs))

    # -- what the instance shows (the Deployment view's, from HTTP threads: committed state only) --------------
    def published_kpis(self) -> dict[str, dict[str, Any]]:
        """The last published KPI of each delivery this instance owns."""
        with self._lock:
            return dict(self._kpis)

    def kpi(self, delivery_id: str) -> dict[str, Any] | None:
        """The last published KPI of a delivery this instance owns."""
        with self._lock:
            return self._kpis.get(delivery_id)

    def owned_partitions(self) -> set[int]:
        with self._lock:
            return set(self.runtimes)

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
        value = runtime.store.read_one(records.message_key(delivery_id, message_id))
        return None if value is None else (delivery, records.decode_message(value))

    def _owner_of(self, delivery_id: str) -> tuple[PartitionRuntime, DeliveryState] | None:
        """The partition holding the delivery's committed record, and that record: the processor's view of it holds
        the work in hand, which a rewind may still undo."""
        with self._lock:
            runtimes = list(self.runtimes.values())
        key = records.delivery_key(delivery_id)
        for runtime in runtimes:
            value = runtime.store.read_one(key)
            if value is not None:
                return runtime, records.decode_delivery(value)
        return None


def find_delivery_stage(stages: Iterable[object]) -> DeliveryStage | None:
    """The delivery stage among an instance's stages (the Deployment view and the demo read it)."""
    return next((stage for stage in stages if isinstance(stage, DeliveryStage)), None)
