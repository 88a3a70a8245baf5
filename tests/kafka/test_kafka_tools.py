"""The tools Kafka users already have, against sendtrack on Apache Kafka: Kafka's own command-line tools from the
test broker's artifacts (the consumer-groups tool, the console consumer and producer), Debian's kcat, and a Java
client's default partitioner (murmur2) next to sendtrack's tools configured as the README says.

One pipeline run is shared: a workload and an MTA's KumoMTA records (ingested inside `run`, so the delivery
stage's input holds transaction markers) are processed by an instance that is killed with -9 while its first
transaction holds records and restarted, so the outputs hold aborted records; then it is stopped and a backlog
is produced."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.cli.workload import WorkloadSpec, generate
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT
from consumer.kafka.brokers.apache import tool_command
from consumer.runtime.settings import IngestSource
from tests.cli.tools import outcome, sendtrack
from tests.core.builders import mta
from tests.ingest import sends
from tests.ingest.test_ingest_kafka import BAD_RECORD, fill_source
from tests.runtime.harness import Pipeline, free_port, http_get, stop, wait_http

GROUPS_TOOL = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"  # kafka-consumer-groups.sh
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"  # kafka-console-consumer.sh
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"  # kafka-console-producer.sh
TOOL_TIMEOUT_S = 90
BACKLOG = {"mta": 50, "source": 7}  # records produced while the instance is stopped
Lags = dict[tuple[str, int], int]  # (topic, partition) -> records not yet processed


@dataclass
class Run:
    pipeline: Pipeline
    source: str  # the KumoMTA topic the ingest stage reads
    ingest_group: str
    tool_lags: dict[str, Lags]  # group -> what kafka-consumer-groups showed once everything was processed
    confluent_lags: dict[str, Lags]  # group -> log end minus committed, as confluent-kafka saw them then
    metric_lags: Lags  # sendtrack_consumer_lag then
    marker_tails: dict[int, int]  # mta.events partition -> entries after its last committed record, then
    backlog_lags: dict[str, Lags]  # group -> what the tool showed after the stop and the backlog
    backlog: Lags  # the records produced after the stop, per partition

    def groups(self) -> dict[str, tuple[str, ...]]:
        return {self.pipeline.group: self.pipeline.topics.inputs, self.ingest_group: (self.source,)}


# -- Kafka's tools and kcat as command lines -------------------------------------------------------------------


def kafka_tool(main_class: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        tool_command(main_class, *args), input=stdin, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S
    )
    assert done.returncode == 0, f"{main_class} exited with {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def describe(bootstrap: str, group: str) -> Lags:
    """kafka-consumer-groups --describe: LAG per partition; '-' (nothing committed) only where the log is empty."""
    lags = {}
    for line in kafka_tool(GROUPS_TOOL, "--bootstrap-server", bootstrap, "--describe", "--group", group).splitlines():
        columns = line.split()
        if columns[:1] != [group]:
            continue  # the header, the tool's own log lines
        topic, partition, current, end, lag = columns[1:6]
        if lag == "-":
            assert current == "-" and end == "0", line
            lag = "0"
        assert current == "-" or int(end) - int(current) == int(lag), line
        lags[topic, int(partition)] = int(lag)
    return lags


def console_consumer(bootstrap: str, topic: str, isolation: str) -> set[tuple[int, int]]:
    """(partition, offset) of every record kafka-console-consumer prints."""
    out = kafka_tool(
        CONSOLE_CONSUMER, "--bootstrap-server", bootstrap, "--topic", topic, "--from-beginning",
        "--isolation-level", isolation, "--timeout-ms", "4000",
        "--property", "print.partition=true", "--property", "print.offset=true", "--property", "print.value=false",
    )  # fmt: skip
    return {(int(p), int(o)) for p, o in re.findall(r"^Partition:(\d+)\tOffset:(\d+)", out, re.MULTILINE)}


def kcat(bootstrap: str, topic: str, isolation: str) -> set[tuple[int, int]]:
    done = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
         "-X", f"isolation.level={isolation}", "-f", "%p %o\\n"],
        capture_output=True, text=True, timeout=TOOL_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return {(int(p), int(o)) for p, o in (line.split() for line in done.stdout.splitlines())}


def read(pipeline: Pipeline, topic: str, isolation: str = "read_committed") -> set[tuple[int, int]]:
    """The same, as a confluent-kafka consumer reads it."""
    return {(partition, offset) for partition, offset, *_ in pipeline.read_all(topic, isolation)}


# -- what the group and the instance say --------------------------------------------------------------------------


def confluent_lags(bootstrap: str, group: str, topics: tuple[str, ...]) -> Lags:
    """Log end minus the group's committed offset, as a confluent-kafka client sees them."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        wanted = [
            TopicPartition(topic, p)
            for topic in topics
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        lags = {}
        for tp in consumer.committed(wanted, timeout=10):
            end = consumer.get_watermark_offsets(tp, timeout=10)[1]
            lags[tp.topic, tp.partition] = end - max(tp.offset, 0)
        return lags
    finally:
        consumer.close()


def wait_caught_up(run_groups: dict[str, tuple[str, ...]], bootstrap: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(any(confluent_lags(bootstrap, g, t).values()) for g, t in run_groups.items()):
        if time.monotonic() > deadline:
            return  # the tool's lags then show where the group stands
        time.sleep(0.5)


def metric_lags(port: int, caught_up: Lags, timeout_s: float = 20.0) -> Lags:
    """sendtrack_consumer_lag once it says these lags, or what it says at the timeout. It comes from librdkafka's
    statistics, every 5 s: a sample taken before the instance caught up still shows the lag it had then."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = http_get(port, "/metrics")[1].decode()
        pattern = r'^sendtrack_consumer_lag\{partition="(\d+)",topic="([^"]+)"\} ([\d.]+)$'
        found = {(t, int(p)): int(float(v)) for p, t, v in re.findall(pattern, metrics, re.MULTILINE)}
        if found == caught_up or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


# -- the shared run ---------------------------------------------------------------------------------------------


def kill_with_records_in_a_transaction(pipeline: Pipeline, **kwargs: object) -> None:
    """Start an instance whose first commit is far off; kill -9 it once its transaction holds a sending log."""
    instance = pipeline.start("a", commit_interval=30.0, **kwargs)
    reader = Consumer({"bootstrap.servers": pipeline.bootstrap, "group.id": f"{pipeline.name}-uncommitted",
                       "isolation.level": "read_uncommitted"})  # fmt: skip
    try:
        reader.assign([TopicPartition(pipeline.topics.sending_logs, p, 0) for p in range(pipeline.partitions)])
        deadline = time.monotonic() + 60
        while not any(m.error() is None for m in reader.consume(10, 0.1)):
            assert time.monotonic() < deadline and instance.poll() is None, "no sending log in 60 s"
    finally:
        instance.send_signal(signal.SIGKILL)
        instance.wait()
        reader.close()


def marker_tails(pipeline: Pipeline) -> dict[int, int]:
    """Per mta.events partition: log end minus (last committed record + 1): its trailing markers."""
    topic = pipeline.topics.mta_events
    last: dict[int, int] = {}
    for partition, offset in read(pipeline, topic):
        last[partition] = max(offset, last.get(partition, -1))
    ends = confluent_lags(pipeline.bootstrap, f"{pipeline.name}-nobody", (topic,))
    return {p: ends[topic, p] - (last.get(p, -1) + 1) for p in range(pipeline.partitions)}


def produce_backlog(pipeline: Pipeline, source: str) -> Lags:
    """Records for the stopped instance: valid MTA events and KumoMTA records; where each landed."""
    landed: Counter[tuple[str, int]] = Counter()
    producer = Producer({"bootstrap.servers": pipeline.bootstrap, "enable.idempotence": True})
    codec = AvroCodec.named(MTA_EVENT)
    at = int(time.time() * 1000) - 60_000
    records = [(pipeline.topics.mta_events, f"late-{i}".encode(), codec.encode(mta(f"late-{i}", "m", "RELAYED", at)))
               for i in range(BACKLOG["mta"])]  # fmt: skip
    records += [(source, None, value) for value in sends.source_records("kumomta")[: BACKLOG["source"]]]
    for topic, key, value in records:
        producer.produce(topic, value, key, on_delivery=lambda _e, m: landed.update([(m.topic(), m.partition())]))
    assert producer.flush(30) == 0
    return dict(landed)


@pytest.fixture(scope="module")
def run(kafka, tmp_path_factory) -> Run:
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path_factory.mktemp("tools"))
    workload = generate(WorkloadSpec.ending_now(deliveries=6, messages=1500, seed=5))
    pipeline.produce_workload(workload)
    pipeline.produce_raw(pipeline.topics.mta_events, b"d-bad", b"not avro")  # a dead letter
    source = f"{pipeline.name}.source.kumomta"
    fill_source(pipeline, source, [*sends.source_records("kumomta"), BAD_RECORD])  # and another
    pipeline.produce_events(pipeline.topics.deliveries, DELIVERY_EVENT, sends.delivery_events())
    ingest = (IngestSource("kumomta", source),)
    kill_with_records_in_a_transaction(pipeline, ingest=ingest)
    port = free_port()
    service = pipeline.start("a", http_port=port, ingest=ingest)  # fences its killed self, aborting its transaction
    try:
        latest = pipeline.wait_for_kpis(workload.expected, processes=[service])
        assert all({k: latest[d][k] for k in e} == e for d, e in workload.expected.items())
        wait_http(port, "/readyz")
        result = Run(pipeline, source, f"{pipeline.group}.ingest.kumomta", {}, {}, {}, {}, {}, {})
        wait_caught_up(result.groups(), kafka.bootstrap_servers)
        result.tool_lags = {group: describe(kafka.bootstrap_servers, group) for group in result.groups()}
        result.confluent_lags = {g: confluent_lags(kafka.bootstrap_servers, g, t) for g, t in result.groups().items()}
        caught_up = {where: 0 for lags in result.confluent_lags.values() for where in lags}
        result.metric_lags = metric_lags(port, caught_up)
        result.marker_tails = marker_tails(pipeline)
        stop(service)
    finally:
        service.kill()
    result.backlog = produce_backlog(pipeline, source)
    result.backlog_lags = {group: describe(kafka.bootstrap_servers, group) for group in result.groups()}
    return result


# -- the tests ---------------------------------------------------------------------------------------------------


def test_the_consumer_groups_tool_shows_lag_0_once_everything_is_processed_with_markers_in_the_inputs(run):
    # The ingest stage wrote mta.events in transactions: partitions ending with a commit marker after the last record.
    assert any(run.marker_tails.values()), f"no trailing marker to skip: {run.marker_tails}"
    for group in run.groups():
        shown = run.tool_lags[group]
        assert shown == run.confluent_lags[group], group  # every input partition, as a confluent-kafka client sees it
        assert shown == dict.fromkeys(shown, 0), f"{group}: {shown}"
    # sendtrack's own metric covers the same partitions of both stages, and agrees.
    assert run.metric_lags == run.tool_lags[run.pipeline.group] | run.tool_lags[run.ingest_group]


def test_the_consumer_groups_tool_shows_the_real_backlog_of_a_stopped_instance(run):
    assert sum(run.backlog.values()) == sum(BACKLOG.values())
    # A group with no members lists the partitions it has committed: every mta.events partition (the workload filled
    # them all); a source partition its few unkeyed records never reached has no offset, so it may be missing.
    listed = {where for lags in run.backlog_lags.values() for where in lags}
    assert {where for where in run.backlog if where[0] == run.pipeline.topics.mta_events} <= listed
    for group in run.groups():
        shown = run.backlog_lags[group]  # without members the tool lists the partitions with a committed offset
        assert shown == {where: run.backlog.get(where, 0) for where in shown}, group


def test_the_console_consumer_reads_committed_what_confluent_kafka_reads_and_no_aborted_record(run):
    pipeline, topic = run.pipeline, run.pipeline.topics.sending_logs
    committed, everything = read(pipeline, topic), read(pipeline, topic, "read_uncommitted")
    assert committed < everything, "the kill aborted no transaction with sending logs: nothing to hide"
    assert console_consumer(pipeline.bootstrap, topic, "read_committed") == committed
    # Kafka's console consumer defaults to read_uncommitted: then it shows the aborted records too.
    assert console_consumer(pipeline.bootstrap, topic, "read_uncommitted") == everything


@pytest.mark.skipif(shutil.which("kcat") is None, reason="Debian's kcat is not installed (apt-get install kcat)")
def test_kcat_reads_every_output_topic_committed(run):
    pipeline = run.pipeline
    outputs = (pipeline.topics.kpis, pipeline.topics.sending_logs, pipeline.topics.dlq, pipeline.topics.changelog)
    for topic in outputs:
        expected = read(pipeline, topic)
        assert expected, f"{topic} is empty: nothing to compare"
        assert kcat(pipeline.bootstrap, topic, "read_committed") == expected, topic
    logs = pipeline.topics.sending_logs
    assert kcat(pipeline.bootstrap, logs, "read_uncommitted") == read(pipeline, logs, "read_uncommitted")


# -- partitioning ------------------------------------------------------------------------------------------------

DELIVERIES = [f"campaign-{n:03d}-{n * 7919 % 1000:03d}" for n in range(200)]
ASKED = DELIVERIES[:10]  # compute-stats is one process per delivery: a few suffice (1 in 8 each to match by chance)


def kumomta_records(tmp_path: Path) -> Path:
    """A KumoMTA Reception record for one message of each delivery, as its MTA would publish it."""
    template = json.loads(sends.source_records("kumomta")[0])
    path = tmp_path / "kumomta.jsonl"
    lines = []
    for n, delivery in enumerate(DELIVERIES):
        record = template | {"id": f"{n:032x}", "meta": template["meta"] | {"delivery_id": delivery}}
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def mta_events(tmp_path: Path) -> Path:
    at = int(time.time() * 1000) - 3_600_000
    path = tmp_path / "mta.jsonl"
    path.write_text("".join(json.dumps(mta(d, "m-1", "DELIVERED", at)) + "\n" for d in DELIVERIES))
    return path


def run_tool(*args: str) -> None:
    code, _, stderr = outcome(sendtrack(*args), timeout_s=60)
    assert code == 0, stderr


def partitions_by_key(pipeline: Pipeline, topic: str, header: str | None = None) -> dict[str, set[int]]:
    """Each key's partitions (only records with `header`, when given)."""
    found: dict[str, set[int]] = {}
    for partition, _, key, _, headers in pipeline.read_all(topic):
        if header is None or header in dict(headers or []):
            found.setdefault(key.decode(), set()).add(partition)
    return found


def wait_for_keys(pipeline: Pipeline, topic: str, header: str, timeout_s: float = 60.0) -> dict[str, set[int]]:
    deadline = time.monotonic() + timeout_s
    while len(found := partitions_by_key(pipeline, topic, header)) < len(DELIVERIES) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def test_java_default_partitioner_and_sendtrack_tools_with_murmur2_put_a_delivery_on_one_partition(kafka, tmp_path):
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=8)
    topics, bootstrap = pipeline.topics, kafka.bootstrap_servers
    # A Java producer with its default partitioner (murmur2 of the key); the values are not for sendtrack.
    kafka_tool(CONSOLE_PRODUCER, "--bootstrap-server", bootstrap, "--topic", topics.deliveries,
               "--property", "parse.key=true", "--property", "key.separator=|",
               stdin="".join(f"{d}|from the back office\n" for d in DELIVERIES))  # fmt: skip
    murmur2 = ("--bootstrap-servers", bootstrap, "--partitioner", "murmur2_random")
    run_tool("produce", *murmur2, "--topic", topics.mta_events, "--schema", MTA_EVENT, str(mta_events(tmp_path)))
    for delivery in ASKED:
        run_tool("compute-stats", *murmur2, "--topic", topics.control, delivery)
    source, default = f"{pipeline.name}.source.kumomta", f"{pipeline.name}.default"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until its futures are done
    for future in admin.create_topics([NewTopic(source, 3), NewTopic(default, 8)]).values():
        future.result(30)
    run_tool("produce", *murmur2, "--topic", source, "--format", "kumomta", str(kumomta_records(tmp_path)))
    # Without the flag: librdkafka's default partitioner (CRC32).
    run_tool("produce", "--bootstrap-servers", bootstrap, "--topic", default, "--schema", MTA_EVENT,
             str(mta_events(tmp_path)))  # fmt: skip
    ingest = pipeline.start(
        "ingest", delivery_stage=False, ingest=(IngestSource("kumomta", source),), partitioner="murmur2_random"
    )
    try:
        ingested = wait_for_keys(pipeline, topics.mta_events, "sendtrack.source.format")
        stop(ingest)
    finally:
        ingest.kill()

    java = partitions_by_key(pipeline, topics.deliveries)
    assert set(java) == set(DELIVERIES) and all(len(p) == 1 for p in java.values())
    assert len(set.union(*java.values())) == 8  # spread over every partition: a shared mistake cannot hide
    produced = partitions_by_key(pipeline, topics.mta_events)  # the tool's events and the ingested ones
    assert {d: produced[d] for d in DELIVERIES} == java
    assert {d: ingested.get(d) for d in DELIVERIES} == java
    assert partitions_by_key(pipeline, topics.control) == {d: java[d] for d in ASKED}
    crc32 = partitions_by_key(pipeline, default)
    assert sum(crc32[d] != java[d] for d in DELIVERIES) > len(DELIVERIES) // 2  # so the flag is what made them agree
