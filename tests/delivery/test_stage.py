"""The delivery stage as the Deployment view's HTTP threads see it: committed state only."""

from __future__ import annotations

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
