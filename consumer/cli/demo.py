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

from consumer.cli import run
from consumer.cli.produce import send
from consumer.cli.workload import WorkloadSpec, generate
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT
from consumer.kafka.config import base_config
from consumer.ops import logging as logs
from consumer.service.app import Service

BAR = 24


def add_flags(parser: argparse.ArgumentParser) -> None:
    run.add_run_flags(parser, bootstrap_required=False)
    parser.add_argument("--deliveries", type=int, default=6)
    parser.add_argument("--messages", type=int, default=20_000, help="per delivery")
    parser.add_argument("--rate", type=int, default=20_000, help="events per second fed to Kafka")
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
            from consumer.kafka.embedded import EmbeddedBroker

            args.bootstrap_servers = stack.enter_context(EmbeddedBroker()).bootstrap_servers
            print(f"embedded broker on {args.bootstrap_servers}")
        args.create_topics = True
        settings = run.settings_from(args)
        if args.store == "rocksdb":
            settings = dataclasses.replace(settings, state_dir=Path(stack.enter_context(tempfile.TemporaryDirectory())))
        service = Service(settings)
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
    workload = generate(WorkloadSpec.ending_now(deliveries=args.deliveries, messages=args.messages, ended=1))
    while not service.readiness()[0]:
        time.sleep(0.2)
    if service.http_port:
        print(f"metrics on http://127.0.0.1:{service.http_port}/metrics")
    producer = Producer({**base_config(args.bootstrap_servers, {}), "linger.ms": 20})
    codec = AvroCodec.named(DELIVERY_EVENT)
    send(producer, "deliveries", ((e["delivery_id"].encode(), codec.encode(e)) for e in workload.delivery_events))
    feeder = threading.Thread(target=_feed, args=(producer, workload.mta_events, args.rate), daemon=True)
    feeder.start()
    while True:
        kpis = service.published_kpis()
        print("\033[2J\033[H" + render(kpis, workload.expected), flush=True)
        done = all(
            kpis.get(d, {}).get("processed") == e["processed"] and kpis[d]["sent"] == e["sent"]
            for d, e in workload.expected.items()
        )
        if done and not feeder.is_alive():
            exact = _exact(kpis, workload)
            print(
                "all events processed; the KPIs match the generator's ground truth."
                if exact
                else "processed, but the KPIs differ from the ground truth!"
            )
            if args.once:
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


def _exact(kpis: dict[str, dict[str, Any]], workload: Any) -> bool:
    return all(all(kpis[d].get(k) == v for k, v in e.items()) for d, e in workload.expected.items() if d in kpis)


def _bar(pct: float) -> str:
    filled = round(BAR * min(pct, 100.0) / 100)
    return "█" * filled + "·" * (BAR - filled)


def render(kpis: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]) -> str:
    lines = ["sendtrack demo: Deployment KPIs (Ctrl-C to stop)", ""]
    for delivery_id in sorted(expected):
        kpi = kpis.get(delivery_id)
        if kpi is None:
            lines.append(f"{delivery_id}  waiting for events")
            continue
        progress = kpi["progress_pct"] or 0.0
        lines += [
            f"{delivery_id}  {kpi['state']:<10} EFS {'on ' if kpi['efs'] else 'off'}  v{kpi['version']}"
            + ("  final" if kpi["final"] else ""),
            f"  progress   {_bar(progress)} {progress:6.2f}%  ({kpi['processed']}/{kpi['to_deliver']})",
            f"  delivered  {_bar(kpi['delivered_pct'])} {kpi['delivered_pct']:6.2f}%  sent {kpi['sent']}"
            f"  pending {kpi['pending']}",
            f"  bounces    {_bar(kpi['bounces_errors_pct'])} {kpi['bounces_errors_pct']:6.2f}%  failed {kpi['failed']}"
            f"  {kpi['failures_by_reason']}",
            f"  opens      {_bar(kpi['open_rate_pct'])} {kpi['open_rate_pct']:6.2f}%  clicks"
            f" {kpi['click_through_rate_pct']:.2f}%  complaints {kpi['complaints']}",
            "",
        ]
    return "\n".join(lines)
