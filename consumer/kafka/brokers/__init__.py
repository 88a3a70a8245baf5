"""Development brokers: Apache Kafka from Maven Central (tests, fault runs, benchmarks) and Tansu (pip only;
`sendtrack broker` and `sendtrack demo`)."""

from __future__ import annotations

from typing import Any

from consumer.kafka.brokers.apache import ApacheKafkaBroker
from consumer.kafka.brokers.base import DevBroker, DevBrokerError
from consumer.kafka.brokers.tansu import TansuBroker

KINDS: dict[str, type[DevBroker]] = {"apache-kafka": ApacheKafkaBroker, "tansu": TansuBroker}


def dev_broker(kind: str, port: int = 0, **options: Any) -> DevBroker:
    """A development broker of ``kind`` (a key of KINDS), not started."""
    try:
        return KINDS[kind](port, **options)
    except KeyError:
        raise DevBrokerError(f"unknown broker kind {kind!r}: one of {', '.join(KINDS)}") from None


__all__ = ["KINDS", "ApacheKafkaBroker", "DevBroker", "DevBrokerError", "TansuBroker", "dev_broker"]
