"""Everything an instance is configured with; the CLI fills it from flags and SENDTRACK_* variables."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from consumer.kafka.topics import Topics

EXACTLY_ONCE = "exactly-once"
AT_LEAST_ONCE = "at-least-once"


@dataclass(frozen=True)
class IngestSource:
    """An ingest stage: the MTA's records in `format` on `topic` become contract events on mta.events."""

    format: str
    topic: str


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str
    group_id: str = "sendtrack"
    # Stable across restarts: the transactional.id derives from it, so a restart fences its crashed self.
    instance_id: str = field(default_factory=socket.gethostname)
    state_dir: Path = Path("state")
    store: str = "rocksdb"  # or "memory"
    http_port: int | None = 8080  # 0: any free port; None: no HTTP server
    http_host: str = "0.0.0.0"  # the address the HTTP server binds to
    web_config: Path | None = None  # users, roles, TLS of the Deployment view (Prometheus' web config format)
    advertised_url: str | None = None  # how peers and browsers reach this instance's HTTP server
    web_peers: tuple[str, ...] = ()  # other instances' URLs, asked who owns what when the group cannot say
    processing_guarantee: str = EXACTLY_ONCE
    efs_default: bool = False
    commit_interval_s: float = 1.0
    grace_period_s: float = 30.0
    watchdog_timeout_s: float = 60.0  # no progress of the main loop for this long: exit STUCK
    max_clock_skew_s: float = 900.0  # events dated further ahead of the wall clock are dead letters
    # How long a final delivery keeps its message-level state before it is archived; None: never archived.
    state_retention_s: float | None = 30 * 86_400.0
    session_timeout_ms: int = 45_000
    batch_size: int = 5_000
    create_topics: bool = False
    partitions: int = 8
    topics: Topics = field(default_factory=Topics)
    security: dict[str, str] = field(default_factory=dict)
    delivery_stage: bool = True  # events -> statuses and KPIs; `sendtrack ingest` runs only ingest stages
    ingest: tuple[IngestSource, ...] = ()  # one stage (and consumer group) per source format
    delivery_id_key: str = "delivery_id"  # where the platform's ids are in an MTA's records (meta, tags, args)
    message_id_key: str = "message_id"
    bounce_rules: tuple[Path, ...] = ()  # the user's classifier rule files, matched before the packaged rules
    # How ingest (mta.events) and the view (deliveries, control) pick a delivery_id's partition: it must match the
    # producers of `deliveries` (librdkafka's default is consistent_random, CRC32; Java clients hash with murmur2:
    # murmur2_random).
    partitioner: str = "consistent_random"

    @property
    def transactional(self) -> bool:
        return self.processing_guarantee == EXACTLY_ONCE
