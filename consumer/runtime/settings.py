"""Everything an instance is configured with. Each setting that has a flag declares it here, once: the flag, its
environment variable (SENDTRACK_<FLAG>), default, help and the text that gives the value back; the CLI builds its
parser, the settings and the command line that spawns an instance (argv) from these declarations."""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from consumer.kafka.topics import Topics

EXACTLY_ONCE = "exactly-once"
AT_LEAST_ONCE = "at-least-once"
NEVER = "never"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def duration_s(text: str) -> float | None:
    """`30d`, `12h`, `90m`, `45s`, plain seconds, or `never` (None) as seconds."""
    if text.strip().lower() == NEVER:
        return None
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30d, 12h, 90m, 45s, never)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _duration_text(seconds: float | None) -> str:
    return NEVER if seconds is None else f"{seconds}s"


def span_s(text: str) -> float:
    """A duration that has an end: `never` is refused."""
    seconds = duration_s(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f"{text!r}: this duration cannot be never")
    return seconds


def _count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a count of at least 1, not {text!r}")
    return count


def _port(text: str) -> int | None:
    port = int(text)
    return None if port < 0 else port


def _port_text(port: int | None) -> str:
    return str(-1 if port is None else port)


def _workers(text: str) -> int:
    """`auto`: one worker per core; else a count of at least 1."""
    count = (os.cpu_count() or 1) if text.strip().lower() == "auto" else int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"--workers takes a count of at least 1 or auto, not {text!r}")
    return count


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(item for item in text.split(",") if item)


def _paths(text: str) -> tuple[Path, ...]:
    return tuple(Path(item) for item in _comma_list(text))


def _comma_text(items: tuple[Any, ...]) -> str:
    return ",".join(str(item) for item in items)


@dataclass(frozen=True)
class Flag:
    """A setting's flag: --name, read from SENDTRACK_<NAME> when not given; `parse` makes the value of its text
    (argparse's type) and `text` gives the text back for a spawned command line. A `switch` is on when given."""

    name: str
    help: str = ""
    parse: Callable[[str], Any] = str
    text: Callable[[Any], str] = str
    choices: tuple[str, ...] | None = None
    switch: bool = False


def flag(default: Any = None, *, factory: Callable[[], Any] | None = None, **declared: Any) -> Any:
    """A Settings field with its flag (Flag's fields as keywords)."""
    metadata = {"flag": Flag(**declared)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def flagged() -> list[tuple[Field[Any], Flag]]:
    """Every Settings field that has a flag, with it, in declaration order."""
    return [(f, f.metadata["flag"]) for f in fields(Settings) if "flag" in f.metadata]


def default_of(setting: Field[Any]) -> Any:
    return setting.default_factory() if callable(setting.default_factory) else setting.default


@dataclass(frozen=True)
class IngestSource:
    """An ingest stage: the MTA's records in `format` on `topic` become contract events on mta.events."""

    format: str
    topic: str


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str  # --bootstrap-servers: shared with every tool (cli/options.add_bootstrap)
    group_id: str = flag("sendtrack", name="--group-id", help="consumer group (instances of one service share it)")
    # Stable across restarts: the transactional.id derives from it, so a restart fences its crashed self.
    instance_id: str = flag(
        factory=socket.gethostname, name="--instance-id", help="stable id of this instance (default: host name)"
    )
    state_dir: Path = flag(Path("state"), name="--state-dir", parse=Path, help="where RocksDB state lives")
    store: str = flag("rocksdb", name="--store", choices=("rocksdb", "memory"), help="state store")
    # 0: any free port; None (-1 on the command line): no HTTP server
    http_port: int | None = flag(
        8080, name="--http-port", parse=_port, text=_port_text, help="metrics/health/KPI HTTP port; -1 disables it"
    )
    http_host: str = flag("0.0.0.0", name="--http-host", help="address the HTTP server binds to")
    # Where the bound port is written (0 picks one): how the --workers parent finds each worker's loopback server.
    http_port_file: Path | None = flag(
        name="--http-port-file", parse=Path, help="write the port the HTTP server listens on to this file"
    )
    # N member processes of the group under one parent (runtime/workers.py); 1 is one process, no parent.
    workers: int = flag(
        1,
        name="--workers",
        parse=_workers,
        help="group members on this machine: N, or auto (one per core)",
    )
    # Set by the --workers parent on each of its workers: no Deployment view (the parent does not serve it), and
    # a clean stop when that parent is gone (a worker must not outlive it holding its state directory).
    worker_of: int | None = flag(name="--worker-of", parse=int, help="set by --workers: the parent's process id")
    web_config: Path | None = flag(
        name="--web-config", parse=Path, help="users, roles and TLS of the web view (YAML)"
    )  # Prometheus' web config format
    advertised_url: str | None = flag(
        name="--advertised-url", help="this instance's HTTP URL (default http://<fqdn>:<port>)"
    )  # how peers and browsers reach this instance's HTTP server
    web_peers: tuple[str, ...] = flag(
        (),
        name="--web-peers",
        parse=_comma_list,
        text=_comma_text,
        help="comma-separated URLs of the other instances' HTTP servers",
    )  # asked who owns what when the group cannot say
    processing_guarantee: str = flag(EXACTLY_ONCE, name="--processing-guarantee", choices=(EXACTLY_ONCE, AT_LEAST_ONCE))
    efs_default: bool = flag(
        False, name="--efs-default", switch=True, help="EFS for deliveries whose PREPARED does not say"
    )
    commit_interval_s: float = flag(
        1.0,
        name="--commit-interval",
        parse=float,
        help="seconds between checkpoints while input keeps coming (a quiet input checkpoints sooner)",
    )
    grace_period_s: float = flag(30.0, name="--grace-period", parse=float, help="seconds allowed for a clean stop")
    watchdog_timeout_s: float = flag(  # no progress of the main loop for this long: exit STUCK
        60.0, name="--watchdog-timeout", parse=float, help="seconds without progress before exit 4"
    )
    max_clock_skew_s: float = flag(  # events dated further ahead of the wall clock are dead letters
        900.0, name="--max-clock-skew", parse=float, help="seconds an event may be dated in the future"
    )
    # How long a final delivery keeps its message-level state before it is archived; None: never archived.
    state_retention_s: float | None = flag(
        30 * 86_400.0,
        name="--state-retention",
        parse=duration_s,
        text=_duration_text,
        help="how long a final delivery keeps its message-level state before it is archived (30d, 12h, never)",
    )
    # The delivery stage publishes address signals and the instance runs the quarantine stage (consumer/quarantine).
    quarantine: bool = flag(
        False, name="--quarantine", switch=True, help="address signals and the quarantine stage (address.quarantine)"
    )
    # The quarantine's rules and limits (consumer/quarantine/README.md): the platform's defaults.
    quarantine_threshold: int = flag(
        5, name="--quarantine-threshold", parse=_count, help="quarantine: the counted error that quarantines"
    )
    quarantine_error_window_s: float = flag(
        86_400.0,
        name="--quarantine-error-window",
        parse=span_s,
        text=_duration_text,
        help="quarantine: errors closer than this to the last counted one count once (1d)",
    )
    quarantine_reset_after_s: float = flag(
        10 * 86_400.0,
        name="--quarantine-reset-after",
        parse=span_s,
        text=_duration_text,
        help="quarantine: the error counter resets when its last counted error is older than this (10d)",
    )
    mailbox_full_release_s: float = flag(
        30 * 86_400.0,
        name="--mailbox-full-release",
        parse=span_s,
        text=_duration_text,
        help="quarantine: an address erroneous for mailbox_full this long is valid again (30d)",
    )
    recipient_history: int = flag(
        100, name="--recipient-history", parse=_count, help="quarantine: messages kept per address (100)"
    )
    address_idle_after_s: float = flag(
        180 * 86_400.0,
        name="--address-idle-after",
        parse=span_s,
        text=_duration_text,
        help="quarantine: an address valid and without a signal this long is dropped (180d)",
    )
    session_timeout_ms: int = flag(45_000, name="--session-timeout-ms", parse=int)
    batch_size: int = 5_000
    create_topics: bool = flag(False, name="--create-topics", switch=True, help="create missing topics")
    partitions: int = flag(8, name="--partitions", parse=int, help="partitions of topics created by --create-topics")
    topics: Topics = field(default_factory=Topics)  # --topic-<name> for each, named after Topics' fields
    security: dict[str, str] = field(default_factory=dict)  # --kafka KEY=VALUE and SENDTRACK_KAFKA_<KEY>
    delivery_stage: bool = True  # events -> statuses and KPIs; `sendtrack ingest` runs only ingest stages
    ingest: tuple[IngestSource, ...] = ()  # one stage (and consumer group) per source format: --ingest, or `ingest`
    # Where the platform's ids are in an MTA's records (meta, tags, args).
    delivery_id_key: str = flag("delivery_id", name="--delivery-id-key", help="ingest: the key holding the delivery id")
    message_id_key: str = flag("message_id", name="--message-id-key", help="ingest: the key holding the message id")
    # The user's classifier rule files, matched before the packaged rules.
    bounce_rules: tuple[Path, ...] = flag(
        (),
        name="--bounce-rules",
        parse=_paths,
        text=_comma_text,
        help="ingest: comma-separated rule files, matched before the packaged",
    )
    # How ingest (mta.events) and the view (deliveries, control) pick a delivery_id's partition: it must match the
    # producers of `deliveries` (librdkafka's default is consistent_random, CRC32; Java clients hash with murmur2:
    # murmur2_random). --partitioner is shared with the tools that produce (cli/options.add_partitioner).
    partitioner: str = "consistent_random"

    @property
    def transactional(self) -> bool:
        return self.processing_guarantee == EXACTLY_ONCE
