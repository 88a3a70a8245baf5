"""The delivery stage as the Deployment view's HTTP threads see it: committed state only, never half a checkpoint."""

from __future__ import annotations

import threading

from consumer.core.processor import PartitionProcessor
from tests.delivery.test_intake import prepare, relayed
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
