"""Session-wide fixtures: one Apache Kafka broker (from Maven Central) for every test that needs Kafka."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumer.kafka.brokers import ApacheKafkaBroker


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafkaBroker]:
    log = tmp_path_factory.mktemp("broker") / "kafka.log"
    with ApacheKafkaBroker(log_path=log) as broker:
        yield broker
