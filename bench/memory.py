"""Where a long-running instance's memory goes: one instance in this process under a steady load of new sends,
with tracemalloc, RSS sampled every 10 s and the Python allocation sites that grew the most.

    python -m bench.memory --seconds 180                       # every send stays live (no retention)
    python -m bench.memory --seconds 180 --retention 20s       # sends end and are archived as they go

The load is the soak's: copies of one send under new delivery ids at --rate events/s, fed from a thread of this
process (its allocations are short-lived and show as such). tracemalloc slows Python about twofold, so the
rate here is lower than the service's; the figures are for attribution, not throughput.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from consumer.cli.run import build_service
from consumer.cli.workload import Workload, WorkloadSpec, generate
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT
from consumer.kafka.brokers import dev_broker
from consumer.kafka.producer import produce_waiting
from consumer.kafka.topics import Topics
from consumer.runtime.settings import Settings, duration_s
from consumer.state.rocksdb import RocksDBStore

SAMPLE_S = 10.0


def copies(base: Workload, suffix: str, squeeze_to_ms: int | None) -> Workload:
    """The base send under new ids; with squeeze_to_ms its event times are squeezed into that span before now,
    so that its validity end passes as it is read (the rolling soak's sends)."""
    times = [e["occurred_at"] for e in (*base.delivery_events, *base.mta_events)]
    first, last, end = min(times), max(times), int(time.time() * 1000) - 500

    def at(t: int | None) -> int | None:
        if t is None or squeeze_to_ms is None:
            return t
        return end - squeeze_to_ms + (t - first) * squeeze_to_ms // (last - first)

    def renamed(event: dict[str, Any]) -> dict[str, Any]:
        moved = {k: at(v) if k in ("occurred_at", "validity_end", "scheduled_at") else v for k, v in event.items()}
        return {**moved, "delivery_id": event["delivery_id"] + suffix, "event_id": event["event_id"] + suffix}

    return Workload([renamed(e) for e in base.delivery_events], [renamed(e) for e in base.mta_events], {})


def feed(bootstrap: str, topics: Topics, rate: float, seconds: float, rolling: bool) -> None:
    spec = WorkloadSpec.ending_now(deliveries=4, messages=1_500, ended=4 if rolling else 0, seed=43)
    base = generate(spec)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    codecs = {topics.deliveries: AvroCodec.named(DELIVERY_EVENT), topics.mta_events: AvroCodec.named(MTA_EVENT)}
    started, produced, rounds = time.monotonic(), 0, 0
    while time.monotonic() - started < seconds:
        send = copies(base, f"-r{rounds}", 2_000 if rolling else None)
        rounds += 1
        for topic, events in ((topics.deliveries, send.delivery_events), (topics.mta_events, send.mta_events)):
            for event in events:
                produce_waiting(producer, topic, codecs[topic].encode(event), event["delivery_id"].encode())
                produced += 1
                if produced % 1_000 == 0:
                    time.sleep(max(0.0, produced / rate - (time.monotonic() - started)))
                    producer.poll(0)
    producer.flush(60)


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--rate", type=float, default=5_000.0, help="events/s offered")
    parser.add_argument("--retention", type=duration_s, default=None, help="e.g. 20s; default: never archive")
    parser.add_argument("--store", choices=("rocksdb", "memory"), default="rocksdb")
    parser.add_argument("--top", type=int, default=12, help="allocation sites to list")
    args = parser.parse_args(argv)
    with dev_broker("apache-kafka") as broker, tempfile.TemporaryDirectory() as state:
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers, state_dir=Path(state), store=args.store, http_port=None,
            create_topics=True, partitions=4, session_timeout_ms=6_000, state_retention_s=args.retention,
        )  # fmt: skip
        service = build_service(settings)
        running = threading.Thread(target=service.run, name="service", daemon=True)
        running.start()
        while not service.readiness()[0]:
            time.sleep(0.2)
        tracemalloc.start(12)
        rolling = args.retention is not None
        feeder = threading.Thread(
            target=feed, args=(broker.bootstrap_servers, settings.topics, args.rate, args.seconds, rolling)
        )
        started = time.monotonic()
        feeder.start()
        first = None
        while feeder.is_alive():
            time.sleep(SAMPLE_S)
            traced, _ = tracemalloc.get_traced_memory()
            runtimes = list(service.delivery.runtimes.values()) if service.delivery else []
            live = sum(runtime.processor.live_deliveries for runtime in runtimes)
            rocks = [r.store.memory_bytes() for r in runtimes if isinstance(r.store, RocksDBStore)]
            memtables = sum(m["memtables"] for m in rocks)
            cache = max((m["block_cache"] for m in rocks), default=0)  # one cache, shared
            print(
                f"{time.monotonic() - started:6.0f} s  rss {rss_mb():7.1f} MB  python {traced / 2**20:7.1f} MB"
                f"  rocksdb memtables {memtables / 2**20:6.1f} MB, block cache {cache / 2**20:6.1f} MB"
                f"  live deliveries {live}",
                flush=True,
            )
            if first is None:
                first = tracemalloc.take_snapshot()
        feeder.join()
        time.sleep(5)  # the last checkpoints
        last = tracemalloc.take_snapshot()
        print(f"\nlargest growth since the first sample (top {args.top} sites):")
        assert first is not None
        for stat in last.compare_to(first, "lineno")[: args.top]:
            frame = stat.traceback[0]
            print(f"  {stat.size_diff / 2**20:+8.2f} MB {stat.count_diff:+9d} blocks  {frame.filename}:{frame.lineno}")
        service.stop()
        running.join(60)  # before the broker goes
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
