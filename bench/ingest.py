"""The ingest scenarios of `python -m bench.run`: events/s of `sendtrack ingest` per MTA format, against the limit.

Per format (bench/sources.py renders the run's MTA events as the vendor's records), on fresh topics:
1. mapping alone: `make_format(name).map(value)` over every record in this process, no Kafka;
2. the source topic is filled, then nothing else touches the broker;
3. the limit: a bare transactional copy loop (`python -m bench.ingest copy`, below) copies the source records to a
   topic of its own, same bytes, keyed like the stage keys its events, with the service's batch size, commit
   interval and client settings: what the broker and client allow without mapping;
4. one `sendtrack ingest` process (exactly-once, default settings) maps the same records into mta.events.
Steps 3 and 4 are timed alike: from the moment the process owns every source partition (the copy says so; the
service is ready: /readyz 200 and every partition assigned) to the moment a read_committed reader has seen every
expected record on the output topic. Then the mta.events records must decode to exactly the rendered events
(delivery_id, message_id, type): nothing lost, nothing extra. A fast wrong answer is a failure.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench import sources
from bench.classifier import classify_rate
from bench.run import ROOT, Bench, Scenario, _get, _metric
from consumer.cli.produce import send
from consumer.codec.avro import AvroCodec
from consumer.codec.errors import InvalidEvent
from consumer.codec.schemas import MTA_EVENT
from consumer.ingest.classifier import Classifier
from consumer.ingest.formats import FORMATS, make_format
from consumer.kafka import config as kafka_config
from consumer.kafka.producer import produce_waiting
from consumer.kafka.topics import Topics
from consumer.runtime.settings import IngestSource, Settings

SERVICE = Settings(bootstrap_servers="")  # the defaults the copy loop shares with the service
STALL_S = 30.0  # no new output record for this long: the run has failed, no need to wait for the timeout


def run_group(bench: Bench, timeout_s: float) -> dict[str, Any]:
    """Every format in turn on the run's MTA events, and the bounce classifier's own headline figure."""
    cold = classify_rate(Classifier.load(), 20_000, 3, unique=True)
    formats = []
    for fmt in FORMATS:
        formats.append(run_format(bench, fmt, timeout_s))
        print(json.dumps(formats[-1]), flush=True)
    return {"classify_cold_per_s": round(cold), "formats": formats}


def run_format(bench: Bench, fmt: str, timeout_s: float) -> dict[str, Any]:
    rendered = sources.render(fmt, bench.workload.mta_events)
    mapping = map_speed(fmt, rendered)
    topics, source, copy_target = _topics(bench, fmt)
    started = time.perf_counter()
    _fill(bench.bootstrap, source, rendered.records)
    filled_s = time.perf_counter() - started
    limit = run_copy(bench, source, copy_target, rendered, timeout_s)
    ingest = run_ingest(bench, topics, fmt, source, rendered, timeout_s)
    return {
        "format": fmt,
        "records": len(rendered.records),
        "events": rendered.events,
        "record_bytes": sum(len(value) for _, value in rendered.records),
        "fill_seconds": filled_s,
        "mapping": mapping,
        "limit": limit,
        "ingest": ingest,
        "of_limit": _ratio(ingest["events_per_s"], limit["events_per_s"]),
        "correct": mapping["correct"] and limit["correct"] and ingest["correct"],
    }


# -- correctness ---------------------------------------------------------------------------------------------
def check(expected: Counter[sources.Triple], values: Iterable[bytes]) -> list[str]:
    """What is wrong with these mta.events values (Avro): events missing or extra; empty when they are right."""
    codec = AvroCodec.named(MTA_EVENT)
    got: Counter[sources.Triple] = Counter()
    undecodable = 0
    for value in values:
        try:
            event = codec.decode(value)
        except InvalidEvent:
            undecodable += 1
            continue
        got[(event["delivery_id"], event["message_id"], event["type"])] += 1
    missing, extra = expected - got, got - expected
    problems = [f"{undecodable} records do not decode as MtaEvent"] if undecodable else []
    if missing:
        problems.append(f"{missing.total()} events missing, e.g. {sorted(missing)[:3]}")
    if extra:
        problems.append(f"{extra.total()} events extra, e.g. {sorted(extra)[:3]}")
    return problems


def map_speed(fmt: str, rendered: sources.Rendered) -> dict[str, Any]:
    """The mapper alone over every record, one core; the events must be the rendered ones."""
    mapper = make_format(fmt)
    got: Counter[sources.Triple] = Counter()
    started = time.perf_counter()
    mapped = [item.event for _, value in rendered.records for item in mapper.map(value)]
    seconds = time.perf_counter() - started
    for event in mapped:
        got[(event["delivery_id"], event["message_id"], event["type"])] += 1
    return {
        "seconds": seconds,
        "records_per_s": len(rendered.records) / seconds,
        "events_per_s": len(mapped) / seconds,
        "correct": got == rendered.expected,
    }


# -- the timed runs ------------------------------------------------------------------------------------------
def run_copy(bench: Bench, source: str, target: str, rendered: sources.Rendered, timeout_s: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.ingest", "copy", "--bootstrap-servers", bench.bootstrap]
    command += ["--group-id", f"copy-{source}", "--source", source, "--target", target]
    command += ["--partitions", str(bench.partitions)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT.parent)
    reader = CommittedReader(bench.bootstrap, target, bench.partitions, keep=False)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # once every partition is the copy's
        if not line:
            raise RuntimeError(f"the copy loop ended with {process.wait()} before owning the partitions")
        started = json.loads(line)["t"]
        finished = reader.wait_for(len(rendered.records), lambda: process.poll() is None, timeout_s)
        _stop(process)
        reader.drain()
    finally:
        reader.close()
        _stop(process)
    return _timed(started, finished, len(rendered.records), rendered, reader.count == len(rendered.records))


def run_ingest(
    bench: Bench, topics: Topics, fmt: str, source: str, rendered: sources.Rendered, timeout_s: float
) -> dict[str, Any]:
    group = f"g-{topics.deliveries}"
    extra = {"delivery_stage": False, "ingest": (IngestSource(fmt, source),)}
    process, port = bench.start_service(topics, Scenario(f"ingest {fmt}"), f"{group}-0", group, **extra)
    reader = CommittedReader(bench.bootstrap, topics.mta_events, bench.partitions, keep=True)
    try:
        started = ready_at(port, f"ingest-{fmt}", bench.partitions, process)
        finished = reader.wait_for(rendered.events, lambda: process.poll() is None, timeout_s)
        busy = _busy(_get(port, "/metrics")[1], f"ingest-{fmt}")
        bench.stop_all()
        reader.drain()
    finally:
        reader.close()
        bench.stop_all()
    problems = check(rendered.expected, reader.values)
    return {
        **_timed(started, finished, len(rendered.records), rendered, not problems),
        **busy,
        "read": reader.count,
        "problems": problems,
    }


def _busy(metrics: str, stage: str) -> dict[str, float]:
    """Where the service's time went: inside process() (consume to produce: mapping, checks, Avro, produce
    calls) and inside checkpoints (flush and commit); the rest of the run it waited for records."""
    return {
        f"{name}_seconds": _metric(metrics, f'sendtrack_{metric}_seconds_sum{{stage="{stage}"}}')
        for name, metric in (("processing", "batch_processing"), ("checkpoint", "checkpoint"))
    }


def _timed(
    started: float, finished: float | None, records: int, rendered: sources.Rendered, correct: bool
) -> dict[str, Any]:
    seconds = (finished or time.time()) - started
    done = finished is not None
    return {
        "seconds": seconds,
        "records_per_s": records / seconds if done else None,
        "events_per_s": rendered.events / seconds if done else None,  # the events those records carry
        "correct": done and correct,
    }


def ready_at(port: int, stage: str, partitions: int, process: subprocess.Popen, timeout_s: float = 90.0) -> float:
    """When the instance is ready and owns every partition; polled often, since it starts on a full topic."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if _get(port, "/readyz")[0] == 200:
            now = time.time()
            if _metric(_get(port, "/metrics")[1], f'sendtrack_assigned_partitions{{stage="{stage}"}}') == partitions:
                return now
        time.sleep(0.02)
    raise TimeoutError(f"{stage} not ready (exit code {process.poll()})")


class CommittedReader:
    """Counts a topic's committed records (read_committed), keeping their values if asked."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, keep: bool) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{topic}",
                "fetch.wait.max.ms": 10,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self._keep = keep
        self.values: list[bytes] = []
        self.count = 0

    def poll(self, timeout_s: float = 0.05) -> int:
        """How many records this poll read."""
        read = [msg.value() for msg in self._consumer.consume(10_000, timeout_s) if msg.error() is None]
        self.count += len(read)
        if self._keep:
            self.values += read
        return len(read)

    def wait_for(self, expected: int, alive: Callable[[], bool], timeout_s: float) -> float | None:
        """The time the count reached `expected`; None if the writer died, stalled or ran out of time."""
        deadline, last_new = time.monotonic() + timeout_s, time.monotonic()
        while self.count < expected:
            if self.poll():
                last_new = time.monotonic()
            elif not alive() or time.monotonic() - last_new > STALL_S or time.monotonic() > deadline:
                return None
        return time.time()

    def drain(self, quiet_s: float = 1.0) -> None:
        """Read on until nothing new comes for quiet_s: whatever is extra shows."""
        last_new = time.monotonic()
        while time.monotonic() - last_new < quiet_s:
            if self.poll(0.1):
                last_new = time.monotonic()

    def close(self) -> None:
        self._consumer.close()


# -- topics and records ---------------------------------------------------------------------------------------
def _topics(bench: Bench, fmt: str) -> tuple[Topics, str, str]:
    """Fresh sendtrack topics, and beside them the source topic and the copy's target."""
    topics = bench.topics()
    prefix = topics.deliveries.removesuffix(Topics().deliveries)
    source, target = f"{prefix}source.{fmt}", f"{prefix}copy.{fmt}"
    admin = AdminClient({"bootstrap.servers": bench.bootstrap})
    for future in admin.create_topics([NewTopic(name, bench.partitions, 1) for name in (source, target)]).values():
        future.result(30)
    return topics, source, target


def _fill(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "enable.idempotence": True,
        }
    )
    send(producer, topic, records)
    if producer.flush(120):
        raise RuntimeError(f"could not fill {topic}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _ratio(value: float | None, limit: float | None) -> float | None:
    return value / limit if value and limit else None


# -- report ---------------------------------------------------------------------------------------------------
def markdown_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Ingest, one `sendtrack ingest` process per format (exactly-once) on the same MTA events rendered as the "
        "vendor's records; the limit is a bare transactional copy of the same records (events/s: the events "
        "those records carry).",
        "",
        "| format | source records | events | mapping alone, events/s | limit, records/s | limit, events/s "
        "| sendtrack ingest, events/s | records/s | seconds | processing / checkpoints, s | of the limit | correct |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["formats"]:
        limit, ingest = run["limit"], run["ingest"]
        lines.append(
            f"| {run['format']} | {run['records']:,} | {run['events']:,} | {run['mapping']['events_per_s']:,.0f} "
            f"| {_num(limit['records_per_s'])} | {_num(limit['events_per_s'])} | {_num(ingest['events_per_s'])} "
            f"| {_num(ingest['records_per_s'])} | {ingest['seconds']:.2f} "
            f"| {ingest.get('processing_seconds', 0):.2f} / {ingest.get('checkpoint_seconds', 0):.2f} "
            f"| {'-' if run['of_limit'] is None else format(run['of_limit'], '.2f')} "
            f"| {'yes' if run['correct'] else 'NO'} |"
        )
    lines += [
        "",
        f"The bounce classifier alone (bench/classifier.py, every text new): "
        f"{result['classify_cold_per_s']:,} classifications/s.",
    ]
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


# -- the limit's copy loop, a process of its own like the service ---------------------------------------------
def copy_main(argv: list[str] | None = None) -> None:
    """Consume a batch, produce the same bytes and keys, commit offsets and outputs in one transaction per
    commit interval: the service's loop without the mapping. Prints one JSON line once it owns every partition."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest copy")
    for name in ("--bootstrap-servers", "--group-id", "--source", "--target"):
        parser.add_argument(name, required=True)
    parser.add_argument("--partitions", type=int, required=True)
    args = parser.parse_args(argv)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    base = kafka_config.base_config(args.bootstrap_servers, {})
    consumer = Consumer(kafka_config.consumer_config(base, args.group_id, 6_000))
    producer = Producer(kafka_config.producer_config(base, f"{args.group_id}-0", SERVICE.partitioner))
    producer.init_transactions(30)
    owned: set[int] = set()

    def on_assign(_: Consumer, partitions: list[TopicPartition]) -> None:
        owned.update(tp.partition for tp in partitions)
        if len(owned) == args.partitions:
            print(json.dumps({"event": "assigned", "t": time.time()}), flush=True)

    consumer.subscribe([args.source], on_assign=on_assign)
    _copy(consumer, producer, args.source, args.target, stopping)
    consumer.close()


def _copy(consumer: Consumer, producer: Producer, source: str, target: str, stopping: list[int]) -> None:
    offsets: dict[int, int] = {}
    last, in_transaction = time.monotonic(), False
    while not stopping:
        for msg in consumer.consume(SERVICE.batch_size, 0.1):
            if msg.error() is None:
                if not in_transaction:
                    producer.begin_transaction()
                    in_transaction = True
                produce_waiting(producer, target, msg.value(), msg.key())
                offsets[msg.partition()] = msg.offset() + 1
        if offsets and time.monotonic() - last >= SERVICE.commit_interval_s:
            last = time.monotonic()
            producer.flush(30)
            tps = [TopicPartition(source, p, o) for p, o in offsets.items()]
            producer.send_offsets_to_transaction(tps, consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
            in_transaction = False
            offsets.clear()
        producer.poll(0)


if __name__ == "__main__":
    if sys.argv[1:2] != ["copy"]:
        sys.exit("usage: python -m bench.ingest copy --bootstrap-servers ... (run the scenarios with bench.run)")
    copy_main(sys.argv[2:])
