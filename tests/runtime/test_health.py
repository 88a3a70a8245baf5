"""Readiness, liveness, the watchdog and the lag gauge, without a broker."""

from __future__ import annotations

import json
import threading
import time

from consumer.ops import logging as logs
from consumer.runtime.errors import STUCK
from consumer.runtime.health import Health, Watchdog
from tests.runtime.fakes import LoopDriver


def test_readiness_names_every_trouble_until_each_clears():
    health = Health()
    health.trouble("group", "joining the consumer group")
    assert health.readiness() == (False, "joining the consumer group")
    health.clear("group")
    health.trouble("kafka", "all brokers are down")
    health.trouble("checkpoint", "checkpoint_failed: timed out")
    ready, detail = health.readiness()
    assert not ready and "all brokers are down" in detail and "timed out" in detail
    health.clear("kafka")
    health.clear("checkpoint")
    assert health.readiness() == (True, "ready")


def test_the_watchdog_turns_health_red_then_exits_stuck_when_the_loop_stops_beating():
    exits: list[int] = []
    exited = threading.Event()

    def fake_exit(code: int) -> None:
        exits.append(code)
        exited.set()

    watchdog = Watchdog(1.0, logs.get("test"), exit_=fake_exit)
    health = Health()
    health.watchdog = watchdog.start()
    watchdog.beat("checkpoint_commit")
    assert health.liveness()[0]
    time.sleep(0.6)  # past half the timeout: red, not yet ended
    alive, detail = health.liveness()
    assert not alive and "checkpoint_commit" in detail
    assert not health.readiness()[0]
    assert exited.wait(3.0)
    assert exits == [STUCK]


def test_a_beating_loop_is_never_ended():
    exits: list[int] = []
    watchdog = Watchdog(0.5, logs.get("test"), exit_=exits.append).start()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        watchdog.beat("poll")
        time.sleep(0.05)
    watchdog.stop()
    assert exits == []


def stats(topic: str, partitions: dict[int, dict[str, int]]) -> str:
    return json.dumps(
        {
            "brokers": {"b1": {"state": "UP"}},
            "topics": {topic: {"partitions": {str(p): data for p, data in partitions.items()} | {"-1": {}}}},
        }
    )


def lag(driver: LoopDriver, topic: str, partition: int) -> float:
    return driver.service.metrics.consumer_lag.labels(topic, str(partition))._value.get()


def test_lag_is_the_end_minus_what_this_instance_processed_not_librdkafkas_committed_view():
    driver = LoopDriver(partitions=3)
    topic = driver.topics.mta_events
    driver.stage.runtimes[1].committed[topic] = 40  # committed in a transaction: librdkafka's lag ignores it
    driver.runner.on_stats(
        stats(
            topic,
            {
                # processed up to 70 of 100 (the application offset also moves past transaction markers)
                0: {"hi_offset": 100, "ls_offset": 100, "lo_offset": 0, "app_offset": 70, "consumer_lag": -1},
                # just assigned, nothing consumed yet: from the group's committed offset
                1: {"hi_offset": 100, "ls_offset": 100, "lo_offset": 0, "app_offset": -1001, "consumer_lag": -1},
                # a first start, nothing committed anywhere: from the start of the log
                2: {"hi_offset": 25, "ls_offset": 25, "lo_offset": 10, "app_offset": -1001, "consumer_lag": -1},
            },
        )
    )
    assert (lag(driver, topic, 0), lag(driver, topic, 1), lag(driver, topic, 2)) == (30, 60, 15)
    # Records behind an open upstream transaction are lag: the log end counts, not the last stable offset.
    driver.runner.on_stats(stats(topic, {0: {"hi_offset": 101, "ls_offset": 100, "app_offset": 100}}))
    assert lag(driver, topic, 0) == 1


def test_broker_state_in_the_statistics_clears_a_kafka_trouble():
    driver = LoopDriver()
    driver.service.health.trouble("kafka", "all brokers are down")
    driver.runner.on_stats(stats(driver.topics.deliveries, {}))
    assert not driver.service.health.has("kafka")
