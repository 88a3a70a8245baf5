"""OutputProducer over a stand-in client: every record reaches the client once and in order, also when its local queue
is full for a while; at-least-once asks for every delivery report, a transaction for none."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.kafka.producer import OutputProducer


class FullForAWhile:
    """A client whose queue refuses the record at `full_at` (counting every call) until it is polled `polls` times."""

    def __init__(self, full_at: int, polls: int = 2) -> None:
        self.records: list[tuple[Any, ...]] = []
        self.calls = 0
        self.polled = 0
        self._full_at, self._polls = full_at, polls

    def produce(self, topic, value, key, partition, callback=None, headers=None, on_delivery=None) -> None:
        self.calls += 1
        if self.calls > self._full_at and self.polled < self._polls:
            raise BufferError("Local: Queue full")
        self.records.append((topic, key, value, partition, headers, callback or on_delivery))

    def poll(self, _timeout: float) -> int:
        self.polled += 1
        return 0


def producer_over(client: FullForAWhile, transactional: bool = False) -> OutputProducer:
    producer = OutputProducer({"bootstrap.servers": "127.0.0.1:9"})  # no transactional.id: never contacts it
    producer._producer = client  # type: ignore[assignment]
    producer.transactional = transactional
    producer._in_transaction = True  # no begin_transaction on the stand-in
    return producer


@pytest.mark.parametrize("headers", [None, [("h", b"1")]])
def test_every_record_reaches_the_client_once_in_order_through_a_full_queue(headers):
    client = FullForAWhile(full_at=1)
    producer = producer_over(client)
    producer.produce_many("t", [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2")], 3, headers)
    producer.produce("t", b"v3", b"k3", 4, headers)
    assert [(key, value, partition) for _, key, value, partition, _, _ in client.records] == [
        (b"k0", b"v0", 3),
        (b"k1", b"v1", 3),
        (b"k2", b"v2", 3),
        (b"k3", b"v3", 4),
    ]
    assert client.polled == 2 and all(record[4] == headers for record in client.records)


def test_delivery_reports_are_asked_for_at_least_once_only():
    reported = []
    for transactional in (False, True):
        client = FullForAWhile(full_at=10)
        producer = producer_over(client, transactional)
        producer.produce_many("t", [(b"k", b"v")], 0)
        producer.produce("t", b"v", b"k", 0, on_delivery=lambda error, message: None)
        reported.append([record[5] is not None for record in client.records])
    assert reported == [[True, True], [False, True]]  # a caller's own report is always kept
