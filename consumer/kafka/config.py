"""librdkafka client settings: our defaults, plus the security settings an operator passes through."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

KAFKA_LOGGER = logging.getLogger("sendtrack.kafka")  # librdkafka's own log lines
SECURITY_PREFIXES = ("security.protocol", "sasl.", "ssl.")
_SECRET_WORDS = ("password", "secret", "key", "token", "jaas")
# librdkafka's key partitioners (a producer's `partitioner`); Java clients' default hashes like murmur2_random.
PARTITIONERS = ("consistent_random", "consistent", "murmur2_random", "murmur2", "fnv1a_random", "fnv1a")


def security_settings(pairs: Mapping[str, str]) -> dict[str, str]:
    """Accept only security settings: the rest of the client config is ours to keep correct."""
    bad = [name for name in pairs if not name.startswith(SECURITY_PREFIXES)]
    if bad:
        raise ValueError(f"only security.protocol, sasl.* and ssl.* may be passed through, not {', '.join(bad)}")
    return dict(pairs)


def security_from_env(environ: Mapping[str, str], prefix: str = "SENDTRACK_KAFKA_") -> dict[str, str]:
    """SENDTRACK_KAFKA_SASL_MECHANISM=PLAIN -> sasl.mechanism=PLAIN (librdkafka names have no '_')."""
    return security_settings(
        {
            name[len(prefix) :].lower().replace("_", "."): value
            for name, value in environ.items()
            if name.startswith(prefix)
        }
    )


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as it may be logged."""
    return {k: "***" if any(word in k for word in _SECRET_WORDS) else v for k, v in config.items() if k != "logger"}


def base_config(bootstrap_servers: str, security: Mapping[str, str]) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap_servers, "client.id": "sendtrack", "logger": KAFKA_LOGGER, **security}


def consumer_config(base: Mapping[str, Any], group_id: str, session_timeout_ms: int) -> dict[str, Any]:
    return {
        **base,
        "group.id": group_id,
        # Range keeps partition p of every input topic on one instance; cooperative-sticky would not.
        "partition.assignment.strategy": "range",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": session_timeout_ms,
        "max.poll.interval.ms": 300_000,
        "fetch.wait.max.ms": 100,
        "queued.min.messages": 20_000,
        "statistics.interval.ms": 5_000,
    }


def producer_config(
    base: Mapping[str, Any], transactional_id: str | None, partitioner: str = "consistent_random"
) -> dict[str, Any]:
    config = {
        **base,
        "partitioner": partitioner,  # for records produced without a partition (ingest's, by delivery_id)
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": 30_000,
    }
    if transactional_id:
        # message.timeout.ms must stay below transaction.timeout.ms (librdkafka).
        config |= {"transactional.id": transactional_id, "transaction.timeout.ms": 60_000}
    return config


def reader_config(base: Mapping[str, Any], group_id: str, reset: str = "earliest") -> dict[str, Any]:
    """A consumer that reads assigned partitions to their end and never commits (restore, CLI reads).

    reset="error" makes a position that does not exist an error instead of a silent jump.
    """
    return {
        **base,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": reset,
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": 10,  # reaching the end fast matters more than full fetches
    }
