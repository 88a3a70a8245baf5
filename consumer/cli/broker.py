"""`sendtrack broker`: an embedded Kafka-protocol broker (Tansu, memory only) for development."""

from __future__ import annotations

import argparse
import signal
import threading

from consumer.cli.options import add
from consumer.kafka.embedded import EmbeddedBroker


def add_flags(parser: argparse.ArgumentParser) -> None:
    add(parser, "--port", type=int, default=9092, help="0 picks a free port")


def command(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedBroker(args.port) as broker:
        print(broker.bootstrap_servers, flush=True)
        while not stop.wait(1.0):
            if not broker.running:
                print("the broker exited", flush=True)
                return 1
    return 0
