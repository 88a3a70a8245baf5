"""The dead-letter topic: a record that cannot be applied goes there whole, with why and where from."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from consumer.codec.errors import InvalidEvent
from consumer.kafka.producer import OutputProducer
from consumer.ops.metrics import Metrics, Tally

# A dead letter is its input plus a few headers; an input at the size limit would no longer fit.
_MAX_VALUE_BYTES = 900_000


class DeadLetters:
    def __init__(self, producer: OutputProducer, topic: str, metrics: Metrics, log: Any) -> None:
        self._producer = producer
        self._topic = topic
        self._metrics = metrics
        self._log = log

    def send(self, msg: Message, exc: InvalidEvent, tally: Tally) -> None:
        """Produce the dead letter (inside the open transaction, or flushed before the offsets commit); it is
        counted in `tally`, the work of its input partition, when that work is committed."""
        value = msg.value()
        headers = [
            *list(msg.headers() or []),
            ("sendtrack.error.code", exc.code.encode()),
            ("sendtrack.error.field", exc.field.encode()),
            ("sendtrack.error.message", str(exc).encode(errors="backslashreplace")),
            ("sendtrack.source.topic", msg.topic().encode()),
            ("sendtrack.source.partition", str(msg.partition()).encode()),
            ("sendtrack.source.offset", str(msg.offset()).encode()),
        ]
        if value is not None and len(value) > _MAX_VALUE_BYTES:
            headers.append(("sendtrack.value.truncated_from", str(len(value)).encode()))
            value = value[:_MAX_VALUE_BYTES]
        try:
            self._producer.produce(self._topic, value, msg.key(), msg.partition(), headers=headers)
        except KafkaException as error:  # a record the client refuses outright can never be written
            if error.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                raise
            headers.append(("sendtrack.value.dropped", b"too large"))
            self._producer.produce(self._topic, None, msg.key(), msg.partition(), headers=headers)
        tally.add(self._metrics.dlq.labels(exc.code))
        self._log.warning(
            "dead_lettered",
            code=exc.code,
            field=exc.field,
            error=str(exc),
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
        )
