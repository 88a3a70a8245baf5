"""The quarantine stage over fake clients, poll by poll: signals in, address.quarantine and the changelog out at the
checkpoint, dead letters, forget, metrics, the committed read path, and a restore from the changelog."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

from consumer.cli.run import build_service
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import ADDRESS_SIGNAL, ADDRESS_STATUS
from consumer.kafka.topics import Topics
from consumer.quarantine.rules import DAY_MS, ERRONEOUS, QUARANTINED, VALID
from consumer.quarantine.stage import QuarantineStage, find_quarantine_stage
from consumer.quarantine.state import AddressState
from consumer.quarantine.state_codec import ADDRESS, DEADLINE
from consumer.runtime.settings import Settings
from consumer.runtime.stage import Coordinates
from consumer.state.store import OFFSETS_PREFIX
from tests.runtime.fakes import NOW_S, FakeConsumer, FakeMessage, FakeProducer, FakeReader

NOW_MS = int(NOW_S * 1000)
SIGNALS = AvroCodec.named(ADDRESS_SIGNAL)
STATUSES = AvroCodec.named(ADDRESS_STATUS)
_ids = itertools.count()


class QuarantineDriver:
    """An instance's quarantine stage over fake clients, owning `partitions` memory-backed partitions restored
    from `changelog` (records of an earlier driver) up to the `committed` input offset of each."""

    def __init__(
        self, partitions: int = 2, changelog: list[Any] | None = None, committed: int = 0, **settings: Any
    ) -> None:
        self.topics = Topics()
        self.now_s = NOW_S
        self.settings = Settings(
            bootstrap_servers="unused:9092",
            state_dir=Path("unused"),
            store="memory",
            topics=self.topics,
            quarantine=True,
            **settings,
        )
        self.service = build_service(self.settings, clock=lambda: self.now_s)
        stage = find_quarantine_stage(self.service.stages)
        assert isinstance(stage, QuarantineStage)
        self.stage = stage
        [self.runner] = [runner for runner in self.service.runners if runner.stage is stage]
        self.producer, self.consumer = FakeProducer(), FakeConsumer()
        self.runner.attach(self.producer, self.consumer)  # type: ignore[arg-type]
        stage.use_reader(FakeReader(changelog or []))  # type: ignore[arg-type]
        owned = range(partitions)
        offsets = {p: {self.topics.address_signals: committed} for p in owned}
        self.runner.works.update(stage.open(owned, offsets, lambda _step: None))
        self._offsets: dict[int, itertools.count] = defaultdict(itertools.count)

    def signal(self, address: str, kind: str, at: int, partition: int = 0, key: str | None = None, **fields):
        record = {
            "event_id": fields.pop("event_id", f"e{next(_ids)}"),
            "address": address,
            "kind": kind,
            "occurred_at": at,
            "delivery_id": fields.pop("delivery_id", None if kind in ("RELEASE", "FORGET") else "d1"),
            "message_id": fields.pop("message_id", None if kind in ("RELEASE", "FORGET") else f"m{next(_ids)}"),
            "reason": fields.pop("reason", None),
            "actor": fields.pop("actor", "ops" if kind in ("RELEASE", "FORGET") else None),
        }
        key_bytes = (address.strip().lower() if key is None else key).encode()
        return self.raw(partition, key_bytes, SIGNALS.encode(record))

    def raw(self, partition: int, key: bytes | None, value: bytes | None) -> FakeMessage:
        offset = next(self._offsets[partition])
        return FakeMessage(self.topics.address_signals, partition, offset, key, value)

    def poll(self, messages: list[FakeMessage]) -> None:
        self.runner.process(messages)  # type: ignore[arg-type]

    def checkpoint(self) -> None:
        self.runner.checkpoint()

    def statuses(self) -> dict[bytes, dict[str, Any] | None]:
        """address.quarantine as a compacted reader ends up with it: the latest value per key."""
        latest: dict[bytes, dict[str, Any] | None] = {}
        for record in self.producer.on(self.topics.address_quarantine):
            latest[record.key] = None if record.value is None else STATUSES.decode(record.value)
        return latest

    def changelog(self) -> list[Any]:
        return self.producer.on(self.topics.quarantine_changelog)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.service.metrics.registry.get_sample_value(name, labels)


def test_signals_become_status_records_on_their_partition_at_the_checkpoint():
    driver = QuarantineDriver()
    driver.poll(
        [
            driver.signal("Jane@Example.com ", "SOFT_ERROR", NOW_MS - 1000, reason="mailbox_full"),
            driver.signal("bob@example.com", "HARD_ERROR", NOW_MS - 1000, partition=1, reason="user_unknown"),
        ]
    )
    assert driver.producer.on(driver.topics.address_quarantine) == []  # nothing before the checkpoint
    driver.checkpoint()
    statuses = driver.statuses()
    jane, bob = statuses[b"jane@example.com"], statuses[b"bob@example.com"]
    assert (jane["status"], jane["error_count"], jane["reason"]) == (ERRONEOUS, 1, "mailbox_full")
    assert (bob["status"], bob["reason"], bob["rule"]) == (QUARANTINED, "user_unknown", "HARD_ERROR")
    partitions = {r.key: r.partition for r in driver.producer.on(driver.topics.address_quarantine)}
    assert partitions == {b"jane@example.com": 0, b"bob@example.com": 1}  # co-partitioned with the input
    assert driver.metric("sendtrack_quarantine_addresses", status=ERRONEOUS) == 1
    assert driver.metric("sendtrack_quarantine_addresses", status=QUARANTINED) == 1
    assert driver.metric("sendtrack_quarantine_transitions_total", from_status="NONE", to_status=QUARANTINED) == 1
    assert driver.metric("sendtrack_quarantine_signals_total", kind="SOFT_ERROR", outcome="applied") == 1
    assert {(tp.partition, tp.offset) for tp in driver.producer.offsets[-1]} == {(0, 1), (1, 1)}
    assert {r.partition for r in driver.changelog()} == {0, 1}


def test_bad_records_are_dead_lettered_without_the_address_in_their_reason():
    driver = QuarantineDriver(partitions=1)
    driver.poll(
        [
            driver.raw(0, b"x@y", b"not avro"),
            driver.signal("secret@example.com", "SOFT_ERROR", NOW_MS, key="other@example.com"),
            driver.signal("secret@example.com", "SOFT_ERROR", NOW_MS + 3_600_000),  # beyond the clock skew
            driver.signal("secret@example.com", "RELEASE", NOW_MS, actor=None),
            driver.signal("secret@example.com", "DELIVERED", NOW_MS),
        ]
    )
    driver.checkpoint()
    letters = [
        {name: value.decode() for name, value in record.headers if name.startswith("sendtrack.error")}
        for record in driver.producer.on(driver.topics.dlq)
    ]
    assert [letter["sendtrack.error.code"] for letter in letters] == [
        "decode_error",
        "key_mismatch",
        "clock_skew",
        "invalid_field",
    ]
    assert not any("secret" in letter["sendtrack.error.message"] for letter in letters)
    assert driver.statuses()[b"secret@example.com"]["status"] == VALID
    assert driver.producer.offsets[-1][0].offset == 5  # every record done
    assert driver.metric("sendtrack_dlq_records_total", reason="key_mismatch") == 1


def test_forget_erases_the_address_from_the_store_the_changelog_and_the_output():
    driver = QuarantineDriver(partitions=1)
    driver.poll([driver.signal("a@x", "SOFT_ERROR", NOW_MS - 1000, reason="unreachable")])
    driver.checkpoint()
    written = {r.key for r in driver.changelog() if r.value is not None}
    assert any(key.startswith(ADDRESS) for key in written) and any(key.startswith(DEADLINE) for key in written)
    driver.poll([driver.signal("A@X", "FORGET", NOW_MS)])
    driver.checkpoint()
    assert driver.statuses() == {b"a@x": None}  # a tombstone, the latest word
    latest = {r.key: r.value for r in driver.changelog()}
    assert all(latest[key] is None for key in written if key.startswith((ADDRESS, DEADLINE)))
    [work] = driver.runner.works.values()
    assert [key for key, _ in work.store.scan(ADDRESS)] == [] and [key for key, _ in work.store.scan(DEADLINE)] == []
    assert driver.stage.committed_status("a@x") is None
    assert driver.metric("sendtrack_quarantine_addresses", status=ERRONEOUS) == 0
    assert driver.metric("sendtrack_quarantine_transitions_total", from_status=ERRONEOUS, to_status="NONE") == 1
    assert driver.metric("sendtrack_quarantine_signals_total", kind="FORGET", outcome="applied") == 1


def test_the_wall_clock_at_the_checkpoint_resets_a_counter_and_idle_addresses_are_dropped():
    driver = QuarantineDriver(partitions=1, quarantine_reset_after_s=3600, address_idle_after_s=7200)
    driver.poll([driver.signal("a@x", "SOFT_ERROR", NOW_MS, reason="unreachable")])
    driver.checkpoint()
    assert driver.statuses()[b"a@x"]["next_change_at"] == NOW_MS + 3_600_001
    driver.now_s += 3600
    driver.checkpoint()
    assert driver.statuses()[b"a@x"]["status"] == ERRONEOUS  # at exactly the reset time it holds
    driver.now_s += 1
    driver.checkpoint()
    assert (driver.statuses()[b"a@x"]["status"], driver.statuses()[b"a@x"]["rule"]) == (VALID, "COUNTER_RESET")
    driver.now_s += 3600
    driver.checkpoint()
    assert driver.statuses() == {b"a@x": None}  # idle two hours, valid: nothing to remember
    assert driver.metric("sendtrack_quarantine_records_published_total", record="tombstone") == 1


def test_the_read_path_sees_committed_state_only():
    driver = QuarantineDriver()
    assert driver.stage.owned_partitions() == {0, 1}
    driver.poll([driver.signal("a@x", "SOFT_ERROR", NOW_MS - 1000, reason="unreachable")])
    assert driver.stage.committed_status("a@x") is None  # in hand, not committed
    driver.checkpoint()
    assert driver.stage.committed_status(" A@x") == driver.statuses()[b"a@x"]
    driver.poll([driver.signal("a@x", "HARD_ERROR", NOW_MS - 500, reason="user_unknown")])
    assert driver.stage.committed_status("a@x")["status"] == ERRONEOUS
    driver.checkpoint()
    assert driver.stage.committed_status("a@x")["status"] == QUARANTINED


def test_a_rewind_drops_the_work_in_hand_and_a_poisonous_signal_is_dead_lettered_when_it_comes_again(monkeypatch):
    driver = QuarantineDriver(partitions=1)
    first = driver.signal("a@x", "SOFT_ERROR", NOW_MS - 1000, reason="unreachable")
    second = driver.signal("b@x", "COMPLAINT", NOW_MS - 900)
    apply = AddressState.apply

    def failing(self, signal, rules, limits):
        if signal.kind == "COMPLAINT":
            raise RuntimeError("a bug")
        return apply(self, signal, rules, limits)

    monkeypatch.setattr(AddressState, "apply", failing)
    driver.poll([first, second])  # rewound: the runner seeks back, the work in hand is dropped
    assert driver.consumer.seeks and driver.stage.poison == {Coordinates(second.topic(), 0, second.offset())}
    driver.poll([first, second])
    driver.checkpoint()
    assert set(driver.statuses()) == {b"a@x"}
    assert [dict(r.headers)["sendtrack.error.code"] for r in driver.producer.on(driver.topics.dlq)] == [
        b"processing_error"
    ]
    assert driver.metric("sendtrack_quarantine_signals_total", kind="SOFT_ERROR", outcome="applied") == 1


def test_a_restore_from_the_changelog_is_exact():
    first = QuarantineDriver(partitions=1, quarantine_reset_after_s=3600)
    first.poll(
        [
            first.signal("a@x", "SOFT_ERROR", NOW_MS - 1000, reason="unreachable"),
            first.signal("b@x", "HARD_ERROR", NOW_MS - 1000, reason="user_unknown"),
            first.signal("c@x", "DELIVERED", NOW_MS - 1000),
        ]
    )
    first.checkpoint()
    first.poll([first.signal("c@x", "FORGET", NOW_MS)])
    first.checkpoint()
    first.poll([first.signal("d@x", "SOFT_ERROR", NOW_MS - 1000)])  # never committed: its changelog is not either
    committed = first.producer.offsets[-1][0].offset
    second = QuarantineDriver(1, first.changelog(), committed, quarantine_reset_after_s=3600)
    for address in ("a@x", "b@x", "c@x", "d@x"):
        assert second.stage.committed_status(address) == first.stage.committed_status(address)
    [work] = second.runner.works.values()
    [before] = first.runner.works.values()
    state = {k: v for k, v in work.store.scan(b"") if not k.startswith(OFFSETS_PREFIX)}
    assert state == {k: v for k, v in before.store.scan(b"") if not k.startswith(OFFSETS_PREFIX)}
    assert second.metric("sendtrack_quarantine_addresses", status=QUARANTINED) == 1
    assert second.metric("sendtrack_quarantine_addresses", status=ERRONEOUS) == 1
    assert second.metric("sendtrack_quarantine_addresses", status=VALID) == 0
    second.now_s += 3601  # the restored deadline index still knows when a@x resets
    second.checkpoint()
    assert second.statuses()[b"a@x"]["rule"] == "COUNTER_RESET"


def test_the_stage_runs_only_when_asked_and_says_what_it_needs():
    driver = QuarantineDriver(partitions=0)
    t = driver.topics
    assert driver.stage.group_id == "sendtrack.quarantine" and driver.stage.inputs == (t.address_signals,)
    assert driver.stage.operations[t.quarantine_changelog] == ("READ", "WRITE")
    assert driver.stage.operations[t.address_quarantine] == ("WRITE",)
    plain = build_service(Settings(bootstrap_servers="unused:9092", store="memory"))
    assert find_quarantine_stage(plain.stages) is None
    assert driver.stage.rules.quarantine_at == 5 and driver.stage.limits.history_size == 100
    assert driver.stage.rules.reset_after_ms == 10 * DAY_MS
