"""`sendtrack broker`: a development broker on loopback. Tansu (memory only) by default, because it installs with
pip alone; `--kind apache-kafka` runs Apache Kafka from Maven Central (needs a JDK and Maven)."""

from __future__ import annotations

import argparse
import signal
import threading

from consumer.cli.options import ToolError, add, tool
from consumer.kafka.brokers import KINDS, DevBrokerError, dev_broker


def add_flags(parser: argparse.ArgumentParser) -> None:
    add(parser, "--port", type=int, default=9092, help="0 picks a free port")
    add(parser, "--kind", choices=sorted(KINDS), default="tansu", help="which broker")


@tool("broker")
def command(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    broker = dev_broker(args.kind, args.port)
    try:
        broker.start()  # a busy port is found before the broker is spawned
    except DevBrokerError as exc:
        raise ToolError(str(exc)) from None
    with broker:
        print(broker.bootstrap_servers, flush=True)
        while not stop.wait(1.0):
            if not broker.running:
                print("the broker exited", flush=True)
                return 1
    return 0
