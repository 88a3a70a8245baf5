"""Session-wide fixtures: one embedded broker for every test that needs Kafka."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumer.kafka.embedded import EmbeddedBroker


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        yield broker
