"""Address signals through the real broker: a `--quarantine` run publishes the signal of each input record exactly
once to address.signals (read_committed), keyed by the normal address and placed there by the configured partitioner,
also when an instance is killed -9 in the middle of the work."""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from consumer.cli.workload import Workload, WorkloadSpec, generate
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import ADDRESS_SIGNAL
from consumer.core.address_signals import SIGNAL_OF_TYPE, VALIDITY_END_FAILURE, validity_end_id
from consumer.kafka.admin import ensure_topics
from consumer.kafka.partitioners import partition_of
from consumer.quarantine.signals import normal_address
from consumer.runtime.settings import Settings
from tests.runtime.harness import Pipeline, free_port, http_get, stop

PARTITIONS = 4


def quarantine_pipeline(bootstrap: str, workdir: Any) -> Pipeline:
    pipeline = Pipeline(bootstrap, workdir, partitions=PARTITIONS)
    ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), pipeline.topics, PARTITIONS, quarantine=True)
    return pipeline


def expected_signals(workload: Workload) -> tuple[Counter[str], dict[str, tuple[str, str]]]:
    """How many signals of each id, and each id's (kind, normal address), from what the generator decided (its sends
    reach no validity end): one per significant event record that names an address (a redelivered event's repeat
    carries its id, for the quarantine to drop), and a validity-end failure per message the MTA gave up."""
    counts: Counter[str] = Counter()
    described = {}
    for event in workload.mta_events:
        address, kind = event["address"], event["type"]
        if address is None:
            continue
        if kind in SIGNAL_OF_TYPE:
            counts[event["event_id"]] += 1
            described[event["event_id"]] = (SIGNAL_OF_TYPE[kind], normal_address(address))
        elif kind == "RETRIES_EXHAUSTED":
            failure = validity_end_id(event["delivery_id"], event["message_id"])
            counts[failure] = 1
            described[failure] = (VALIDITY_END_FAILURE, normal_address(address))
    return counts, described


def wait_until_consumed(pipeline: Pipeline, processes: list[Any], timeout_s: float = 180.0) -> None:
    """Until the group's committed offsets reach the end of every input partition: every signal is committed then,
    in the transactions that committed those offsets."""
    consumer = Consumer({"bootstrap.servers": pipeline.bootstrap, "group.id": pipeline.group})
    inputs = [
        TopicPartition(t, p)
        for t in (pipeline.topics.deliveries, pipeline.topics.mta_events)
        for p in range(PARTITIONS)
    ]
    try:
        ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in inputs}
        deadline = time.monotonic() + timeout_s
        while True:
            committed = _committed(consumer, inputs)
            if all(end == 0 or committed[where] >= end for where, end in ends.items()):  # empty: never committed
                return
            for process in processes:
                assert process.poll() is None, f"the service exited with {process.returncode}"
            assert time.monotonic() < deadline, f"inputs not consumed: {committed} of {ends}"
            time.sleep(0.5)
    finally:
        consumer.close()


def _committed(consumer: Consumer, inputs: list[TopicPartition]) -> dict[tuple[str, int], int]:
    """The group's committed offsets; none while its coordinator is still moving: librdkafka calls NOT_COORDINATOR
    not retriable, yet it is what a coordinator still loading the group answers (the caller's deadline bounds it)."""
    try:
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(inputs, timeout=10)}
    except KafkaException:
        return {(tp.topic, tp.partition): -1 for tp in inputs}


def assert_each_signal_once(
    pipeline: Pipeline, workload: Workload, partitioner: str = Settings.partitioner
) -> list[tuple[int, bytes, dict[str, Any]]]:
    codec = AvroCodec.named(ADDRESS_SIGNAL)
    published = [
        (p, key, codec.decode(value)) for p, _, key, value, _ in pipeline.read_all(pipeline.topics.address_signals)
    ]
    counts, described = expected_signals(workload)
    assert Counter(s["event_id"] for *_, s in published) == counts  # one per input record, nothing else
    for partition, key, signal_record in published:
        assert (signal_record["kind"], signal_record["address"]) == described[signal_record["event_id"]]
        assert key == signal_record["address"].encode()
        assert partition == partition_of(key, PARTITIONS, partitioner)  # by address, not by delivery
    return published


def counted_signals(port: int) -> Counter[str]:
    """sendtrack_address_signals_total by kind, as the instance serves it."""
    families = text_string_to_metric_families(http_get(port, "/metrics")[1].decode())
    samples = (s for f in families if f.name == "sendtrack_address_signals" for s in f.samples)
    return Counter({s.labels["kind"]: int(s.value) for s in samples if s.name.endswith("_total")})


def counted_when_committed(port: int, expected: Counter[str], timeout_s: float = 30.0) -> Counter[str]:
    """The counts once they reach `expected`, or as they are at the deadline: a checkpoint's tally is added just
    after its commit, which the test may see first."""
    deadline = time.monotonic() + timeout_s
    while (counted := counted_signals(port)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return counted


def test_a_quarantine_run_publishes_each_signal_once_keyed_by_address(kafka, tmp_path):
    workload = generate(WorkloadSpec.ending_now(deliveries=4, messages=400, addresses=250, seed=11))
    pipeline = quarantine_pipeline(kafka.bootstrap_servers, tmp_path)
    pipeline.produce_workload(workload)
    # Not librdkafka's default partitioner: the run's --partitioner must reach its producer.
    port = free_port()
    service = pipeline.start("signals", quarantine=True, partitioner="murmur2_random", http_port=port)
    try:
        wait_until_consumed(pipeline, [service])
        published = assert_each_signal_once(pipeline, workload, "murmur2_random")
        kinds = Counter(s["kind"] for *_, s in published)
        assert {"HARD_ERROR", "SOFT_ERROR", "DELIVERED", "OPEN", "CLICK", VALIDITY_END_FAILURE} <= set(kinds)
        assert counted_when_committed(port, kinds) == kinds  # what the metric says was published
        assert stop(service) == 0
    finally:
        service.kill()


def test_kill_minus_nine_mid_run_leaves_each_signal_once_for_a_read_committed_reader(kafka, tmp_path):
    workload = generate(WorkloadSpec.ending_now(deliveries=8, messages=2_000, addresses=1_500, seed=13))
    pipeline = quarantine_pipeline(kafka.bootstrap_servers, tmp_path)
    half = len(workload.mta_events) // 2
    pipeline.produce_workload(Workload(workload.delivery_events, workload.mta_events[:half]))
    service = pipeline.start("crashy", quarantine=True)
    try:
        while not pipeline.read_all(pipeline.topics.address_signals):  # working, with checkpoints behind it
            assert service.poll() is None, f"exited early with {service.returncode}"
            time.sleep(0.2)
        pipeline.produce_workload(Workload([], workload.mta_events[half:]))
        service.send_signal(signal.SIGKILL)  # while it works through the second half
        service.wait()
        service = pipeline.start("crashy", quarantine=True)
        wait_until_consumed(pipeline, [service])
        assert_each_signal_once(pipeline, workload)
        assert stop(service) == 0
    finally:
        service.kill()
