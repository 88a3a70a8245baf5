"""`sendtrack compute-stats`: ask the instance that owns a delivery to recompute its KPIs."""

from __future__ import annotations

import argparse
import json
import sys

from confluent_kafka import Producer

from consumer.cli.options import add, add_bootstrap, kafka_base
from consumer.kafka.topics import Topics
from consumer.service.app import COMPUTE_STATS


def add_flags(parser: argparse.ArgumentParser) -> None:
    add_bootstrap(parser)
    add(parser, "--topic", default=Topics.control, help="the control topic")
    parser.add_argument("delivery_id")


def command(args: argparse.Namespace) -> int:
    producer = Producer({**kafka_base(args), "enable.idempotence": True})
    command = {"command": COMPUTE_STATS, "delivery_id": args.delivery_id}
    # Keyed by delivery_id: it lands on the partition, hence the instance, that owns the delivery.
    producer.produce(args.topic, json.dumps(command).encode(), args.delivery_id.encode())
    if producer.flush(30):
        print("the command was not acknowledged", file=sys.stderr)
        return 1
    print(f"compute-stats requested for {args.delivery_id}", file=sys.stderr)
    return 0
