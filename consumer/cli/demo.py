"""`sendtrack demo`: broker, topics, service and a synthetic send, with a live view of the KPIs."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.padding import Padding
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from consumer.cli import deployment_view, run
from consumer.cli.produce import send
from consumer.cli.workload import WorkloadSpec, generate
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT
from consumer.delivery.stage import find_delivery_stage
from consumer.kafka.config import base_config
from consumer.ops import logging as logs
from consumer.runtime.app import Service

BAR = 24


def add_flags(parser: argparse.ArgumentParser) -> None:
    run.add_run_flags(parser, bootstrap_required=False)
    parser.add_argument("--deliveries", type=int, default=6)
    parser.add_argument("--messages", type=int, default=20_000, help="per delivery")
    parser.add_argument("--rate", type=int, default=20_000, help="events per second fed to Kafka")
    parser.add_argument(
        "--addresses", type=int, default=0, help="recipient addresses from a pool of this many (for --quarantine)"
    )
    parser.add_argument("--once", action="store_true", help="exit when every KPI is final-correct (for scripts)")
    parser.set_defaults(log_format="console", session_timeout_ms=6_000, store="memory")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def command(args: argparse.Namespace) -> int:
    logs.configure(json=False, level="WARNING")
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or a supervisor: both end the demo cleanly
        signal.signal(sig, _interrupt)
    with contextlib.ExitStack() as stack:
        if not args.bootstrap_servers:
            from consumer.kafka.brokers.tansu import TansuBroker

            args.bootstrap_servers = stack.enter_context(TansuBroker()).bootstrap_servers
            print(f"embedded broker on {args.bootstrap_servers}")
        args.create_topics = True
        settings = run.settings_from(args)
        if args.store == "rocksdb":
            settings = dataclasses.replace(settings, state_dir=Path(stack.enter_context(tempfile.TemporaryDirectory())))
        service = run.build_service(settings)  # --ingest works here too
        if settings.http_port is not None:
            stack.callback(deployment_view.attach(service))  # the web view, stopped on the way out
        worker = threading.Thread(target=service.run, name="service", daemon=True)
        worker.start()
        try:
            return _feed_and_watch(args, service)
        except KeyboardInterrupt:
            return 0
        finally:
            service.stop()
            worker.join(settings.grace_period_s)


def _feed_and_watch(args: argparse.Namespace, service: Service) -> int:
    deliveries = find_delivery_stage(service.stages)
    assert deliveries is not None  # the demo always runs the delivery stage
    workload = generate(
        WorkloadSpec.ending_now(deliveries=args.deliveries, messages=args.messages, ended=1, addresses=args.addresses)
    )
    while not service.readiness()[0]:
        time.sleep(0.2)
    if service.http_port:
        print(f"metrics on http://127.0.0.1:{service.http_port}/metrics")
        # -- web view address: the instance serves the Deployment web view at / on its HTTP port ----------------
        print(f"web view: http://127.0.0.1:{service.http_port}/")
    producer = Producer({**base_config(args.bootstrap_servers, {}), "linger.ms": 20})
    codec = AvroCodec.named(DELIVERY_EVENT)
    send(producer, "deliveries", ((e["delivery_id"].encode(), codec.encode(e)) for e in workload.delivery_events))
    feeder = threading.Thread(target=_feed, args=(producer, workload.mta_events, args.rate), daemon=True)
    feeder.start()
    exact: bool | None = None  # decided once, when the KPIs have caught up with the whole feed
    kpis: dict[str, dict[str, Any]] = {}
    changed = time.monotonic()  # when the published KPIs last changed
    # Not a terminal (a script, a pipe): Live draws nothing until it stops, then the last view once.
    with Live(render(kpis, workload.expected), refresh_per_second=4) as live:
        while True:
            latest = deliveries.published_kpis()
            if latest != kpis:
                kpis, changed = latest, time.monotonic()
            # Final statuses come before the last opens and clicks: wait until two checkpoints pass without a
            # change, so that the last events fed are in the KPIs too.
            settled = time.monotonic() - changed > 2 * service.settings.commit_interval_s
            if exact is None and settled and not feeder.is_alive() and _caught_up(kpis, workload.expected):
                exact = _exact(kpis, workload)
            live.update(render(kpis, workload.expected, exact))
            if exact is not None and args.once:
                return 0 if exact else 1
            time.sleep(0.5)


def _feed(producer: Producer, events: list[dict[str, Any]], rate: int) -> None:
    codec = AvroCodec.named(MTA_EVENT)
    started = time.monotonic()
    for i in range(0, len(events), 1_000):
        chunk = events[i : i + 1_000]
        send(producer, "mta.events", ((e["delivery_id"].encode(), codec.encode(e)) for e in chunk))
        ahead = (i + len(chunk)) / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    producer.flush(30)


def _caught_up(kpis: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]) -> bool:
    return all(
        kpis.get(d, {}).get("processed") == e["processed"] and kpis[d]["sent"] == e["sent"] for d, e in expected.items()
    )


def _exact(kpis: dict[str, dict[str, Any]], workload: Any) -> bool:
    return all(all(kpis[d].get(k) == v for k, v in e.items()) for d, e in workload.expected.items() if d in kpis)


def _delivery(delivery_id: str, kpi: dict[str, Any] | None) -> RenderableType:
    # Text, not markup: an id or a reason may contain [brackets]
    if kpi is None:
        return Text(f"{delivery_id}  waiting for events\n", style="dim")
    header = Text(f"{delivery_id}  {kpi['state']:<10} EFS {'on ' if kpi['efs'] else 'off'}  v{kpi['version']}")
    header.append("  final" if kpi["final"] else "")
    header.stylize("bold", 0, len(delivery_id))
    reasons = ", ".join(f"{reason} {count}" for reason, count in kpi["failures_by_reason"].items())
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=10)
    grid.add_column(width=BAR)
    grid.add_column(justify="right", width=7)
    grid.add_column(ratio=1)  # the details wrap, the gauges stay aligned
    for label, pct, detail in (
        ("progress", kpi["progress_pct"] or 0.0, f"({kpi['processed']}/{kpi['to_deliver']})"),
        ("delivered", kpi["delivered_pct"], f"sent {kpi['sent']}  pending {kpi['pending']}"),
        ("bounces", kpi["bounces_errors_pct"], f"failed {kpi['failed']}  {reasons}"),
        (
            "opens",
            kpi["open_rate_pct"],
            f"clicks {kpi['click_through_rate_pct']:.2f}%  complaints {kpi['complaints']}",
        ),
    ):
        bar = ProgressBar(total=100.0, completed=min(pct, 100.0), width=BAR)
        grid.add_row(Text(label), bar, Text(f"{pct:.2f}%"), Text(detail))
    return Group(header, Padding(grid, (0, 0, 1, 2)))


def render(
    kpis: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]], exact: bool | None = None
) -> RenderableType:
    """Each delivery's KPIs as gauges; once the feed is done, whether they match the generator's ground truth."""
    verdict = {
        None: Text(""),
        True: Text("all events processed; the KPIs match the generator's ground truth.", style="bold green"),
        False: Text("processed, but the KPIs differ from the ground truth!", style="bold red"),
    }[exact]
    deliveries = [_delivery(delivery_id, kpis.get(delivery_id)) for delivery_id in sorted(expected)]
    return Panel(Group(*deliveries, verdict), title="sendtrack demo: Deployment KPIs (Ctrl-C to stop)")
