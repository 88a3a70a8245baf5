"""Soaks: a steady load for a long while; RSS, open files, threads and lag sampled, their slopes reported.

`test_soak`: renamed copies of one send, none ending (every delivery stays live, so state grows by design).
`test_rolling_soak`: sends start, run and pass their validity end continuously with a short retention, so the
live set stays the same size: RSS, open files, threads, state directory bytes and state keys must be flat, a fresh
instance's restore at the end replays what is live (not every event ever), and every archived KPI is the final one.

SENDTRACK_SOAK_SECONDS (default 600; the rolling soak: 1,800, and 30 in CI) and SENDTRACK_SOAK_RATE (events/s,
default 12,000) set the runs. The feeder runs in the test process on the same two cores as the broker and the
instance: a 40 s trial at 20,000 events/s left the instance behind (lag rising), so the default is lower, about
0.7 of what this setup sustains; REPORT.md gives the rate of each run.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from consumer.cli.workload import Workload, WorkloadSpec, generate
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT
from consumer.kafka.producer import produce_waiting
from tests.figures import record
from tests.reliability.faults import exact_or_exit
from tests.runtime.harness import Pipeline, free_port, http_get, stop, wait_http


def renamed(workload: Workload, suffix: str) -> Workload:
    """The same send for other deliveries: ids get a suffix, the expected KPIs are the same."""

    def rename(event: dict) -> dict:
        return {**event, "delivery_id": event["delivery_id"] + suffix, "event_id": event["event_id"] + suffix}

    return Workload(
        [rename(e) for e in workload.delivery_events],
        [rename(e) for e in workload.mta_events],
        {d + suffix: kpi for d, kpi in workload.expected.items()},
    )


def rolling(base: Workload, suffix: str, span_ms: int = 2_000) -> Workload:
    """The base send for other deliveries, its event times squeezed into the `span_ms` just before now (order kept),
    so that its validity end passes while it is read and the retention starts counting at once."""
    times = [e["occurred_at"] for e in (*base.delivery_events, *base.mta_events)]
    first, last = min(times), max(times)
    end = int(time.time() * 1000) - 500

    def at(t: int | None) -> int | None:
        return None if t is None else end - span_ms + (t - first) * span_ms // (last - first)

    renamed_send = renamed(base, suffix)
    for event in renamed_send.delivery_events:
        event.update(occurred_at=at(event["occurred_at"]), validity_end=at(event.get("validity_end")))
        event.update(scheduled_at=at(event.get("scheduled_at")))
    for event in renamed_send.mta_events:
        event["occurred_at"] = at(event["occurred_at"])
    return renamed_send


def feed(
    pipeline: Pipeline,
    base: Workload,
    rate: float,
    seconds: float,
    sent: list[dict],
    make: Callable[[Workload, str], Workload] = renamed,
) -> None:
    """Produce copies of the base send (`make`) at `rate` for `seconds`; keeps only what each one expects."""
    producer = Producer({"bootstrap.servers": pipeline.bootstrap, "linger.ms": 20, "enable.idempotence": True})
    topics = pipeline.topics
    codecs = {topics.deliveries: AvroCodec.named(DELIVERY_EVENT), topics.mta_events: AvroCodec.named(MTA_EVENT)}
    started, produced, rounds = time.monotonic(), 0, 0
    while time.monotonic() - started < seconds:
        workload = make(base, f"-r{rounds}")
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


def metric(body: str, name: str) -> float:
    """The sum of a metric's samples in a /metrics body."""
    return sum(float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", body, re.M))


def sample(pid: int, port: int, state_dir: Path | None = None) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    body = http_get(port, "/metrics")[1].decode()
    figures = {
        "rss_mb": int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024,
        "threads": int(re.search(r"Threads:\s+(\d+)", status).group(1)),
        "open_files": len(os.listdir(f"/proc/{pid}/fd")),
        "lag": metric(body, "sendtrack_consumer_lag"),
    }
    if state_dir is not None:
        files = (path for path in state_dir.rglob("*") if path.is_file())
        figures["state_dir_mb"] = round(sum(path.stat().st_size for path in files) / 2**20, 2)
        figures["state_keys"] = metric(body, "sendtrack_state_keys")
        figures["live_deliveries"] = metric(body, "sendtrack_live_deliveries")
    return figures


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else 0.0


@pytest.mark.long
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
        record(
            "soak",
            seconds=seconds,
            rate=rate,
            events=events,
            samples=len(samples),
            slopes_per_min=slopes,
            last=samples[-1][1],
            exact=1,
        )
        assert stop(process) == 0
    finally:
        process.kill()


ROLLING_RETENTION_S = 20.0
# The changelog's compaction timings scaled down with the retention (20 s for 30 days): the product's hour of
# uncompacted segment and of tombstones (consumer/kafka/admin.py) would outlast the soak itself.
COMPACTION_S = 60


def scale_compaction(pipeline: Pipeline, seconds: int) -> None:
    admin = AdminClient({"bootstrap.servers": pipeline.bootstrap})
    timings = {"segment.ms": seconds * 1000, "delete.retention.ms": seconds * 1000, "min.cleanable.dirty.ratio": 0.1}
    entries = [
        ConfigEntry(name, str(value), incremental_operation=AlterConfigOpType.SET) for name, value in timings.items()
    ]
    resource = ConfigResource("topic", pipeline.topics.changelog, incremental_configs=entries)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


@pytest.mark.parametrize(
    "seconds",
    [pytest.param(30, id="ci"), pytest.param(float(os.environ.get("SENDTRACK_SOAK_SECONDS", 1800)), id="long",
                                             marks=pytest.mark.long)],
)  # fmt: skip
def test_rolling_soak(kafka, tmp_path, seconds):
    rate = float(os.environ.get("SENDTRACK_SOAK_RATE", 12_000))
    base = generate(WorkloadSpec(deliveries=4, messages=1_500, ended=4, seed=43, duplicate_rate=0.02))
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    scale_compaction(pipeline, COMPACTION_S)
    port = free_port()
    process = pipeline.start("rolling", http_port=port, state_retention_s=ROLLING_RETENTION_S)
    state_dir = tmp_path / "state-rolling"
    try:
        wait_http(port, "/readyz", timeout_s=90)
        sent: list[dict] = []
        feeder = threading.Thread(target=feed, args=(pipeline, base, rate, seconds, sent, rolling), daemon=True)
        started = time.monotonic()
        feeder.start()
        samples: list[tuple[float, dict[str, float]]] = []
        while feeder.is_alive():
            samples.append((time.monotonic() - started, sample(process.pid, port, state_dir)))
            time.sleep(10)
        feeder.join()
        final = {d: {**k, "archived": True} for w in sent for d, k in w["expected"].items()}
        assert exact_or_exit(pipeline, Workload([], [], final), process, timeout_s=ROLLING_RETENTION_S + 120) is None
        samples.append((time.monotonic() - started, sample(process.pid, port, state_dir)))
        assert stop(process) == 0
        restore = fresh_restore(pipeline)
        # No input is bad, and no event of a send comes after its archive (that would be a delivery_archived letter).
        assert pipeline.read_all(pipeline.topics.dlq) == []
        slopes = {name: round(slope_per_minute([(t, s[name]) for t, s in samples]), 3) for name in samples[0][1]}
        record(
            "rolling_soak", seconds=seconds, rate=rate, events=sum(w["events"] for w in sent), deliveries=len(final),
            samples=len(samples), retention_s=ROLLING_RETENTION_S, compaction_s=COMPACTION_S, slopes_per_min=slopes,
            last=samples[-1][1],
            restore=restore, exact=1,
        )  # fmt: skip
    finally:
        process.kill()


def fresh_restore(pipeline: Pipeline) -> dict[str, float]:
    """A new instance with an empty state directory takes every partition: what it restores, and how long."""
    port = free_port()
    started = time.monotonic()
    process = pipeline.start("fresh", http_port=port, state_retention_s=ROLLING_RETENTION_S)
    try:
        wait_http(port, "/readyz", timeout_s=180)
        ready_s = time.monotonic() - started
        body = http_get(port, "/metrics")[1].decode()
        assert stop(process) == 0
    finally:
        process.kill()
    return {
        "records": metric(body, "sendtrack_state_restore_records_total"),
        "restore_s": round(metric(body, "sendtrack_state_restore_seconds_sum"), 2),
        "start_to_ready_s": round(ready_s, 2),
        "live_deliveries": metric(body, "sendtrack_live_deliveries"),
    }
