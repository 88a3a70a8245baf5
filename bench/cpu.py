"""CPU per event of the delivery stage, in process: no broker, so a shared machine disturbs it far less than
`bench.run`'s events/s.

The bench's workload (`consumer.cli.workload.generate`) is encoded as the bench produces it (key = delivery id),
spread over the partitions by the key's CRC-32, and fed to a real Service's runner in polls of its batch size
(deliveries topic first, then MTA events, as the bench's topics are filled), with a checkpoint (KPIs, changelog,
commit, store write) every `--checkpoint-every` events. The Kafka clients are null stand-ins that drop what is
produced, so what is measured is this process's Python work (decode, checks, apply, sending logs and KPIs encoded,
changelog staged, the store written), not librdkafka's. The input is built before the clock starts and frozen out
of the garbage collector's passes (a service holds one poll of it at a time). Each round is a fresh service and
store; the figure is `time.process_time()` over the round divided by its events, and the rounds' median is printed.

    python -m bench.cpu [--deliveries 16] [--messages 3100] [--rounds 3] [--store rocksdb|memory] [--profile FILE]

`--profile FILE` writes a cProfile of one extra round (slower while profiled; read it with pstats).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from consumer.cli.run import build_service
from consumer.cli.workload import WorkloadSpec, generate, matches
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, DELIVERY_KPI, MTA_EVENT
from consumer.kafka.topics import Topics
from consumer.runtime.settings import Settings
from consumer.runtime.stores import StoreFactory
from tests.runtime.fakes import FakeMessage


class _NullProducer:
    """A transactional output producer that drops what it is given but the last record of each key on one topic
    (the KPIs, to check the round's result); delivery reports come at the flush."""

    transactional = True

    def __init__(self, kept_topic: str) -> None:
        self.records = 0
        self.kept: dict[bytes, bytes] = {}
        self._kept_topic = kept_topic
        self._reports: list[tuple[Any, FakeMessage]] = []
        self._next = itertools.count()

    def produce(self, topic, value, key, partition, headers=None, on_delivery=None) -> None:
        self.records += 1
        if topic == self._kept_topic:
            self.kept[key] = value
        if on_delivery is not None:
            self._reports.append((on_delivery, FakeMessage(topic, partition, next(self._next), key, value)))

    def produce_many(self, topic, records, partition, headers=None) -> None:
        self.records += sum(1 for _ in records)

    def flush(self, _timeout: float) -> None:
        for report, message in self._reports:
            report(None, message)
        self._reports.clear()

    def commit_transaction(self, _offsets, _metadata, _timeout) -> None:
        return None

    def abort_transaction(self, _timeout: float) -> None:
        self._reports.clear()

    def poll(self) -> None:
        return None


class _NullConsumer:
    def consumer_group_metadata(self) -> None:
        return None


def polls(spec: WorkloadSpec, topics: Topics, partitions: int, batch: int) -> list[list[FakeMessage]]:
    """The workload as the bench's topics hold it, cut into polls."""
    workload = generate(spec)
    offsets: dict[tuple[str, int], Iterator[int]] = {}
    messages = []
    for topic, schema, events in (
        (topics.deliveries, DELIVERY_EVENT, workload.delivery_events),
        (topics.mta_events, MTA_EVENT, workload.mta_events),
    ):
        codec = AvroCodec.named(schema)
        for event in events:
            key = event["delivery_id"].encode()
            partition = zlib.crc32(key) % partitions
            offset = next(offsets.setdefault((topic, partition), itertools.count()))
            messages.append(FakeMessage(topic, partition, offset, key, codec.encode(event)))
    return [messages[i : i + batch] for i in range(0, len(messages), batch)]


def run_round(spec: WorkloadSpec, args: argparse.Namespace, profiler: cProfile.Profile | None = None) -> float:
    """CPU µs per event of one fresh service over the whole workload; raises if its final KPIs are wrong."""
    topics = Topics()
    now_s = (spec.start_ms + spec.span_ms() + 120_000) / 1000  # as the bench's send: ended two minutes ago
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as state_dir:
        settings = Settings(bootstrap_servers="unused:9092", state_dir=Path(state_dir), topics=topics, store=args.store)
        service = build_service(settings, clock=lambda: now_s)
        runner, stage = service.runners[0], service.stages[0]
        producer = _NullProducer(topics.kpis)
        runner.attach(producer, _NullConsumer())  # type: ignore[arg-type]
        stores = StoreFactory(settings.store, settings.state_dir, settings.group_id)
        for p in range(args.partitions):
            runner.works[p] = stage.runtimes[p] = stage.runtime(p, stores.open(p))
        batches = polls(spec, topics, args.partitions, settings.batch_size)
        events = sum(len(b) for b in batches)
        since_checkpoint = 0
        # The round's input is held whole here, where a service holds one poll: frozen, the collector's full passes
        # do not walk it (it made up a tenth of the figure, and with it every change's allocations).
        gc.collect()
        gc.freeze()
        started = time.process_time()
        if profiler:
            profiler.enable()
        for messages in batches:
            runner.process(messages)  # type: ignore[arg-type]
            since_checkpoint += len(messages)
            if since_checkpoint >= args.checkpoint_every:
                runner.checkpoint()
                since_checkpoint = 0
        runner.checkpoint()
        if profiler:
            profiler.disable()
        spent = time.process_time() - started
        gc.unfreeze()
        for work in runner.works.values():
            stores.release(work.store)
    _check(producer.kept, spec)
    return spent / events * 1e6


def _check(kpis: dict[bytes, bytes], spec: WorkloadSpec) -> None:
    """The last KPI of each delivery equals the workload's ground truth: a fast wrong stage measures nothing."""
    codec, expected = AvroCodec.named(DELIVERY_KPI), generate(spec).expected
    actual = {key.decode(): codec.decode(value) for key, value in kpis.items()}
    wrong = {d: matches(actual.get(d, {}), fields) for d, fields in expected.items()}
    wrong = {d: fields for d, fields in wrong.items() if fields}
    if wrong:
        raise SystemExit(f"wrong KPIs: {wrong}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=16)
    parser.add_argument("--messages", type=int, default=3_100, help="per delivery")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--checkpoint-every", type=int, default=30_000, help="events between checkpoints")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", choices=("rocksdb", "memory"), default="rocksdb")
    parser.add_argument("--profile", type=Path, help="write a cProfile of one extra round here")
    args = parser.parse_args(argv)
    spec = WorkloadSpec(deliveries=args.deliveries, messages=args.messages, seed=1)
    rounds = [run_round(spec, args) for _ in range(args.rounds)]
    events = generate(spec).size
    shown = ", ".join(f"{r:.2f}" for r in rounds)
    print(
        f"delivery stage, {events:,} events, {args.store}: {statistics.median(rounds):.2f} us CPU per event ({shown})"
    )
    if args.profile:
        profiler = cProfile.Profile()
        run_round(spec, args, profiler)
        profiler.dump_stats(args.profile)
        print(f"profile: {args.profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
