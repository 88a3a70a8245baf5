"""The service as users run it: real processes, the CLI, the embedded broker."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from consumer.cli.workload import WorkloadSpec, generate
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import MTA_EVENT
from tests import samples
from tests.core.builders import mta
from tests.runtime.harness import Pipeline, as_json, free_port, http_get, stop, wait_http


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli.main", *args], capture_output=True, text=True, timeout=120
    )


def test_sample_send_through_the_cli(kafka, tmp_path):
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path)
    for topic, path in (
        (pipeline.topics.deliveries, samples.DELIVERIES_FILE),
        (pipeline.topics.mta_events, samples.MTA_FILE),
    ):
        produced = cli(
            "produce",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--topic",
            topic,
            "--schema",
            "delivery_event" if path == samples.DELIVERIES_FILE else "mta_event",
            str(path),
        )
        assert produced.returncode == 0, produced.stderr
    port = free_port()
    service = pipeline.start("solo", http_port=port)
    try:
        wait_http(port, "/readyz")
        pipeline.wait_for_kpis({samples.DELIVERY_ID: {"processed": 12, "sent": 9}}, processes=[service])
        shown = cli("kpis", "--bootstrap-servers", kafka.bootstrap_servers, "--topic", pipeline.topics.kpis, "--json")
        [kpi] = [json.loads(line) for line in shown.stdout.splitlines()]
        # The sample's validity period ended in January 2026: the service's wall clock has passed it.
        assert {k: kpi[k] for k in samples.EXPECTED_KPI} == samples.EXPECTED_KPI | {"state": "FINISHED", "final": True}

        status, body = http_get(port, f"/deliveries/{samples.DELIVERY_ID}")
        assert status == 200 and as_json(body)["sent"] == 9
        assert http_get(port, "/deliveries/someone-else")[0] == 404
        assert http_get(port, "/healthz")[0] == 200

        asked = cli(
            "compute-stats",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--topic",
            pipeline.topics.control,
            samples.DELIVERY_ID,
        )
        assert asked.returncode == 0, asked.stderr
        version = kpi["version"]
        latest = pipeline.wait_for_kpis({samples.DELIVERY_ID: {"version": version + 1}}, processes=[service])
        assert latest[samples.DELIVERY_ID]["version"] == version + 1  # recomputed and republished, unchanged
        metrics = http_get(port, "/metrics")[1].decode()
        assert 'sendtrack_events_total{outcome="duplicate",topic="' in metrics
        assert 'sendtrack_rejected_confirmations_total{reason="missing_role:start_deliveries"} 1.0' in metrics
        assert "sendtrack_compute_stats_mismatches_total" not in metrics.replace(
            "# HELP sendtrack_compute_stats_mismatches_total", ""
        ).replace("# TYPE sendtrack_compute_stats_mismatches_total", "")
        assert 'sendtrack_assigned_partitions{stage="delivery"} 4.0' in metrics

        started = time.monotonic()
        assert stop(service) == 0
        assert time.monotonic() - started < 20
    finally:
        service.kill()


@pytest.mark.parametrize(("store", "guarantee"), [("rocksdb", "exactly-once"), ("memory", "at-least-once")])
def test_a_send_with_and_without_efs_gives_the_ground_truth(kafka, tmp_path, store, guarantee):
    workload = generate(WorkloadSpec.ending_now(deliveries=6, messages=400, ended=2, seed=11))
    assert {e["efs"] for e in workload.expected.values()} == {True, False}
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path)
    pipeline.produce_workload(workload)
    service = pipeline.start("solo", store=store, guarantee=guarantee)
    try:
        latest = pipeline.wait_for_kpis(workload.expected, processes=[service])
        for delivery_id, expected in workload.expected.items():
            assert {k: latest[delivery_id][k] for k in expected} == expected
        assert stop(service) == 0
    finally:
        service.kill()


def test_poison_goes_to_the_dead_letter_topic_and_the_rest_is_processed(kafka, tmp_path):
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=1)
    codec = AvroCodec.named(MTA_EVENT)
    good = [mta("d1", f"m{i}", "RELAYED", at=int(time.time() * 1000)) for i in range(3)]
    valid = codec.encode(good[0])
    enum_at = valid.index(b"\x04m0") + 3  # the type enum's index follows message_id
    topic = pipeline.topics.mta_events
    pipeline.produce_raw(topic, b"d1", b"\x00\x01garbage", headers=[("trace", b"abc")])
    pipeline.produce_raw(topic, b"d1", valid[:enum_at] + b"\x40" + valid[enum_at + 1 :])  # enum index 32
    pipeline.produce_raw(topic, b"other", valid)  # keyed by another delivery
    pipeline.produce_raw(pipeline.topics.control, b"d1", b"not json")
    pipeline.produce_events(topic, MTA_EVENT, good)
    service = pipeline.start("solo", store="memory")
    try:
        assert pipeline.wait_for_kpis({"d1": {"processed": 3}}, processes=[service])["d1"]["processed"] == 3
        deadline = time.monotonic() + 30
        while len(dead := pipeline.read_all(pipeline.topics.dlq)) < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
        by_code = {}
        for _partition, _offset, key, value, headers in dead:
            h = dict(headers)
            by_code.setdefault(h["sendtrack.error.code"].decode(), []).append((key, value, h))
        assert sorted(by_code) == ["decode_error", "invalid_field", "key_mismatch"]
        assert len(by_code["decode_error"]) == 2
        garbage = next(h for _key, value, h in by_code["decode_error"] if value == b"\x00\x01garbage")
        assert garbage["trace"] == b"abc"  # the original headers travel along
        assert garbage["sendtrack.source.topic"] == topic.encode()
        assert garbage["sendtrack.source.offset"] == b"0"
        assert by_code["key_mismatch"][0][0] == b"other" and by_code["key_mismatch"][0][1] == valid
        assert by_code["invalid_field"][0][2]["sendtrack.source.topic"] == pipeline.topics.control.encode()
        assert stop(service) == 0
    finally:
        service.kill()
