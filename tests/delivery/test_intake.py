"""The processing loop, poll by poll, over fake clients: what happens to each record and to the offsets."""

from __future__ import annotations

import json

import pytest

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT
from consumer.core.processor import PartitionProcessor
from consumer.kafka.topics import Topics
from consumer.runtime.errors import StateFailed
from consumer.state.changelog import CHANGELOG_OFFSET
from consumer.state.memory import MemoryStore
from consumer.state.store import StoreError
from tests.core.builders import delivery_event, mta, prepared
from tests.runtime.fakes import NOW_S, LoopDriver

NOW_MS = int(NOW_S * 1000)
MTA = AvroCodec.named(MTA_EVENT)
DELIVERIES = AvroCodec.named(DELIVERY_EVENT)


def relayed(driver: LoopDriver, delivery: str, message: str, partition: int = 0, **fields):
    event = mta(delivery, message, fields.pop("kind", "RELAYED"), at=fields.pop("at", NOW_MS - 1_000), **fields)
    return driver.message(driver.topics.mta_events, partition, delivery.encode(), MTA.encode(event))


def prepare(driver: LoopDriver, delivery: str, partition: int = 0, **fields):
    event = prepared(delivery, efs=False, validity_end=NOW_MS + 3_600_000, at=NOW_MS - 10_000, **fields)
    return driver.message(driver.topics.deliveries, partition, delivery.encode(), DELIVERIES.encode(event))


def control(driver: LoopDriver, key: bytes | None, value: bytes, partition: int = 0):
    return driver.message(driver.topics.control, partition, key, value)


def test_a_poll_holding_only_a_bad_record_is_dead_lettered():
    driver = LoopDriver()
    driver.poll([driver.message(driver.topics.mta_events, 0, b"d", b"not avro")])
    driver.checkpoint()
    [letter] = driver.dead_letters()
    assert letter["sendtrack.error.code"] == "decode_error"
    assert driver.committed_offsets()[driver.topics.mta_events, 0] == 1


def test_a_record_without_a_key_is_a_dead_letter_not_a_second_copy_of_the_delivery():
    driver = LoopDriver()
    event = mta("d", "m", "RELAYED", at=NOW_MS)
    driver.poll([prepare(driver, "d"), driver.message(driver.topics.mta_events, 1, None, MTA.encode(event))])
    driver.checkpoint()
    assert [letter["sendtrack.error.code"] for letter in driver.dead_letters()] == ["missing_key"]
    assert driver.stage.runtimes[1].processor.delivery_ids() == []
    assert driver.kpis()["d"]["processed"] == 0


def test_an_event_from_the_far_future_is_a_dead_letter_and_ends_nothing():
    driver = LoopDriver()
    year_2999 = 32_472_144_000_000
    driver.poll([prepare(driver, "d"), relayed(driver, "d", "m1"), relayed(driver, "other", "m", at=year_2999)])
    driver.checkpoint()
    assert [letter["sendtrack.error.code"] for letter in driver.dead_letters()] == ["clock_skew"]
    assert driver.kpis()["d"]["state"] == "SENDING" and not driver.kpis()["d"]["final"]


def test_an_event_within_the_allowed_skew_is_applied_but_does_not_move_time():
    driver = LoopDriver(max_clock_skew_s=600)
    driver.poll([prepare(driver, "d"), relayed(driver, "d", "m", at=NOW_MS + 500_000)])
    driver.checkpoint()
    assert driver.dead_letters() == []
    assert driver.stage.runtimes[0].processor._watermark <= NOW_MS


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        (b"d", b"[" * 100_000, "value"),
        (b"d", b'{"command": "compute-stats", "delivery_id": "\\ud800"}', "delivery_id"),
        (b"d", b'{"command": "compute-stats", "delivery_id": ' + b'"d' + b"x" * 5_000 + b'"}', "value"),
        (b"d", b"\xff\xfe", "value"),
        (None, b'{"command": "compute-stats", "delivery_id": "d"}', "key"),
        (b"d", b'{"command": "compute-stats", "delivery_id": 7}', "delivery_id"),
        (b"d", b'{"command": "reboot"}', "command"),
        (b"d", b"", "value"),
    ],
)
def test_hostile_control_records_are_dead_letters(key, value, field):
    driver = LoopDriver()
    driver.poll([control(driver, key, value)])
    driver.poll([control(driver, key, value)])  # and again: nothing is remembered that breaks a restart
    driver.checkpoint()
    letters = driver.dead_letters()
    assert [letter["sendtrack.error.field"] for letter in letters] == [field, field]


def test_a_control_command_is_applied_after_the_events_before_it():
    driver = LoopDriver()
    command = json.dumps({"command": "compute-stats", "delivery_id": "d"}).encode()
    driver.poll([prepare(driver, "d"), relayed(driver, "d", "m"), control(driver, b"d", command)])
    driver.checkpoint()
    assert driver.kpis()["d"]["processed"] == 1
    assert driver.service.metrics.stats_mismatches.labels("command")._value.get() == 0


def test_an_event_whose_processing_raises_is_rewound_then_dead_lettered_and_nothing_else_is_lost(monkeypatch):
    driver = LoopDriver()
    driver.poll([prepare(driver, "d")])
    driver.checkpoint()
    original = PartitionProcessor._apply_mta

    def explode_on_m2(self, event):
        if event["message_id"] == "m2":
            raise RuntimeError("a bug in the rules")
        original(self, event)

    monkeypatch.setattr(PartitionProcessor, "_apply_mta", explode_on_m2)
    poll = [relayed(driver, "d", f"m{i}") for i in range(1, 5)]
    driver.poll(poll)
    # Nothing of the failed batch may be committed, even by a checkpoint that comes next.
    driver.checkpoint()
    assert driver.committed_offsets().get((driver.topics.mta_events, 0)) is None
    [rewind] = [tp for tp in driver.consumer.seeks if tp.topic == driver.topics.mta_events and tp.partition == 0]
    assert rewind.offset < 0  # back to the beginning: nothing was committed on mta.events yet
    driver.poll(poll)  # the consumer delivers them again from there
    driver.checkpoint()
    assert [letter["sendtrack.error.code"] for letter in driver.dead_letters()] == ["processing_error"]
    assert driver.dead_letters()[0]["sendtrack.source.offset"] == "1"
    assert driver.kpis()["d"]["processed"] == 3
    assert driver.committed_offsets()[driver.topics.mta_events, 0] == 4


def test_offsets_never_pass_an_event_that_was_not_applied(monkeypatch):
    """The first defect: a failure after the offsets moved let the shutdown checkpoint commit them."""
    driver = LoopDriver()
    driver.poll([prepare(driver, "d")])
    monkeypatch.setattr(PartitionProcessor, "_advance", lambda *_: (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError):  # not tied to one event: the run ends (exit 1, restart, restore)
        driver.poll([relayed(driver, "d", "m")])
    driver.runner.failed = True  # as run() marks it
    driver.service._shutdown()
    assert driver.committed_offsets() == {}
    assert driver.producer.committed == []


def test_rejected_confirmations_are_counted_once_each_and_keep_the_delivery_record_small():
    driver = LoopDriver()
    events = [prepare(driver, "d", confirmation_required=True)]
    for i in range(5_000):
        event = delivery_event("d", "CONFIRMED", at=NOW_MS - 5_000, event_id=f"c{i}", actor="mallory", actor_roles=[])
        events.append(driver.message(driver.topics.deliveries, 0, b"d", DELIVERIES.encode(event)))
    driver.poll(events)
    driver.poll(events[1:100])  # redelivered: not counted again
    driver.checkpoint()
    assert driver.kpis()["d"]["confirmations_rejected"] == 5_000
    changelog = [r for r in driver.producer.on(driver.topics.changelog) if r.key == b"d\x00d"]
    assert changelog and max(len(r.value) for r in changelog) < 2_000


def test_a_store_that_cannot_be_read_stops_the_instance_instead_of_dead_lettering_good_events(monkeypatch):
    driver = LoopDriver()

    def broken(*_):
        raise StoreError("cannot read RocksDB at /x: IO error")

    monkeypatch.setattr(MemoryStore, "get", broken)
    with pytest.raises(StateFailed, match="IO error"):
        driver.poll([prepare(driver, "d"), relayed(driver, "d", "m")])
    assert driver.dead_letters() == []


def test_an_input_topic_named_like_the_changelog_position_cannot_move_where_restore_starts():
    """The store keeps input offsets by topic name beside the changelog position: a topic called "changelog"
    wrote its offset over the position, and restore would then skip changelog records or fail."""
    driver = LoopDriver(topics=Topics(mta_events="changelog"))
    driver.poll([prepare(driver, "d"), relayed(driver, "d", "m")])
    driver.checkpoint()
    store = driver.stage.runtimes[0].store
    position = store.offsets()[CHANGELOG_OFFSET]
    for _ in range(5):  # duplicates: the input offset moves, the state (and the changelog) does not
        driver.poll([relayed(driver, "d", "m")])
        driver.checkpoint()
    assert store.offsets()[CHANGELOG_OFFSET] == position
    assert store.offsets()["changelog"] == 6  # the input topic's own offset is kept too
