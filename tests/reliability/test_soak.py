"""Soak: a steady load for a long while; RSS, open files, threads and lag sampled, their slopes reported.

SENDTRACK_SOAK_SECONDS (default 600) and SENDTRACK_SOAK_RATE (events/s, default 12,000) set the run. The feeder
runs in the test process on the same two cores as the broker and the instance: a 40 s trial at 20,000 events/s
left the instance behind (lag rising), so the default is lower; REPORT.md gives the rate of each run.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumer.cli.workload import Workload, WorkloadSpec, generate
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT
from consumer.kafka.producer import produce_waiting
from tests.figures import record
from tests.reliability.faults import exact_or_exit
from tests.service.harness import Pipeline, free_port, http_get, stop, wait_http

pytestmark = pytest.mark.long


def renamed(workload: Workload, suffix: str) -> Workload:
    """The same send for other deliveries: ids get a suffix, the expected KPIs are the same."""

    def rename(event: dict) -> dict:
        return {**event, "delivery_id": event["delivery_id"] + suffix, "event_id": event["event_id"] + suffix}

    return Workload(
        [rename(e) for e in workload.delivery_events],
        [rename(e) for e in workload.mta_events],
        {d + suffix: kpi for d, kpi in workload.expected.items()},
    )


def feed(pipeline: Pipeline, base: Workload, rate: float, seconds: float, sent: list[dict]) -> None:
    """Produce renamed copies of the base send at `rate` for `seconds`; keeps only what each one expects."""
    producer = Producer({"bootstrap.servers": pipeline.bootstrap, "linger.ms": 20, "enable.idempotence": True})
    topics = pipeline.topics
    codecs = {topics.deliveries: AvroCodec.named(DELIVERY_EVENT), topics.mta_events: AvroCodec.named(MTA_EVENT)}
    started, produced, rounds = time.monotonic(), 0, 0
    while time.monotonic() - started < seconds:
        workload = renamed(base, f"-r{rounds}")
        rounds += 1
        stream = [(pipeline.topics.deliveries, e) for e in workload.delivery_events]
        stream += [(pipeline.topics.mta_events, e) for e in workload.mta_events]
        for topic, event in stream:
            produce_waiting(producer, topic, codecs[topic].encode(event), event["delivery_id"].encode())
            produced += 1
            if produced % 1_000 == 0:
                ahead = produced / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
                producer.poll(0)
        sent.append({"expected": workload.expected, "events": len(stream)})
    producer.flush(60)


def sample(pid: int, port: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    _, body = http_get(port, "/metrics")
    lag = sum(float(v) for v in re.findall(r"^sendtrack_consumer_lag\{[^}]*\} (\S+)$", body.decode(), re.M))
    return {
        "rss_mb": int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024,
        "threads": int(re.search(r"Threads:\s+(\d+)", status).group(1)),
        "open_files": len(os.listdir(f"/proc/{pid}/fd")),
        "lag": lag,
    }


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else 0.0


def test_soak(kafka, tmp_path):
    seconds = float(os.environ.get("SENDTRACK_SOAK_SECONDS", 600))
    rate = float(os.environ.get("SENDTRACK_SOAK_RATE", 12_000))
    base = generate(WorkloadSpec.ending_now(deliveries=4, messages=2_000, ended=1, seed=41, duplicate_rate=0.02))
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    port = free_port()
    process = pipeline.start("soak", http_port=port)
    try:
        wait_http(port, "/readyz", timeout_s=90)
        sent: list[dict] = []
        feeder = threading.Thread(target=feed, args=(pipeline, base, rate, seconds, sent), daemon=True)
        started = time.monotonic()
        feeder.start()
        samples: list[tuple[float, dict[str, float]]] = []
        while feeder.is_alive():
            samples.append((time.monotonic() - started, sample(process.pid, port)))
            time.sleep(10)
        feeder.join()
        # KPIs only: a clean pass over every event for the sending-log check would not fit in memory.
        everything = Workload([], [], {d: k for w in sent for d, k in w["expected"].items()})
        assert exact_or_exit(pipeline, everything, process, timeout_s=300) is None
        assert all(pipeline.kpis()[d]["processed"] == k["processed"] for d, k in everything.expected.items())
        slopes = {name: round(slope_per_minute([(t, s[name]) for t, s in samples]), 3) for name in samples[0][1]}
        events = sum(w["events"] for w in sent)
        record("soak", seconds=seconds, rate=rate, events=events, samples=len(samples), slopes_per_min=slopes,
               last=samples[-1][1], exact=1)
        assert stop(process) == 0
    finally:
        process.kill()
