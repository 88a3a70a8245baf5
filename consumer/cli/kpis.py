"""`sendtrack kpis`: the latest KPI of each delivery, read (committed only) from the KPI topic."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumer.cli.options import NOT_ACCEPTED, add, add_bootstrap, aligned, connect, kafka_failure, tool
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_KPI
from consumer.kafka.access import reader_denial
from consumer.kafka.config import reader_config
from consumer.kafka.topics import Topics

READER_GROUP = "sendtrack-kpis-reader"  # never joined: assigned partitions, no commits


def add_flags(parser: argparse.ArgumentParser) -> None:
    add_bootstrap(parser)
    add(parser, "--topic", default=Topics.kpis, help="the KPI topic")
    add(parser, "--delivery", default=None, help="only this delivery")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def read_latest(base: dict[str, Any], topic: str, timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
    """Read the topic to its end; per delivery the highest version wins, and at equal versions the later
    record (on a broker that shows a crashed instance's unfinished transaction, its snapshot comes first)."""
    consumer = Consumer(reader_config(base, READER_GROUP))
    codec = AvroCodec.named(DELIVERY_KPI)
    latest: dict[str, dict[str, Any]] = {}
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assigned = [TopicPartition(topic, p, 0) for p in partitions]
        consumer.assign(assigned)
        remaining = set(partitions)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} was not read to its end within {timeout_s} s")
            for msg in consumer.consume(1000, 0.1):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(msg.partition())
                        continue
                    raise reader_denial(error, topic, READER_GROUP) or RuntimeError(f"reading {topic}: {error}")
                kpi = codec.decode(msg.value())
                current = latest.get(kpi["delivery_id"])
                if current is None or kpi["version"] >= current["version"]:
                    latest[kpi["delivery_id"]] = kpi
    finally:
        consumer.close()
    return latest


COLUMNS = (
    ("delivery", "delivery_id", "{}"),
    ("state", "state", "{}"),
    ("efs", "efs", "{}"),
    ("to deliver", "to_deliver", "{}"),
    ("processed", "processed", "{}"),
    ("sent", "sent", "{}"),
    ("pending", "pending", "{}"),
    ("delivered %", "delivered_pct", "{:.2f}"),
    ("bounces+errors %", "bounces_errors_pct", "{:.2f}"),
    ("open rate %", "open_rate_pct", "{:.2f}"),
    ("CTR %", "click_through_rate_pct", "{:.2f}"),
    ("final", "final", "{}"),
    ("v", "version", "{}"),
)


def table(kpis: list[dict[str, Any]]) -> str:
    rows = [[title for title, _, _ in COLUMNS]]
    rows += [[fmt.format(kpi[field]) if kpi[field] is not None else "-" for _, field, fmt in COLUMNS] for kpi in kpis]
    return aligned(rows)


@tool("kpis")
def command(args: argparse.Namespace) -> int:
    config = connect(args, args.topic)
    try:
        latest = read_latest(config, args.topic)
    except (KafkaException, RuntimeError, TimeoutError) as exc:
        raise kafka_failure(config, f"reading {args.topic}", exc) from None
    kpis = [latest[d] for d in sorted(latest) if args.delivery in (None, d)]
    if args.delivery and not kpis:
        print(f"no KPI for delivery {args.delivery!r}", file=sys.stderr)
        return NOT_ACCEPTED
    if args.json:
        for kpi in kpis:
            print(json.dumps(kpi))
    else:
        print(table(kpis))
    return 0
