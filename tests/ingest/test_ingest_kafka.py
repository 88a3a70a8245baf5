"""Each MTA format end to end through the broker: the send of tests/ingest/sends.py, written by the vendor's MTA
to a source topic, ingested and processed by real `sendtrack` processes, gives the KPIs that the same send gives
in the native contract. A bad source record is dead-lettered and the stage stays up."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT
from consumer.kafka.producer import produce_waiting
from consumer.runtime.settings import IngestSource
from tests.conftest import BROKER_KIND
from tests.ingest import sends
from tests.ingest.test_sends import kpis, native
from tests.runtime.harness import Pipeline, free_port, http_get, stop, stop_all, wait_http

# Depend on when the KPI was made, not on what it says.
UNSTABLE = ("version", "updated_at")
SOURCE_PARTITIONS = 3  # not mta.events' 4: the stage repartitions by delivery_id
BAD_RECORD = b'{"type": "Delivery", "meta": '


def comparable(kpi: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if kpi is None else {k: v for k, v in kpi.items() if k not in UNSTABLE}


def wait_for_same_kpis(
    pipeline: Pipeline, expected: dict[str, dict[str, Any]], processes: list[subprocess.Popen[bytes]]
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 90
    while True:
        latest = {d: comparable(kpi) for d, kpi in pipeline.kpis().items()}
        if latest == expected or time.monotonic() > deadline:
            return latest
        for process in processes:
            assert process.poll() is None, f"an instance exited with {process.returncode}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def native_kpis(kafka, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """The send in the native contract through the broker; the core's own answer says when it has settled."""
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path_factory.mktemp("native"))
    pipeline.produce_events(pipeline.topics.deliveries, DELIVERY_EVENT, sends.delivery_events())
    pipeline.produce_events(pipeline.topics.mta_events, MTA_EVENT, sends.native_events())
    expected = {d: comparable(kpi) for d, kpi in kpis(native(), efs_default=False, validity_over=True).items()}
    service = pipeline.start("native", store="memory")
    try:
        latest = wait_for_same_kpis(pipeline, expected, [service])
    finally:
        stop(service)
    assert latest == expected
    return latest


def fill_source(pipeline: Pipeline, topic: str, records: list[bytes], chunk: int = 0, pause_s: float = 0.0) -> None:
    """The vendor's topic, filled the way its MTA fills it: keyed its own way (here: not at all); with a chunk
    size, at a pace (a pause after each chunk), as a live MTA writes."""
    admin = AdminClient({"bootstrap.servers": pipeline.bootstrap})
    [created] = admin.create_topics([NewTopic(topic, SOURCE_PARTITIONS)]).values()
    with contextlib.suppress(KafkaException):  # it exists already (a paced feed into a topic made beforehand)
        created.result(30)
    producer = Producer({"bootstrap.servers": pipeline.bootstrap, "linger.ms": 5})
    for start in range(0, len(records), chunk or len(records) or 1):
        for value in records[start : start + (chunk or len(records))]:
            produce_waiting(producer, topic, value, None)
        assert producer.flush(30) == 0
        time.sleep(pause_s)


def mta_source(pipeline: Pipeline, fmt: str) -> str:
    topic = f"{pipeline.name}.source.{fmt}"
    records = sends.source_records(fmt)
    half = len(records) // 2
    fill_source(pipeline, topic, [*records[:half], BAD_RECORD, *records[half:]])
    pipeline.produce_events(pipeline.topics.deliveries, DELIVERY_EVENT, sends.delivery_events())
    pipeline.produce_events(pipeline.topics.mta_events, MTA_EVENT, sends.tracking_events(fmt))
    return topic


def assert_bad_record_dead_lettered(pipeline: Pipeline, source: str) -> None:
    [(_, _, _, value, headers)] = pipeline.read_all(pipeline.topics.dlq)
    named = dict(headers)
    assert value == BAD_RECORD
    assert (named["sendtrack.error.code"], named["sendtrack.source.topic"]) == (b"unmappable", source.encode())


def assert_bounces_name_their_rule(pipeline: Pipeline) -> None:
    codec = AvroCodec.named(MTA_EVENT)
    ingested = [
        (codec.decode(value), dict(headers or []))
        for *_, value, headers in pipeline.read_all(pipeline.topics.mta_events)
    ]
    bounces = [(event, named) for event, named in ingested if event["type"] == "HARD_BOUNCE"]
    assert bounces and all(named.get("sendtrack.bounce.rule") for _, named in bounces)


@pytest.mark.parametrize("fmt", ["kumomta", "ses"])
def test_a_send_ingested_inside_run_gives_the_native_kpis(kafka, tmp_path, native_kpis, fmt):
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path)
    source = mta_source(pipeline, fmt)
    port = free_port()
    service = pipeline.start("solo", store="memory", http_port=port, ingest=(IngestSource(fmt, source),))
    try:
        assert wait_for_same_kpis(pipeline, native_kpis, [service]) == native_kpis
        assert_bad_record_dead_lettered(pipeline, source)
        assert_bounces_name_their_rule(pipeline)
        wait_http(port, "/readyz")
        metrics = http_get(port, "/metrics")[1].decode()
        assert f'sendtrack_ingest_records_total{{format="{fmt}",outcome="dead_lettered"}} 1.0' in metrics
        assert f'sendtrack_assigned_partitions{{stage="ingest-{fmt}"}} {SOURCE_PARTITIONS}.0' in metrics
    finally:
        stop(service)


def test_a_send_ingested_by_its_own_process_gives_the_native_kpis(kafka, tmp_path, native_kpis):
    """`sendtrack ingest` beside `sendtrack run`: its own consumer group, exactly-once into mta.events."""
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path)
    source = mta_source(pipeline, "sendgrid")
    port = free_port()
    sendgrid = (IngestSource("sendgrid", source),)
    ingest = pipeline.start("ingest", http_port=port, delivery_stage=False, ingest=sendgrid, create_topics=True)
    service = pipeline.start("deliveries", store="memory")
    try:
        assert wait_for_same_kpis(pipeline, native_kpis, [ingest, service]) == native_kpis
        assert_bad_record_dead_lettered(pipeline, source)
        wait_http(port, "/readyz")
        assert http_get(port, "/deliveries/x")[0] == 404  # it serves no delivery: health and metrics only
    finally:
        stop_all(ingest, service)
    assert not Path(tmp_path / "state-ingest").exists()  # stateless: nothing on disk


def copies(n: int, fmt: str) -> tuple[list[bytes], list[dict[str, Any]], list[dict[str, Any]]]:
    """The send n times over under other delivery ids: source records, delivery events, tracking events."""
    ids = (sends.NEWS_ID, sends.PROMO_ID)
    records, deliveries, tracking = [], [], []
    for i in range(n):
        renamed = {d: f"{d}-c{i}" for d in ids}
        for value in sends.source_records(fmt):
            for old, new in renamed.items():
                value = value.replace(old.encode(), new.encode())
            records.append(value)
        deliveries += [{**e, "delivery_id": renamed[e["delivery_id"]]} for e in sends.delivery_events()]
        tracking += [{**e, "delivery_id": renamed[e["delivery_id"]]} for e in sends.tracking_events(fmt)]
    return records, deliveries, tracking


def ingested(port: int, fmt: str) -> float:
    try:
        status, body = http_get(port, "/metrics")
    except OSError:  # not listening yet
        return 0.0
    prefix = f'sendtrack_ingest_records_total{{format="{fmt}",outcome="mapped"}} '
    lines = [line for line in body.decode().splitlines() if line.startswith(prefix)] if status == 200 else []
    return float(lines[0].split()[1]) if lines else 0.0


def test_an_ingest_process_killed_mid_stream_and_restarted_changes_no_kpi(kafka, tmp_path, native_kpis):
    """kill -9 while the MTA is still writing and the stage has committed part of it: the restart re-reads from the
    last commit, and the killed transaction is aborted, so mta.events holds every event once (on Tansu the killed
    transaction's events show too: duplicates the core ignores). The source is fed at a pace, so the kill comes
    mid-stream whatever the machine's speed."""
    fmt, n = "kumomta", 150
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path)
    records, deliveries, tracking = copies(n, fmt)
    source = f"{pipeline.name}.source"
    fill_source(pipeline, source, [])
    pipeline.produce_events(pipeline.topics.deliveries, DELIVERY_EVENT, deliveries)
    pipeline.produce_events(pipeline.topics.mta_events, MTA_EVENT, tracking)
    expected = {f"{d}-c{i}": {**kpi, "delivery_id": f"{d}-c{i}"} for i in range(n) for d, kpi in native_kpis.items()}
    service = pipeline.start("deliveries", store="memory")
    port = free_port()
    kumomta = (IngestSource(fmt, source),)
    ingest = pipeline.start("ingest", http_port=port, delivery_stage=False, ingest=kumomta, commit_interval=0.2)
    feeder = threading.Thread(target=fill_source, args=(pipeline, source, records, 100, 0.05))  # about 5 s
    try:
        wait_http(port, "/readyz")
        feeder.start()
        deadline = time.monotonic() + 60
        while ingested(port, fmt) == 0 and time.monotonic() < deadline:  # wait for a first commit
            time.sleep(0.02)
        committed = ingested(port, fmt)
        ingest.kill()
        ingest.wait(10)
        assert committed > 0 and feeder.is_alive(), "the kill must come after a commit and before the last record"
        ingest = pipeline.start("ingest", http_port=port, delivery_stage=False, ingest=kumomta)
        feeder.join()
        assert wait_for_same_kpis(pipeline, expected, [ingest, service]) == expected
        if BROKER_KIND != "tansu":
            codec = AvroCodec.named(MTA_EVENT)
            events = [codec.decode(value) for *_, value, _ in pipeline.read_all(pipeline.topics.mta_events)]
            ids = [(event["delivery_id"], event["event_id"]) for event in events]
            assert len(ids) == len(set(ids)), "an event of the killed transaction became visible"
    finally:
        if feeder.is_alive():
            feeder.join()
        stop_all(ingest, service)
