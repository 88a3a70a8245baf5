"""`sendtrack run`: the service (the delivery stage, and ingest stages if configured); `sendtrack ingest`: an
ingest stage on its own."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from confluent_kafka import KafkaException

from consumer.cli import deployment_view
from consumer.cli.options import NEVER, add, add_bootstrap, add_partitioner, duration_s
from consumer.delivery.stage import DeliveryStage
from consumer.ingest.formats import FORMATS
from consumer.ingest.stage import ingest_stages
from consumer.kafka.access import Refused
from consumer.kafka.config import security_from_env, security_settings
from consumer.kafka.topics import Topics
from consumer.ops import logging as logs
from consumer.ops.metrics import Metrics
from consumer.runtime.app import Service
from consumer.runtime.errors import CANNOT_START, INTERNAL_ERROR, KAFKA_FATAL, ServiceError
from consumer.runtime.runner import Clock
from consumer.runtime.settings import AT_LEAST_ONCE, EXACTLY_ONCE, IngestSource, Settings
from consumer.web.auth import WebConfigError


def add_run_flags(parser: argparse.ArgumentParser, bootstrap_required: bool = True) -> None:
    add_service_flags(parser, bootstrap_required)
    add(
        parser,
        "--ingest",
        default="",
        metavar="FORMAT:TOPIC[,...]",
        help=f"also run an ingest stage per source ({', '.join(FORMATS)}), each in its own consumer group",
    )


def add_ingest_flags(parser: argparse.ArgumentParser) -> None:
    add_service_flags(parser)
    add(parser, "--format", required=True, choices=FORMATS, help="the MTA's record format")
    add(parser, "--source-topic", required=True, help="the topic the MTA publishes its records to")


def add_service_flags(parser: argparse.ArgumentParser, bootstrap_required: bool = True) -> None:
    add_bootstrap(parser, required=bootstrap_required)
    add(parser, "--group-id", default="sendtrack", help="consumer group (instances of one service share it)")
    add(parser, "--instance-id", default=None, help="stable id of this instance (default: host name)")
    add(parser, "--state-dir", type=Path, default=Path("state"), help="where RocksDB state lives")
    add(parser, "--store", choices=("rocksdb", "memory"), default="rocksdb", help="state store")
    add(parser, "--http-port", type=int, default=8080, help="metrics/health/KPI HTTP port; -1 disables it")
    add(parser, "--processing-guarantee", choices=(EXACTLY_ONCE, AT_LEAST_ONCE), default=EXACTLY_ONCE)
    add(parser, "--efs-default", action="store_true", help="EFS for deliveries whose PREPARED does not say")
    add(parser, "--commit-interval", type=float, default=1.0, help="seconds between checkpoints")
    add(parser, "--http-host", default="0.0.0.0", help="address the HTTP server binds to")
    add(parser, "--grace-period", type=float, default=30.0, help="seconds allowed for a clean stop")
    add(parser, "--watchdog-timeout", type=float, default=60.0, help="seconds without progress before exit 4")
    add(parser, "--max-clock-skew", type=float, default=900.0, help="seconds an event may be dated in the future")
    add(
        parser,
        "--state-retention",
        type=duration_s,
        default="30d",
        help="how long a final delivery keeps its message-level state before it is archived (30d, 12h, never)",
    )
    add(parser, "--session-timeout-ms", type=int, default=45_000)
    add(parser, "--create-topics", action="store_true", help="create missing topics")
    add(parser, "--partitions", type=int, default=8, help="partitions of topics created by --create-topics")
    parser.add_argument(
        "--kafka",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka security setting (security.protocol, sasl.*, ssl.*); also SENDTRACK_KAFKA_<KEY>",
    )
    add(parser, "--log-format", choices=("json", "console"), default="json")
    add(parser, "--web-config", type=Path, default=None, help="users, roles and TLS of the web view (YAML)")
    add(parser, "--advertised-url", default=None, help="this instance's HTTP URL (default http://<fqdn>:<port>)")
    add(parser, "--web-peers", default="", help="comma-separated URLs of the other instances' HTTP servers")
    for topic in fields(Topics):
        add(parser, f"--topic-{topic.name.replace('_', '-')}", default=topic.default, help="topic name")
    add(parser, "--delivery-id-key", default="delivery_id", help="ingest: the key holding the delivery id")
    add(parser, "--message-id-key", default="message_id", help="ingest: the key holding the message id")
    add(parser, "--bounce-rules", default="", help="ingest: comma-separated rule files, matched before the packaged")
    add_partitioner(parser)  # ingest's mta.events, the view's confirmations and commands


def settings_from(args: argparse.Namespace) -> Settings:
    security = security_from_env(os.environ)
    security |= security_settings(dict(pair.split("=", 1) for pair in args.kafka))
    extra = {"instance_id": args.instance_id} if args.instance_id else {}
    return Settings(
        bootstrap_servers=args.bootstrap_servers,
        group_id=args.group_id,
        state_dir=args.state_dir,
        store=args.store,
        http_port=None if args.http_port < 0 else args.http_port,
        http_host=args.http_host,
        processing_guarantee=args.processing_guarantee,
        efs_default=args.efs_default,
        commit_interval_s=args.commit_interval,
        grace_period_s=args.grace_period,
        watchdog_timeout_s=args.watchdog_timeout,
        web_config=args.web_config,
        advertised_url=args.advertised_url,
        web_peers=tuple(url for url in args.web_peers.split(",") if url),
        max_clock_skew_s=args.max_clock_skew,
        state_retention_s=args.state_retention,
        session_timeout_ms=args.session_timeout_ms,
        create_topics=args.create_topics,
        partitions=args.partitions,
        security=security,
        topics=Topics(**{topic.name: getattr(args, f"topic_{topic.name}") for topic in fields(Topics)}),
        delivery_stage=args.command != "ingest",
        ingest=_ingest_sources(args),
        delivery_id_key=args.delivery_id_key,
        message_id_key=args.message_id_key,
        bounce_rules=tuple(Path(path) for path in args.bounce_rules.split(",") if path),
        partitioner=args.partitioner,
        **extra,
    )


def _ingest_sources(args: argparse.Namespace) -> tuple[IngestSource, ...]:
    if args.command == "ingest":
        return (IngestSource(args.format, args.source_topic),)
    sources = []
    for item in (part.strip() for part in args.ingest.split(",")):
        fmt, colon, topic = item.partition(":")
        if item and not (colon and fmt and topic):
            raise ValueError(f"--ingest takes FORMAT:TOPIC, not {item!r}")
        if item:
            sources.append(IngestSource(fmt, topic))
    return tuple(sources)


def argv(settings: Settings) -> list[str]:
    """The command line that starts an instance with these settings (how tests and the benchmark spawn them)."""
    line = [
        sys.executable,
        "-m",
        "consumer.cli.main",
        "run",
        "--bootstrap-servers",
        settings.bootstrap_servers,
        "--group-id",
        settings.group_id,
        "--instance-id",
        settings.instance_id,
        "--state-dir",
        str(settings.state_dir),
        "--store",
        settings.store,
        "--http-port",
        str(-1 if settings.http_port is None else settings.http_port),
        "--processing-guarantee",
        settings.processing_guarantee,
        "--commit-interval",
        str(settings.commit_interval_s),
        "--http-host",
        settings.http_host,
        "--grace-period",
        str(settings.grace_period_s),
        "--watchdog-timeout",
        str(settings.watchdog_timeout_s),
        "--max-clock-skew",
        str(settings.max_clock_skew_s),
        "--state-retention",
        NEVER if settings.state_retention_s is None else f"{settings.state_retention_s}s",
        "--session-timeout-ms",
        str(settings.session_timeout_ms),
        "--partitions",
        str(settings.partitions),
    ]
    line += ["--efs-default"] * settings.efs_default + ["--create-topics"] * settings.create_topics
    if settings.web_config:
        line += ["--web-config", str(settings.web_config)]
    if settings.advertised_url:
        line += ["--advertised-url", settings.advertised_url]
    if settings.web_peers:
        line += ["--web-peers", ",".join(settings.web_peers)]
    for topic in fields(Topics):
        line += [f"--topic-{topic.name.replace('_', '-')}", getattr(settings.topics, topic.name)]
    for name, value in settings.security.items():
        line += ["--kafka", f"{name}={value}"]
    line += ["--delivery-id-key", settings.delivery_id_key, "--message-id-key", settings.message_id_key]
    line += ["--partitioner", settings.partitioner]
    if settings.bounce_rules:
        line += ["--bounce-rules", ",".join(str(path) for path in settings.bounce_rules)]
    if not settings.delivery_stage:
        (source,) = settings.ingest  # `sendtrack ingest` runs one stage
        line[line.index("run")] = "ingest"
        return [*line, "--format", source.format, "--source-topic", source.topic]
    if settings.ingest:
        line += ["--ingest", ",".join(f"{source.format}:{source.topic}" for source in settings.ingest)]
    return line


def build_service(settings: Settings, clock: Clock = time.time) -> Service:
    """The instance these settings describe: the delivery stage (unless off) and the configured ingest stages."""
    metrics = Metrics()
    delivery = DeliveryStage(settings, metrics, logs.get("sendtrack.service")) if settings.delivery_stage else None
    stages = [*([delivery] if delivery else []), *ingest_stages(settings, metrics)]
    return Service(settings, clock, metrics, stages=stages, kpi_lookup=delivery.kpis.get if delivery else None)


def command(args: argparse.Namespace) -> int:
    """Run the service; every way it can end is one log line and an exit code (runtime/errors.py)."""
    logs.configure(json=args.log_format == "json")
    log = logs.get("sendtrack")
    stop_view: Callable[[], None] | None = None
    try:
        settings = settings_from(args)
        service = build_service(settings)
        service.take_signals()  # before the view starts threads of its own
        if settings.http_port is not None and settings.delivery_stage:
            stop_view = deployment_view.attach(service)
        return service.run()
    except (ValueError, WebConfigError) as exc:  # flags, or the web config file
        log.error("cannot_start", error=str(exc), exit_code=CANNOT_START)
        return CANNOT_START
    except ServiceError as exc:  # say what is wrong, without a traceback
        log.error(exc.event, error=str(exc), exit_code=exc.exit_code)
        return exc.exit_code
    except (KafkaException, Refused) as exc:  # TLS, credentials, a missing ACL: final
        log.error("kafka_fatal", error=str(exc), exit_code=KAFKA_FATAL)
        return KAFKA_FATAL
    except Exception:
        log.exception("crashed", exit_code=INTERNAL_ERROR)
        return INTERNAL_ERROR
    finally:
        if stop_view is not None:
            stop_view()
