"""Drive real `sendtrack` processes against the test broker and read what they publish."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.cli.kpis import read_latest
from consumer.cli.produce import send
from consumer.cli.run import argv
from consumer.cli.workload import Workload
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT, SENDING_LOG
from consumer.kafka.admin import ensure_topics
from consumer.kafka.config import reader_config
from consumer.kafka.topics import Topics
from consumer.runtime.settings import Settings

_names = itertools.count()
SESSION_TIMEOUT_MS = 6_000  # the embedded broker joins groups in about half of it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Pipeline:
    """One isolated pipeline (own topics and group) on the shared broker."""

    def __init__(self, bootstrap: str, workdir: Path, partitions: int = 4) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.name = f"t{next(_names)}-{os.getpid()}"
        self.topics = Topics.prefixed(f"{self.name}.")
        self.group = f"{self.name}-group"
        self.partitions = partitions
        ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), self.topics, partitions)
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})

    # -- input -------------------------------------------------------------------------------
    def produce_events(self, topic: str, schema: str, events: Iterable[dict[str, Any]]) -> None:
        codec = AvroCodec.named(schema)
        send(self._producer, topic, ((e["delivery_id"].encode(), codec.encode(e)) for e in events))
        assert self._producer.flush(30) == 0

    def produce_workload(self, workload: Workload) -> None:
        self.produce_events(self.topics.deliveries, DELIVERY_EVENT, workload.delivery_events)
        self.produce_events(self.topics.mta_events, MTA_EVENT, workload.mta_events)

    def produce_raw(self, topic: str, key: bytes | None, value: bytes | None, headers: list | None = None) -> None:
        self._producer.produce(topic, value, key, headers=headers)
        assert self._producer.flush(30) == 0

    # -- the service ---------------------------------------------------------------------------
    def run_args(
        self,
        instance: str,
        store: str = "rocksdb",
        guarantee: str = "exactly-once",
        http_port: int = -1,
        commit_interval: float = 0.5,
        **overrides: Any,
    ) -> list[str]:
        return argv(
            Settings(
                bootstrap_servers=self.bootstrap,
                group_id=self.group,
                instance_id=instance,
                state_dir=self.workdir / f"state-{instance}",
                store=store,
                processing_guarantee=guarantee,
                http_port=http_port,
                commit_interval_s=commit_interval,
                session_timeout_ms=SESSION_TIMEOUT_MS,
                topics=self.topics,
                **{"grace_period_s": 20, **overrides},
            )
        )

    def start(self, instance: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{instance}.log", "ab")  # noqa: SIM115 - closed by the process's end
        return subprocess.Popen(self.run_args(instance, **kwargs), stdout=log, stderr=subprocess.STDOUT)

    # -- output ----------------------------------------------------------------------------------
    def kpis(self) -> dict[str, dict[str, Any]]:
        return read_latest({"bootstrap.servers": self.bootstrap}, self.topics.kpis)

    def wait_for_kpis(
        self, expected: dict[str, dict[str, Any]], timeout_s: float = 120.0, processes: Iterable[subprocess.Popen] = ()
    ) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            latest = self.kpis()
            if all(_agrees(latest.get(d), e) for d, e in expected.items()):
                return latest
            for process in processes:
                assert process.poll() is None, f"the service exited with {process.returncode}"
            if time.monotonic() > deadline:
                return latest
            time.sleep(0.5)

    def read_all(self, topic: str, isolation: str = "read_committed") -> list[Any]:
        """Every committed (or, read_uncommitted, every) record of a topic: (partition, offset, key, value, headers)."""
        config = reader_config({"bootstrap.servers": self.bootstrap}, f"{self.name}-reader")
        consumer = Consumer({**config, "isolation.level": isolation})
        records = []
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            remaining = set(partitions)
            while remaining:
                for msg in consumer.consume(1000, 0.1):
                    if msg.error():
                        assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                        remaining.discard(msg.partition())
                        continue
                    records.append((msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers()))
        finally:
            consumer.close()
        return records

    def sending_logs(self) -> list[dict[str, Any]]:
        codec = AvroCodec.named(SENDING_LOG)
        return [codec.decode(value) for *_, value, _ in self.read_all(self.topics.sending_logs)]


def _agrees(actual: dict[str, Any] | None, expected: dict[str, Any]) -> bool:
    return actual is not None and all(actual.get(k) == v for k, v in expected.items())


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_http(port: int, path: str, status: int = 200, timeout_s: float = 60.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            code, body = http_get(port, path)
            if code == status:
                return body
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{path} never answered {status}")


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM, and the exit code; a failure shows the end of the instance's log."""
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout_s)
    if code != 0:
        log = Path(process.args[process.args.index("--state-dir") + 1]).parent / (
            process.args[process.args.index("--instance-id") + 1] + ".log"
        )
        tail = log.read_text()[-3000:] if log.exists() else "(no log)"
        raise AssertionError(f"instance exited with {code}; its log ends:\n{tail}")
    return code


def stop_all(*processes: subprocess.Popen[bytes]) -> None:
    """Stop every process even when stopping one fails (the first failure is raised after)."""
    with contextlib.ExitStack() as stack:
        for process in processes:
            stack.callback(stop, process)


def as_json(body: bytes) -> Any:
    return json.loads(body)
