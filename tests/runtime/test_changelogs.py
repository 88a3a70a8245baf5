"""The runtime's changelog per named store, over fake clients: what a checkpoint produces and persists, and what a
restore keeps (records of a checkpoint that never committed are skipped)."""

from __future__ import annotations

from pathlib import Path

from consumer.ops import logging as logs
from consumer.ops.metrics import Metrics
from consumer.runtime.changelogs import ChangelogStores, StoreSpec
from consumer.runtime.stores import StoreFactory
from consumer.state.changelog import CHANGELOG_OFFSET, origin_of
from tests.runtime.fakes import FakeProducer, FakeReader


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
