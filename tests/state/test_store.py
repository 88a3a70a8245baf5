"""The generic partition stores: state and offsets written together."""

from __future__ import annotations

from consumer.state.memory import MemoryStore


def test_memory_store_writes_state_and_offsets_together():
    store = MemoryStore()
    store.write({b"a": b"1", b"b": b"2"}, {"mta.events": 41})
    store.write({b"a": None}, {"mta.events": 42, "deliveries": 7})
    assert store.get(b"a") is None and store.get(b"b") == b"2"
    assert store.offsets() == {"mta.events": 42, "deliveries": 7}
    assert list(store.scan(b"b")) == [(b"b", b"2")]
