"""`sendtrack run`: the service (the delivery stage, and ingest stages if configured); `sendtrack ingest`: an
ingest stage on its own."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from confluent_kafka import KafkaException

from consumer.cli import deployment_view
from consumer.cli.options import add, add_bootstrap, add_partitioner
from consumer.delivery.stage import DeliveryStage
from consumer.ingest.formats import FORMATS
from consumer.ingest.stage import ingest_stages
from consumer.kafka.access import Refused
from consumer.kafka.config import security_from_env, security_settings
from consumer.kafka.topics import Topics
from consumer.ops import logging as logs
from consumer.ops.metrics import Metrics
from consumer.quarantine.stage import QuarantineStage
from consumer.runtime.app import Service
from consumer.runtime.errors import CANNOT_START, INTERNAL_ERROR, KAFKA_FATAL, ServiceError
from consumer.runtime.runner import Clock
from consumer.runtime.settings import Flag, IngestSource, Settings, default_of, flagged
from consumer.runtime.stage import Stage
from consumer.runtime.workers import Supervisor, watch_parent
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
    for setting, declared in flagged():  # each as Settings declares it
        add_flag(parser, declared, default_of(setting))
    parser.add_argument(
        "--kafka",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka security setting (security.protocol, sasl.*, ssl.*); also SENDTRACK_KAFKA_<KEY>",
    )
    add(parser, "--log-format", choices=("json", "console"), default="json")
    for topic in fields(Topics):
        add(parser, _topic_flag(topic.name), default=topic.default, help="topic name")
    add_partitioner(parser)  # ingest's mta.events, the view's confirmations and commands


def add_flag(parser: argparse.ArgumentParser, declared: Flag, default: Any) -> None:
    """A declared setting's flag; its default as text, which argparse parses like a given value."""
    if declared.switch:
        add(parser, declared.name, action="store_true", help=declared.help)
        return
    text = None if default is None else declared.text(default)
    add(parser, declared.name, type=declared.parse, default=text, choices=declared.choices, help=declared.help)


def _topic_flag(name: str) -> str:
    return f"--topic-{name.replace('_', '-')}"


def settings_from(args: argparse.Namespace) -> Settings:
    security = security_from_env(os.environ)
    security |= security_settings(dict(pair.split("=", 1) for pair in args.kafka))
    declared = {setting.name: getattr(args, _dest(flag)) for setting, flag in flagged()}
    return Settings(
        bootstrap_servers=args.bootstrap_servers,
        security=security,
        topics=Topics(**{topic.name: getattr(args, f"topic_{topic.name}") for topic in fields(Topics)}),
        delivery_stage=args.command != "ingest",
        ingest=_ingest_sources(args),
        partitioner=args.partitioner,
        **declared,
    )


def _dest(declared: Flag) -> str:
    return declared.name.lstrip("-").replace("-", "_")


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
    line = [sys.executable, "-m", "consumer.cli.main", "run", "--bootstrap-servers", settings.bootstrap_servers]
    for setting, declared in flagged():
        value = getattr(settings, setting.name)
        if declared.switch:
            line += [declared.name] * value
        elif value is not None or default_of(setting) is not None:  # None may have a text (--http-port -1)
            line += [declared.name, declared.text(value)]
    for topic in fields(Topics):
        line += [_topic_flag(topic.name), getattr(settings.topics, topic.name)]
    for name, value in settings.security.items():
        line += ["--kafka", f"{name}={value}"]
    line += ["--partitioner", settings.partitioner]
    if not settings.delivery_stage:
        (source,) = settings.ingest  # `sendtrack ingest` runs one stage
        line[line.index("run")] = "ingest"
        return [*line, "--format", source.format, "--source-topic", source.topic]
    if settings.ingest:
        line += ["--ingest", ",".join(f"{source.format}:{source.topic}" for source in settings.ingest)]
    return line


def build_service(settings: Settings, clock: Clock = time.time) -> Service:
    """The instance these settings describe: the delivery stage (unless off), the quarantine stage (--quarantine)
    and the configured ingest stages."""
    metrics = Metrics()
    log = logs.get("sendtrack.service")
    delivery = DeliveryStage(settings, metrics, log) if settings.delivery_stage else None
    stages: list[Stage] = [delivery] if delivery else []
    if delivery and settings.quarantine:  # beside the delivery stage, whose address signals it reads
        stages.append(QuarantineStage(settings, metrics, log))
    stages += ingest_stages(settings, metrics)
    return Service(settings, clock, metrics, stages=stages, kpi_lookup=delivery.kpi if delivery else None)


def supervise(settings: Settings, log: Any) -> int:
    """--workers N: the parent of N workers (runtime/workers.py). The Deployment view is not served through it (its
    owner routing reaches an instance at one advertised URL; a worker's loopback port is no such URL), so a
    --web-config, which only configures the view, is refused rather than silently ignored."""
    if settings.web_config is not None:
        raise ValueError("--web-config is not supported with --workers above 1 yet: run instances one per process")
    return Supervisor(settings, argv, log).run()


def command(args: argparse.Namespace) -> int:
    """Run the service; every way it can end is one log line and an exit code (runtime/errors.py)."""
    logs.configure(json=args.log_format == "json")
    log = logs.get("sendtrack")
    stop_view: Callable[[], None] | None = None
    try:
        settings = settings_from(args)
        if settings.worker_of is not None:  # its lines go to the parent's stream, among its siblings'
            logs.configure(json=args.log_format == "json", fields={"instance_id": settings.instance_id})
        if settings.workers > 1:
            return supervise(settings, log)
        service = build_service(settings)
        service.take_signals()  # before the view and the parent watch start threads of their own
        if settings.worker_of is not None:
            watch_parent(settings.worker_of, service.stop, log)
        elif settings.http_port is not None and settings.delivery_stage:
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
