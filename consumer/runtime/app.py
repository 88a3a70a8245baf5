"""The service: one instance's process. It runs the stages it is given (the CLI makes them: the delivery stage,
ingest stages), each a consumer group of its own driven by a StageRunner, on one poll loop; and owns what
the process has once: signals, the watchdog, health, the HTTP server and the metrics registry.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from consumer.codec.control import COMPUTE_STATS
from consumer.kafka import access
from consumer.kafka import admin as topic_admin
from consumer.kafka import config as kafka_config
from consumer.ops import logging as logs
from consumer.ops.exchange import Handler
from consumer.ops.http import OpsServer, StatusSource
from consumer.ops.metrics import Metrics
from consumer.runtime.errors import ServiceError, StartupError
from consumer.runtime.health import Health, Watchdog
from consumer.runtime.runner import Clock, StageRunner, reason
from consumer.runtime.settings import Settings
from consumer.runtime.signals import StopSignals
from consumer.runtime.stage import Stage

__all__ = ["COMPUTE_STATS", "Service"]

_POLL_S = 0.1  # one turn of the loop waits this long at most for records, shared by the stages
_REACH_S = 10.0  # Kafka must answer the first request within this at start


class Service:
    def __init__(
        self,
        settings: Settings,
        clock: Clock = time.time,
        metrics: Metrics | None = None,
        client_id: str = "sendtrack",
        stages: Sequence[Stage] = (),
        kpi_lookup: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> None:
        """Runs `stages`; `kpi_lookup` answers the HTTP server's /deliveries/<id> (the delivery stage's KPIs)."""
        self.settings = settings
        self.client_id = client_id  # the consumers': the Deployment view encodes this instance's URL in it
        self.handler: Handler | None = None  # pages served besides /metrics, /healthz, /readyz
        self.http_tls: ssl.SSLContext | None = None
        self.after_start: list[Callable[[], Any]] = []  # companions that need Kafka, started after the checks
        self.metrics = metrics or Metrics()
        self._log = logs.get("sendtrack.service")
        self._stopping = threading.Event()
        self.health = Health()
        self._signals = StopSignals(self.stop, settings.grace_period_s, self._log)
        self._watchdog = Watchdog(settings.watchdog_timeout_s, self._log)
        self._http: OpsServer | None = None
        self._kpi_lookup = kpi_lookup or _no_kpi
        if not stages:
            raise ValueError("nothing to run: the delivery stage is off and no ingest stage is configured")
        beat = self._watchdog.beat
        self.runners = [
            StageRunner(stage, settings, self.health, beat, self.metrics, self._log, self._stopping, clock)
            for stage in stages
        ]

    # -- lifecycle ---------------------------------------------------------------------------------------
    def take_signals(self) -> None:
        """SIGTERM/SIGINT to the stop thread. Before any thread starts: those inherit the blocked signals."""
        self._signals.install()

    def run(self) -> int:
        self.take_signals()
        try:
            self._start()
        except KafkaException as exc:
            raise StartupError(f"cannot reach Kafka at {self.settings.bootstrap_servers}: {reason(exc)}") from None
        try:
            self._loop()
        except BaseException:
            for runner in self.runners:
                runner.failed = True
            raise
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        self._stopping.set()
        self.health.trouble("stopping", "stopping")

    def _start(self) -> None:
        s = self.settings
        base = kafka_config.base_config(s.bootstrap_servers, s.security)
        self._log.info(
            "starting",
            config=kafka_config.redacted(base),
            stages={runner.stage.name: runner.stage.group_id for runner in self.runners},
            store=s.store,
            guarantee=s.processing_guarantee,
            instance_id=s.instance_id,
        )
        for runner in self.runners:  # checks that need no broker come before joining the group
            runner.stage.prepare()
        self._start_http()
        self._reach(base)
        if s.create_topics:
            admin = AdminClient({**base, "error_cb": self.runners[0].on_kafka_error})
            sources = tuple(source.topic for source in s.ingest)
            created = topic_admin.ensure_topics(admin, s.topics, s.partitions, extra=sources, quarantine=s.quarantine)
            if created:
                self._log.info("topics_created", topics=created, partitions=s.partitions)
        self._check_permissions(base)
        for runner in self.runners:  # the checks that need the broker, before anything else starts
            runner.stage.start(base)
        self.health.watchdog = self._watchdog.start()
        for start in self.after_start:
            start()
        for runner in self.runners:
            runner.start(base, self.client_id)

    def _reach(self, base: dict[str, Any]) -> None:
        """Kafka answers; a TLS or credential refusal raises access.Refused at once, not after the timeout."""
        try:
            access.reach(base, _REACH_S)
        except access.Unreachable as exc:
            raise StartupError(str(exc)) from None

    def _check_permissions(self, base: dict[str, Any]) -> None:
        """Every topic permission the stages need, before they start: a missing one is Denied, naming it."""
        wanted: dict[str, set[str]] = {}
        for runner in self.runners:
            for topic, operations in runner.stage.operations.items():
                wanted.setdefault(topic, set()).update(operations)
        denied = access.missing_permission(base, {topic: sorted(ops) for topic, ops in wanted.items()}, _REACH_S)
        if denied is not None:
            raise denied

    def _loop(self) -> None:
        runners, timeout_s = self.runners, _POLL_S / len(self.runners)
        while not self._stopping.is_set():
            for runner in runners:
                runner.step(timeout_s)

    def _shutdown(self) -> None:
        failed = any(runner.failed for runner in self.runners)
        self._log.info("stopping", clean=not failed)
        self.stop()
        self._signals.start_grace_period()  # the stop itself may hang on an unreachable broker
        try:
            for runner in self.runners:
                try:
                    runner.close()
                except (KafkaException, ServiceError) as exc:  # the work in hand stays uncommitted: redone
                    self._log.warning("stop_incomplete", stage=runner.stage.name, error=str(exc))
        finally:
            self._signals.cancel()
            self._watchdog.stop()
            if self._http:
                self._http.stop()
        self._log.info("stopped")

    # -- observation -----------------------------------------------------------------------------------------
    def _start_http(self) -> None:
        s = self.settings
        if s.http_port is None:
            return
        source = StatusSource(ready=self.readiness, delivery_kpi=self._kpi_lookup, alive=self.health.liveness)
        try:
            self._http = OpsServer(
                s.http_port, self.metrics.registry, source, host=s.http_host, handler=self.handler, tls=self.http_tls
            ).start()
        except OSError as exc:
            raise StartupError(f"cannot serve HTTP on {s.http_host}:{s.http_port}: {exc.strerror or exc}") from None
        self._log.info("http_listening", host=s.http_host, port=self._http.port)
        if s.http_port_file is not None:
            write_atomically(s.http_port_file, str(self._http.port))

    @property
    def stages(self) -> list[Stage]:
        return [runner.stage for runner in self.runners]

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None

    def readiness(self) -> tuple[bool, str]:
        ready, detail = self.health.readiness()
        if not ready:
            return False, detail
        return True, ", ".join(f"{r.stage.name}: {len(r.works)} partitions" for r in self.runners)


def _no_kpi(_delivery_id: str) -> None:
    return None


def write_atomically(path: Path, text: str) -> None:
    """A reader polling for the file sees it whole or not at all."""
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    part.replace(path)
