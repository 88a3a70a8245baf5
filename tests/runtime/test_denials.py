"""A missing permission ends the instance with the line naming it (access.Denied, exit 5): never a retry loop."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError

from consumer.kafka.access import Denied
from consumer.kafka.producer import DeliveryFailed
from tests.runtime.fakes import FakeMessage, FakeProducer, LoopDriver


class RefusedMessage(FakeMessage):
    """What consume() returns for an error: librdkafka names the topic when a partition's fetch failed."""

    def __init__(self, topic: str | None, code: int) -> None:
        super().__init__(topic or "", 0, -1, None, None)
        self._topic = topic  # type: ignore[assignment]
        self._error = KafkaError(code)

    def error(self) -> KafkaError:  # type: ignore[override]
        return self._error


class RefusingProducer(FakeProducer):
    def commit_transaction(self, offsets, _metadata, _timeout) -> None:
        raise DeliveryFailed(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), "delivery.kpis")


def _line(call: Callable[[], None]) -> str:
    with pytest.raises(Denied) as denied:
        call()
    return str(denied.value).removesuffix(": the principal lacks that ACL")


def test_an_input_it_may_not_read_is_named() -> None:
    loop = LoopDriver()
    refused = RefusedMessage("mta.events", KafkaError.TOPIC_AUTHORIZATION_FAILED)
    assert _line(lambda: loop.poll([refused])) == "Kafka refused READ on topic 'mta.events'"


def test_a_group_it_may_not_join_is_named() -> None:
    loop = LoopDriver(group_id="g")
    refused = RefusedMessage(None, KafkaError.GROUP_AUTHORIZATION_FAILED)
    assert _line(lambda: loop.poll([refused])) == "Kafka refused READ on group 'g'"


def test_an_output_it_may_not_write_ends_the_checkpoint_without_a_rewind() -> None:
    loop = LoopDriver()
    loop.producer = RefusingProducer()
    loop.runner.attach(loop.producer, loop.consumer)  # type: ignore[arg-type]
    loop.runner.works[0].consumed["deliveries"] = 1  # something to commit
    assert _line(loop.checkpoint) == "Kafka refused WRITE on topic 'delivery.kpis'"
    assert loop.consumer.seeks == []
