"""Session-wide fixtures: one development broker for every test that needs Kafka.

Apache Kafka (from Maven Central) unless SENDTRACK_TEST_BROKER names another kind of consumer.kafka.brokers.KINDS
(`tansu`: how `python -m tests.reliability.report --broker tansu` compares; Apache-only tests then fail)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from consumer.kafka.brokers import DevBroker, dev_broker

BROKER_KIND = os.environ.get("SENDTRACK_TEST_BROKER", "apache-kafka")


def test_broker(port: int = 0, **options: Any) -> DevBroker:
    """A broker of the kind the tests run on, not started."""
    return dev_broker(BROKER_KIND, port, **options)


test_broker.__test__ = False  # type: ignore[attr-defined]  # a factory, not a test


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBroker]:
    with test_broker(log_path=tmp_path_factory.mktemp("broker") / "broker.log") as broker:
        yield broker
