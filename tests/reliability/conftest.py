"""Fault tests get a broker of their own (they pause it, cut it off, or take it away), behind a fault proxy
that the broker advertises, so every client connection can be broken on demand."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from consumer.kafka.brokers import DevBroker
from tests.conftest import test_broker
from tests.reliability.proxy import FaultProxy
from tests.runtime.harness import free_port


@dataclass
class ProxiedBroker:
    broker: DevBroker
    proxy: FaultProxy

    @property
    def bootstrap_servers(self) -> str:
        return self.proxy.address


@pytest.fixture
def proxied(tmp_path) -> Iterator[ProxiedBroker]:
    port = free_port()
    with FaultProxy(port) as proxy:
        broker = test_broker(port, advertised_port=proxy.port, log_path=tmp_path / "broker.log")
        with broker:
            yield ProxiedBroker(broker, proxy)
            broker.resume()  # a test that failed while the broker was paused must not hang the teardown
