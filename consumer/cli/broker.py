"""`sendtrack broker`: an embedded Kafka-protocol broker (Tansu, memory only) for development."""

from __future__ import annotations

import argparse
import signal
import threading

from consumer.cli.options import ToolError, add, tool
from consumer.kafka.embedded import EmbeddedBroker, EmbeddedBrokerError


def add_flags(parser: argparse.ArgumentParser) -> None:
    add(parser, "--port", type=int, default=9092, help="0 picks a free port")


@tool("broker")
def command(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    broker = EmbeddedBroker(args.port)
    try:
        broker.start()  # a busy port is found before the broker is spawned
    except EmbeddedBrokerError as exc:
        raise ToolError(str(exc)) from None
    with broker:
        print(broker.bootstrap_servers, flush=True)
        while not stop.wait(1.0):
            if not broker.running:
                print("the broker exited", flush=True)
                return 1
    return 0
