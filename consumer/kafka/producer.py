"""The output producer: transactional (exactly-once) or idempotent (at-least-once), one per instance."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from consumer.kafka.access import Denied, denial

Headers = list[tuple[str, bytes]]
ANY_PARTITION = -1  # librdkafka's RD_KAFKA_PARTITION_UA: the configured partitioner picks from the key


def produce_waiting(
    producer: Producer, topic: str, value: bytes | None, key: bytes | None, *args: Any, **kwargs: Any
) -> None:
    """Producer.produce that waits while the local queue is full, letting librdkafka send meanwhile."""
    while True:
        try:
            producer.produce(topic, value, key, *args, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


class CheckedProducer(Producer):
    """A producer that keeps its delivery reports' failures: how many, and the first missing permission."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._failed = 0
        self._denied: Denied | None = None
        super().__init__({**config, "on_delivery": self._report})

    def _report(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed += 1
            self._denied = self._denied or denial(error, message.topic(), topic_operation="WRITE")

    def unacknowledged(self, timeout: float) -> int:
        """Wait for every record; how many Kafka did not take. Raises Denied if one was refused for want of an
        ACL: the next would be refused too."""
        remaining = self.flush(timeout)
        if self._denied is not None:
            raise self._denied
        return remaining + self._failed


class DeliveryFailed(KafkaException):
    """An output record was not acknowledged: its input must not count as done."""

    def __init__(self, error: KafkaError, topic: str | None = None) -> None:
        super().__init__(error)
        self.topic = topic  # the record's, when a delivery report said which


class OutputProducer:
    def __init__(self, config: dict[str, Any], init_timeout: float = 30.0) -> None:
        self.transactional = "transactional.id" in config
        self._config = config
        self._init_timeout = init_timeout
        self._start()

    def _start(self) -> None:
        self._in_transaction = False
        self._failures: list[tuple[KafkaError, str]] = []
        self._producer = Producer(self._config)
        if self.transactional:
            # Fences an earlier producer with our transactional.id and settles its open transaction.
            self._producer.init_transactions(self._init_timeout)

    def renew(self) -> None:
        """Replace a client in a fatal state with a new one, which fences it and aborts its transaction.
        Whoever holds this object keeps producing through it. On failure, calling again retries."""
        with contextlib.suppress(Exception):
            self._producer.flush(0)
        self._start()

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int,
        headers: Headers | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        callback = self._report if on_delivery is None else self._also(on_delivery)
        self._send(topic, ((key, value),), partition, headers, callback)

    def produce_many(
        self,
        topic: str,
        records: Iterable[tuple[bytes | None, bytes | None]],
        partition: int,
        headers: Headers | None = None,
    ) -> None:
        """produce() for each (key, value), all to one partition, with less work per record: the service makes
        one record per status change and per changed state key."""
        self._send(topic, records, partition, headers, self._report)

    @property
    def _report(self) -> Callable[[KafkaError | None, Message], None] | None:
        # In a transaction a failed record fails the commit, so only at-least-once needs every report.
        return None if self.transactional else self._on_delivery

    def _begin(self) -> None:
        if self.transactional and not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True

    def _send(
        self,
        topic: str,
        records: Iterable[tuple[bytes | None, bytes | None]],
        partition: int,
        headers: Headers | None,
        callback: Callable[[KafkaError | None, Message], None] | None,
    ) -> None:
        self._begin()
        produce = self._producer.produce
        # The client's own call in the loop, with positional arguments: confluent-kafka parses keywords at about
        # twice the cost of the call itself, and a Python frame per record cost 0.15 us.
        for key, value in records:
            try:
                if headers is None:
                    produce(topic, value, key, partition, callback)
                else:
                    produce(topic, value, key, partition, callback, headers=headers)
            except BufferError:
                produce_waiting(self._producer, topic, value, key, partition, on_delivery=callback, headers=headers)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        # A record purged from a failed transaction: the commit raises the transaction's own error, the telling one
        # (a topic that refused the transaction names no record).
        if error is not None and not (self.transactional and error.code() == KafkaError._PURGE_QUEUE):
            self._failures.append((error, message.topic()))

    def _also(self, on_delivery: Callable[[KafkaError | None, Message], None]) -> Callable[..., None]:
        def both(error: KafkaError | None, message: Message) -> None:
            self._on_delivery(error, message)
            on_delivery(error, message)

        return both

    def flush(self, timeout: float) -> None:
        """Wait for every record's acknowledgement; raise if any failed."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryFailed(KafkaError(KafkaError._MSG_TIMED_OUT, f"{remaining} records unacknowledged"))
        if self._failures:
            (error, topic), self._failures = self._failures[0], []
            raise DeliveryFailed(error, topic)

    def commit_transaction(self, offsets: Sequence[TopicPartition], group_metadata: Any, timeout: float) -> None:
        """Commit the outputs and the input offsets atomically (exactly-once)."""
        if not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True
        if offsets:
            self._producer.send_offsets_to_transaction(list(offsets), group_metadata, timeout)
        self._producer.commit_transaction(timeout)
        self._in_transaction = False

    def abort_transaction(self, timeout: float) -> None:
        """Abort the open transaction; on failure it stays open, so calling again retries the abort."""
        self._failures.clear()
        if self._in_transaction:
            self._producer.abort_transaction(timeout)
            self._in_transaction = False

    def poll(self) -> None:
        self._producer.poll(0)

    def close(self, timeout: float) -> None:
        self._producer.flush(timeout)
