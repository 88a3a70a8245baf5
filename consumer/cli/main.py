"""Entry point of the `sendtrack` console script."""

from __future__ import annotations

import argparse
import signal
import sys

from consumer.cli import broker, compute_stats, demo, kpis, produce, quarantine, run, tail


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="sendtrack", description="Exact email delivery KPIs from Kafka event streams")
    commands = root.add_subparsers(dest="command", required=True)
    for name, module, add_flags, help_text in (
        ("run", run, run.add_run_flags, "run the service"),
        ("ingest", run, run.add_ingest_flags, "turn an MTA's own records into mta.events (an ingest stage)"),
        ("demo", demo, demo.add_flags, "a synthetic send through the whole pipeline, with a live KPI view"),
        ("broker", broker, broker.add_flags, "an embedded Kafka-protocol broker for development"),
        ("produce", produce, produce.add_flags, "send JSON-lines events, Avro-encoded"),
        ("kpis", kpis, kpis.add_flags, "print the latest KPI of each delivery"),
        ("compute-stats", compute_stats, compute_stats.add_flags, "recompute a delivery's KPIs"),
        ("tail", tail, tail.add_flags, "decode and print the records of any sendtrack topic"),
        ("quarantine", quarantine, quarantine.add_flags, "an address's quarantine: show, release, forget"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_flags(sub)
        sub.set_defaults(handler=module.command)
    return root


def main(argv: list[str] | None = None) -> int:
    # A shell starts background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN: Ctrl-C (or a
    # supervisor's SIGINT) would do nothing. Every command ends on it instead.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
