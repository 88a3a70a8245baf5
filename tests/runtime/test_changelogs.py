"""The runtime's changelog per named store, over fake clients: what a checkpoint produces and persists, and what a
restore keeps (records of a checkpoint that never committed are skipped)."""

from __future__ import annotations

from pathlib import Path

from consumer.ops import logging as logs
from consumer.ops.metrics import Metrics
from consumer.runtime.changelogs import PERSISTED_AT, ChangelogStores, StoreSpec
from consumer.runtime.stores import StoreFactory
from consumer.state.changelog import CHANGELOG_OFFSET, origin_of
from tests.runtime.fakes import FakeProducer, FakeReader, Produced


def stores(*specs: StoreSpec) -> ChangelogStores:
    factory = StoreFactory("memory", Path("unused"), "group")
    return ChangelogStores(specs, factory, Metrics(), logs.get("test"))


def test_a_checkpoint_stamps_its_changelog_records_and_persists_with_the_position():
    kit, producer = stores(StoreSpec("log.a", name="a"), StoreSpec("log.b", name="b")), FakeProducer()
    kit.use_reader(FakeReader([]))
    opened = kit.open([0], {0: {}}, "group.restore", lambda _step: None)
    assert opened and set(opened[0]) == {"a", "b"}
    staged = kit.produce(producer, 0, {"a": {b"k": b"v"}, "b": {b"x": None}}, {"in": 5})
    assert [(r.topic, r.key, origin_of(r.headers)) for r in producer.open] == [
        ("log.a", b"k", {"in": 5}),
        ("log.b", b"x", {"in": 5}),
    ]
    producer.flush(0)
    a, b = opened[0]["a"].store, opened[0]["b"].store
    kit.persist({"a": a, "b": b}, staged, {"in": 5})
    assert a.get(b"k") == b"v" and a.offsets() == {"in": 5, CHANGELOG_OFFSET: 1}
    assert b.offsets() == {"in": 5, CHANGELOG_OFFSET: 1}


def test_restore_skips_what_a_checkpoint_produced_but_never_committed():
    writer, producer = stores(StoreSpec("log")), FakeProducer(transactional=False)
    writer.produce(producer, 0, {"default": {b"k": b"committed"}}, {"in": 10})
    # At-least-once: the next checkpoint's records were delivered, then its commit failed and the process died.
    writer.produce(producer, 0, {"default": {b"k": b"never committed", b"j": b"x"}}, {"in": 20})

    reader = stores(StoreSpec("log"))
    reader.use_reader(FakeReader(producer.open))
    restored = reader.open([0], {0: {"in": 10}}, "group.restore", lambda _step: None)[0]["default"]
    assert restored.store.get(b"k") == b"committed" and restored.store.get(b"j") is None
    assert (restored.result.records, restored.result.skipped, restored.result.touched) == (3, 2, {b"k"})


def test_a_store_offline_longer_than_its_limit_is_emptied_and_restored_from_the_whole_changelog():
    """A tombstone compacted away while the store was offline would leave the store a key deleted meanwhile: past
    the spec's max_offline_ms the store starts empty and replays what the changelog keeps."""
    now = [1_000.0]
    factory = StoreFactory("memory", Path("unused"), "group")
    kit = ChangelogStores(
        [StoreSpec("log", max_offline_ms=60_000)], factory, Metrics(), logs.get("test"), lambda: now[0]
    )
    producer = FakeProducer()
    kit.use_reader(FakeReader([]))
    store = kit.open([0], {0: {}}, "group.restore", lambda _step: None)[0]["default"].store
    staged = kit.produce(producer, 0, {"default": {b"erased meanwhile": b"x"}}, {"in": 1})
    producer.flush(0)
    kit.persist({"default": store}, staged, {"in": 1})
    assert store.offsets()[PERSISTED_AT] == 1_000_000
    # Meanwhile another instance erased the key, and compaction dropped both its record and its tombstone.
    compacted = [Produced("log", b"kept", b"other", 0, None), Produced("log", b"v", b"kept", 0, None)]
    now[0] += 60
    kit.use_reader(FakeReader(compacted))
    assert kit.open([0], {0: {"in": 1}}, "group.restore", lambda _step: None)[0]["default"].store.get(
        b"erased meanwhile"
    )
    now[0] += 1
    kit.use_reader(FakeReader(compacted))
    reopened = kit.open([0], {0: {"in": 1}}, "group.restore", lambda _step: None)[0]["default"].store
    assert reopened.get(b"erased meanwhile") is None and reopened.get(b"kept") == b"v"
