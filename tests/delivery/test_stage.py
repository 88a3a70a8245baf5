"""The delivery stage as the Deployment view's HTTP threads see it: committed state only, never half a checkpoint."""

from __future__ import annotations

import threading

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import ADDRESS_SIGNAL
from consumer.core.processor import PartitionProcessor
from consumer.kafka.producer import ANY_PARTITION
from tests.core.builders import prepared
from tests.delivery.test_intake import DELIVERIES, NOW_MS, prepare, relayed
from tests.runtime.fakes import LoopDriver


def test_the_view_reads_the_committed_delivery_not_the_work_in_hand():
    driver = LoopDriver(partitions=1)
    driver.poll([prepare(driver, "d"), relayed(driver, "d", "m1")])
    assert driver.stage.committed_messages("d", None, 10) is None  # nothing of it is committed yet
    assert driver.stage.committed_message("d", "m1") is None
    driver.checkpoint()
    committed, messages = driver.stage.committed_messages("d", None, 10)
    assert [message_id for message_id, _ in messages] == ["m1"]

    driver.poll([relayed(driver, "d", "m2"), relayed(driver, "d", "m3")])  # processed, not committed
    delivery, messages = driver.stage.committed_messages("d", None, 10)
    assert delivery.counters == committed.counters and delivery.version == committed.version
    assert [message_id for message_id, _ in messages] == ["m1"]
    assert driver.stage.committed_message("d", "m2") is None


def test_a_reader_never_sees_half_of_a_checkpoint_s_kpis(monkeypatch):
    """A checkpoint publishes two deliveries' KPIs together; an HTTP thread that reads between the two (here: while
    the stage looks at the second) must wait, and then see both."""
    driver = LoopDriver(partitions=1)
    driver.poll([prepare(driver, "a"), prepare(driver, "b")])
    driver.checkpoint()
    seen: list[dict[str, dict]] = []
    readers: list[threading.Thread] = []

    class Watched(dict):
        def __getitem__(self, key):
            if key == "archived" and self["delivery_id"] == "b":  # "a" may be in the map already
                reader = threading.Thread(target=lambda: seen.append(driver.stage.published_kpis()))
                reader.start()
                reader.join(0.05)  # done at once without the lock; else it waits for the checkpoint
                readers.append(reader)
            return super().__getitem__(key)

    take_output = PartitionProcessor.take_output

    def watched(self):
        out = take_output(self)
        out.kpis = [Watched(kpi) for kpi in out.kpis]
        return out

    monkeypatch.setattr(PartitionProcessor, "take_output", watched)
    driver.poll([relayed(driver, "a", "m1"), relayed(driver, "b", "m1")])
    driver.checkpoint()
    for reader in readers:
        reader.join()
    assert seen and all(kpis["a"]["processed"] == kpis["b"]["processed"] == 1 for kpis in seen), seen


# -- address signals (--quarantine) -------------------------------------------------------------------------------
SIGNALS = AvroCodec.named(ADDRESS_SIGNAL)


def signals_published(driver: LoopDriver) -> list[tuple[bytes | None, int, dict]]:
    return [(r.key, r.partition, SIGNALS.decode(r.value)) for r in driver.producer.on(driver.topics.address_signals)]


def counted_signals(driver: LoopDriver, kind: str) -> float | None:
    return driver.service.metrics.registry.get_sample_value("sendtrack_address_signals_total", {"kind": kind})


def test_address_signals_go_out_with_the_checkpoint_keyed_by_the_normal_address_for_the_partitioner():
    driver = LoopDriver(partitions=1, quarantine=True)
    assert driver.stage.operations[driver.topics.address_signals] == ("WRITE",)
    bounce = relayed(driver, "d", "m1", kind="HARD_BOUNCE", reason="user_unknown", address=" Jane@Example.COM")
    driver.poll([prepare(driver, "d"), relayed(driver, "d", "m1", address="jane@example.com"), bounce])
    assert signals_published(driver) == []  # produced into the open transaction, not yet committed
    assert counted_signals(driver, "HARD_ERROR") in (None, 0.0)
    driver.checkpoint()
    [(key, partition, signal)] = signals_published(driver)
    assert (key, partition) == (b"jane@example.com", ANY_PARTITION)
    assert (signal["kind"], signal["address"], signal["reason"]) == ("HARD_ERROR", "jane@example.com", "user_unknown")
    assert counted_signals(driver, "HARD_ERROR") == 1


def test_the_validity_end_s_failure_is_published_by_the_checkpoint_that_passes_it():
    driver = LoopDriver(partitions=1, quarantine=True)
    end = NOW_MS - 500  # after the events, before the wall clock of the checkpoint, which passes it
    send = prepared("d", efs=False, validity_end=end, at=NOW_MS - 10_000)
    bounce = relayed(driver, "d", "m1", kind="SOFT_BOUNCE", reason="mailbox_full", address="a@example.com")
    driver.poll([driver.message(driver.topics.deliveries, 0, b"d", DELIVERIES.encode(send)), bounce])
    driver.checkpoint()
    assert [(s["kind"], s["message_id"], s["occurred_at"], s["reason"]) for *_, s in signals_published(driver)] == [
        ("SOFT_ERROR", "m1", NOW_MS - 1_000, "mailbox_full"),
        ("VALIDITY_END_FAILURE", "m1", end, "mailbox_full"),
    ]
    assert signals_published(driver)[1][2]["event_id"] == "validity-end:d/m1"
    assert counted_signals(driver, "VALIDITY_END_FAILURE") == counted_signals(driver, "SOFT_ERROR") == 1


def test_without_quarantine_the_stage_neither_signals_nor_may_write_address_signals():
    driver = LoopDriver(partitions=1)
    assert driver.topics.address_signals not in driver.stage.operations
    driver.poll([prepare(driver, "d"), relayed(driver, "d", "m1", kind="DELIVERED", address="a@example.com")])
    driver.checkpoint()
    assert signals_published(driver) == []
