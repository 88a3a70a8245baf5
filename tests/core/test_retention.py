"""Retention: a delivery final for longer than the retention is archived, by the clock that ends validity periods."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings

from consumer.core.delivery import DeliveryState
from consumer.core.processor import ARCHIVED, PartitionProcessor, kpi_record
from consumer.delivery import records
from consumer.delivery.merge import merge
from consumer.delivery.view import StateView, leftovers_of_archived
from consumer.state.changelog import ChangelogRecord, apply_changelog
from consumer.state.memory import MemoryStore
from consumer.state.store import OFFSETS_PREFIX
from tests.core.builders import delivery_event, mta, prepared
from tests.core.test_properties import histories

END = 10_000  # the validity end
RETENTION = 5_000


class Partition:
    """A processor over a memory store, checkpointed by hand: what the service does, without Kafka."""

    def __init__(self, retention: int | None = RETENTION, store: MemoryStore | None = None) -> None:
        self.store = store or MemoryStore()
        self.changelog: list[ChangelogRecord] = []
        self.retention = retention
        self.reopen()

    def reopen(self) -> None:
        """Forget everything uncommitted (a rewind, a restart)."""
        self.view = StateView(self.store)
        self.processor = PartitionProcessor(self.view, retention_ms=self.retention)

    def checkpoint(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        if now_ms is not None:
            self.processor.advance_clock(now_ms)
        kpis = self.processor.take_output().kpis
        changes = self.view.stage()
        self.changelog += [ChangelogRecord(k, v, len(self.changelog) + i) for i, (k, v) in enumerate(changes.items())]
        self.store.write(changes, {})
        return kpis


def sent_send(partition: Partition, delivery_id: str = "d") -> None:
    partition.processor.apply(
        [
            prepared(delivery_id, efs=True, to_deliver=3, validity_end=END),
            mta(delivery_id, "m1", "DELIVERED", at=100),
            mta(delivery_id, "m2", "HARD_BOUNCE", at=110, reason="user_unknown"),
            mta(delivery_id, "m1", "OPEN", at=120),
            mta(delivery_id, "m1", "OPEN", at=130),
            mta(delivery_id, "m3", "SOFT_BOUNCE", at=140, reason="mailbox_full"),
        ],
        now_ms=200,
    )


def archive(partition: Partition) -> dict[str, Any]:
    """Seen final at its validity end, then archived when the retention has passed: the archived KPI."""
    partition.checkpoint(now_ms=END)
    [archived] = partition.checkpoint(now_ms=END + RETENTION)
    return archived


def figures(delivery: DeliveryState) -> dict[str, Any]:
    return {k: v for k, v in kpi_record(delivery).items() if k not in ("archived", "version")}


def keys_of(store: MemoryStore, delivery_id: str) -> set[bytes]:
    prefixes = (records.messages_prefix(delivery_id), *records.counted_prefixes(delivery_id))
    return {key for prefix in prefixes for key, _ in store.scan(prefix)}


def test_a_final_delivery_is_archived_once_the_retention_has_passed() -> None:
    partition = Partition()
    sent_send(partition)
    partition.checkpoint(now_ms=300)
    [final] = partition.checkpoint(now_ms=END)  # the validity end fails the soft bounce
    assert final["final"] and not final["archived"]
    assert partition.checkpoint(now_ms=END + RETENTION - 1) == []  # not yet
    assert keys_of(partition.store, "d")

    [archived] = partition.checkpoint(now_ms=END + RETENTION)
    assert archived["archived"] and archived["version"] == final["version"] + 1
    assert {k: v for k, v in archived.items() if k not in ("archived", "version")} == {
        k: v for k, v in final.items() if k not in ("archived", "version")
    }
    assert keys_of(partition.store, "d") == set()  # messages and counted events gone
    assert partition.store.get(records.delivery_key("d")) is None
    assert records.decode_delivery(partition.store.get(records.archived_key("d"))).counters.opens_total == 2
    assert partition.processor.delivery_ids() == []  # out of memory


def test_deliveries_that_are_not_final_are_never_archived() -> None:
    partition = Partition()
    partition.processor.apply(
        [
            prepared("open-ended", efs=False, validity_end=None),
            mta("open-ended", "m1", "RELAYED", at=100),
            prepared("later", efs=False, validity_end=10**12),
            mta("later", "m1", "RELAYED", at=100),
        ],
        now_ms=200,
    )
    partition.checkpoint(now_ms=10**11)
    assert sorted(partition.processor.delivery_ids()) == ["later", "open-ended"]
    assert keys_of(partition.store, "open-ended") and keys_of(partition.store, "later")


def test_retention_counts_from_when_the_clock_saw_the_delivery_final() -> None:
    """Read long after its validity end (a backlog), a send is kept for the retention from then."""
    partition = Partition()
    sent_send(partition)
    [final] = partition.checkpoint(now_ms=END + 10 * RETENTION)
    assert final["final"] and not final["archived"]
    [archived] = partition.checkpoint(now_ms=END + 11 * RETENTION)
    assert archived["archived"]


def test_a_future_dated_event_does_not_bring_the_archive_forward() -> None:
    partition = Partition()
    sent_send(partition)
    partition.checkpoint(now_ms=END)
    # Dated far ahead, but the wall clock says END + 1: time moves to the wall clock at most.
    partition.processor.apply([mta("d", "m1", "CLICK", at=END + 10 * RETENTION)], now_ms=END + 1)
    [kpi] = partition.checkpoint()
    assert not kpi["archived"]
    assert keys_of(partition.store, "d")


def test_late_input_for_an_archived_delivery_changes_nothing() -> None:
    partition = Partition()
    sent_send(partition)
    archived = archive(partition)
    partition.processor.apply(
        [mta("d", "m1", "CLICK", at=END + RETENTION + 1), delivery_event("d", "CANCELLED", at=END + RETENTION + 2)]
    )
    out = partition.processor.take_output()
    assert out.kpis == [] and out.sending_logs == []
    assert out.outcomes == {("CLICK", ARCHIVED): 1, ("CANCELLED", ARCHIVED): 1}
    assert (
        partition.processor.archived("d").counters
        == records.decode_delivery(partition.store.get(records.archived_key("d"))).counters
    )
    assert archived["clicks_total"] == 0


def test_compute_stats_on_an_archived_delivery_republishes_its_final_counters() -> None:
    partition = Partition()
    sent_send(partition)
    archived = archive(partition)
    partition.reopen()  # a restart: the archived delivery is not in memory
    assert partition.processor.compute_stats("d") is True
    [again] = partition.checkpoint()
    assert again["archived"] and again["version"] == archived["version"] + 1
    assert {k: v for k, v in again.items() if k != "version"} == {k: v for k, v in archived.items() if k != "version"}
    assert partition.processor.delivery_ids() == []
    assert partition.processor.compute_stats("unknown") is None


def test_archiving_is_redone_after_a_rewind_and_restores_from_the_changelog() -> None:
    partition = Partition()
    sent_send(partition)
    partition.checkpoint(now_ms=END)
    partition.processor.advance_clock(END + RETENTION)  # archived in memory, never committed
    partition.reopen()
    assert partition.processor.delivery_ids() == ["d"] and keys_of(partition.store, "d")
    [archived] = partition.checkpoint(now_ms=END + RETENTION)
    assert archived["archived"]
    restored = MemoryStore()
    apply_changelog(restored, partition.changelog, merge)
    state = {k: v for k, v in restored.scan(b"") if not k.startswith(OFFSETS_PREFIX)}
    assert state == dict(partition.store.scan(b""))  # the tombstones deleted what the archive deleted


@settings(max_examples=150, deadline=None)
@given(histories())
def test_an_archived_kpi_is_the_final_kpi_whatever_the_history(events: list[dict[str, Any]]) -> None:
    """Against the same history without retention: the archived KPIs are its final KPIs."""
    late = 10**6  # beyond every validity end the histories use, and beyond it plus the retention
    kept, archiving = Partition(retention=None), Partition(retention=RETENTION)
    finals: dict[str, dict[str, Any]] = {}
    for partition in (kept, archiving):
        partition.processor.apply(events, now_ms=1_000)
        partition.checkpoint(now_ms=late)
        partition.checkpoint(now_ms=late + RETENTION)
    for delivery_id in kept.processor.delivery_ids():
        finals[delivery_id] = figures(kept.processor.delivery(delivery_id))
    for delivery_id, final in finals.items():
        archived = archiving.processor.archived(delivery_id)
        if kept.processor.delivery(delivery_id).final:
            assert archived is not None and figures(archived) == final
        else:
            assert archived is None and delivery_id in archiving.processor.delivery_ids()


def test_archived_deliveries_cost_a_small_constant_and_nothing_per_step(monkeypatch) -> None:
    """Thousands of archived deliveries: opening the partition decodes the live ones only, a clock step walks the
    live ones only, the compacted changelog holds one small record for each archived one."""
    partition = Partition()
    archived = [f"old-{i:05d}" for i in range(2_000)]
    for delivery_id in archived:
        sent_send(partition, delivery_id)
    partition.checkpoint(now_ms=END)
    partition.checkpoint(now_ms=END + RETENTION)
    sent_send(partition, "live")  # a send of today: its validity end is in the future of its own clock
    partition.processor.apply([prepared("live", efs=True, validity_end=10**12, at=END + RETENTION)])
    partition.checkpoint()

    decoded: list[bytes] = []
    decode = records.decode_delivery
    monkeypatch.setattr(records, "decode_delivery", lambda value: decoded.append(value) or decode(value))
    partition.reopen()
    assert partition.processor.delivery_ids() == ["live"] and len(decoded) == 1
    walked: list[str] = []
    due = PartitionProcessor._archive_due
    counting = lambda self, delivery: walked.append(delivery.delivery_id) or due(self, delivery)  # noqa: E731
    monkeypatch.setattr(PartitionProcessor, "_archive_due", counting)
    partition.processor.advance_clock(END + 2 * RETENTION)
    assert walked == ["live"]

    compacted = {record.key: record.value for record in partition.changelog}  # what compaction keeps: the last per key
    live_records = {key: value for key, value in compacted.items() if value is not None}
    sizes = [len(key) + len(value) for key, value in live_records.items() if key.startswith(records.ARCHIVED)]
    assert len(sizes) == len(archived) and max(sizes) < 700  # about 620 bytes for these ids
    assert len(live_records) - len(archived) < 10  # the live send, the watermark


def test_a_restore_that_missed_the_tombstones_drops_what_an_archived_delivery_left() -> None:
    partition = Partition()
    sent_send(partition)
    partition.checkpoint(now_ms=END)
    before = dict(partition.store.scan(b""))
    archive(partition)
    # A store offline while the changelog's tombstones were compacted away: it restores the archived record only.
    stale = MemoryStore()
    stale.write(before, {})
    stale.write({records.archived_key("d"): partition.store.get(records.archived_key("d"))}, {})
    leftovers = leftovers_of_archived(stale, "d")
    assert set(leftovers) == keys_of(stale, "d") | {records.delivery_key("d")} and keys_of(stale, "d")
    stale.write(dict.fromkeys(leftovers), {})
    assert PartitionProcessor(StateView(stale)).delivery_ids() == []  # no live copy beside the archived one
    assert leftovers_of_archived(partition.store, "never-archived") == []
