"""`sendtrack compute-stats`: ask the instance that owns a delivery to recompute its KPIs."""

from __future__ import annotations

import argparse
import json
import sys

from consumer.cli.options import (
    ACK_TIMEOUT_S,
    NOT_ACCEPTED,
    add,
    add_bootstrap,
    add_partitioner,
    connect,
    producer,
    tool,
)
from consumer.kafka.topics import Topics
from consumer.runtime.app import COMPUTE_STATS


def add_flags(parser: argparse.ArgumentParser) -> None:
    add_bootstrap(parser)
    add(parser, "--topic", default=Topics.control, help="the control topic")
    add_partitioner(parser)
    parser.add_argument("delivery_id")


@tool("compute-stats")
def command(args: argparse.Namespace) -> int:
    sender = producer(connect(args, args.topic, "WRITE"), {"partitioner": args.partitioner})
    command = {"command": COMPUTE_STATS, "delivery_id": args.delivery_id}
    # Keyed by delivery_id: it lands on the partition, hence the instance, that owns the delivery.
    sender.produce(args.topic, json.dumps(command).encode(), args.delivery_id.encode())
    if sender.unacknowledged(ACK_TIMEOUT_S):
        print(f"the command was not acknowledged by Kafka within {ACK_TIMEOUT_S:g} s", file=sys.stderr)
        return NOT_ACCEPTED
    print(f"compute-stats requested for {args.delivery_id}", file=sys.stderr)
    return 0
