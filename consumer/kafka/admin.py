"""Topic administration: create what is missing, check that the inputs are co-partitioned."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.kafka.access import denial
from consumer.kafka.topics import Topics

# What a restore (or a reader from the start) replays is the compacted log plus what compaction has not reached:
# - compaction cleans closed segments only: Kafka's defaults (1 GiB, 7 days) left that much uncompacted; 64 MiB or
#   an hour bounds it;
# - tombstones (an archived delivery's records) stay readable for delete.retention.ms (Kafka: a day, a day of
#   deletions to replay): an hour here. A store offline for longer restores without them; the delivery stage drops
#   what an archived delivery left behind (delivery/view.py, leftovers_of_archived).
COMPACTED = {
    "cleanup.policy": "compact",
    "segment.bytes": str(64 * 1024 * 1024),
    "segment.ms": str(3_600_000),
    "delete.retention.ms": str(3_600_000),
}
# address.signals holds recipient addresses in clear (personal data): kept a week, long enough to ride out an outage
# of the quarantine stage, short enough that `sendtrack quarantine forget` leaves no copy in it for long (a FORGET
# erases the state, the changelog and address.quarantine; Kafka cannot delete single records of a delete-policy
# topic). The stage's input must be read well within this.
SIGNALS_RETENTION_MS = 7 * 86_400_000
ADDRESS_SIGNALS = {"cleanup.policy": "delete", "retention.ms": str(SIGNALS_RETENTION_MS)}


class TopicLayoutError(RuntimeError):
    pass


def partition_counts(admin: AdminClient, names: tuple[str, ...], timeout: float = 10.0) -> dict[str, int]:
    metadata = admin.list_topics(timeout=timeout).topics
    return {name: len(metadata[name].partitions) for name in names if name in metadata and not metadata[name].error}


def ensure_topics(
    admin: AdminClient,
    topics: Topics,
    partitions: int,
    replication: int = 1,
    timeout: float = 30.0,
    extra: tuple[str, ...] = (),
    quarantine: bool = False,
) -> list[str]:
    """Create the missing topics with their configs (the quarantine's too if asked, and the `extra` ones, plain);
    return the names created."""
    wanted = (*topics.all, *(topics.quarantine if quarantine else ()), *extra)
    existing = partition_counts(admin, wanted)
    missing = [name for name in wanted if name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(name, partitions, replication, config=_config_for(name, topics)) for name in missing],
            operation_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result(timeout)
            except KafkaException as exc:
                if exc.args[0].name() == "TOPIC_ALREADY_EXISTS":  # another instance won the race
                    continue
                denied = denial(exc.args[0], name, topic_operation="CREATE", cluster_operation="CREATE")
                if denied is not None:
                    raise denied from None
                raise
        _await_listed(admin, tuple(missing), timeout)
    check_copartitioned(admin, topics)
    if quarantine:
        check_same_partitions(admin, topics.quarantine)
    return missing


def _await_listed(admin: AdminClient, names: tuple[str, ...], timeout: float) -> None:
    """A created topic reaches the brokers' metadata a moment after CreateTopics answers (Apache Kafka's controller
    commits it first): wait until every broker answer lists it, or the layout check would call it missing."""
    deadline = time.monotonic() + timeout
    while len(partition_counts(admin, names)) < len(names) and time.monotonic() < deadline:
        time.sleep(0.05)


def check_copartitioned(admin: AdminClient, topics: Topics) -> int:
    """Inputs and changelog must have one partition count: partition p of each belongs together."""
    return check_same_partitions(admin, (*topics.inputs, topics.changelog))


def check_same_partitions(admin: AdminClient, names: tuple[str, ...]) -> int:
    """Co-partitioned topics (a stage's inputs, the changelog of its state, an output by input partition) must
    exist and have one partition count; it is returned."""
    counts = partition_counts(admin, names)
    absent = [name for name in names if name not in counts]
    if absent:
        raise TopicLayoutError(f"missing topics: {', '.join(absent)} (run with --create-topics)")
    if len(set(counts.values())) != 1:
        raise TopicLayoutError(f"co-partitioned topics must have one partition count, got {counts}")
    return next(iter(counts.values()))


def _config_for(name: str, topics: Topics) -> Mapping[str, Any]:
    if name == topics.address_signals:
        return ADDRESS_SIGNALS
    return COMPACTED if name in topics.compacted else {}
