"""What a stage is: one consumer group's work on its input records. The runner (runner.py) owns the Kafka
clients, the checkpoint order, recovery and rebalances; a stage only says what its records become.

Two stages exist: the delivery stage (consumer/delivery/stage.py: events -> statuses and KPIs, with partitioned state)
and the ingest stage (consumer/ingest/stage.py: an MTA's own records -> contract events, stateless).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from confluent_kafka import Message

from consumer.kafka.producer import OutputProducer
from consumer.ops.metrics import Tally
from consumer.runtime.dead_letters import DeadLetters

Beat = Callable[[str], None]  # tells the watchdog which step is under way


class Coordinates(NamedTuple):
    topic: str
    partition: int
    offset: int


class PoisonRecord(Exception):
    """Processing this well-formed record raised. The runner rewinds (the partition's uncommitted state
    may be half-changed) and the stage dead-letters the record when it comes round again."""

    def __init__(self, where: Coordinates) -> None:
        super().__init__(f"processing {where.topic}[{where.partition}]@{where.offset} failed")
        self.where = where


class PartitionWork:
    """One owned input partition: where its inputs stand. Stages extend it with what they keep."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        # input topic -> next offset, as last committed to the group: where a rewind goes back to.
        self.committed: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Forget everything since the last checkpoint."""
        self.consumed: dict[str, int] = {}  # input topic -> next offset, done since the last checkpoint
        self.tally = Tally()  # what that work adds to the metrics, counted when the checkpoint commits


class Stage(Protocol):
    name: str  # the `stage` label of the runner's metrics
    group_id: str
    inputs: tuple[str, ...]
    operations: dict[str, tuple[str, ...]]  # topic -> what its clients do there (READ, WRITE): its permissions
    poison: set[Coordinates]  # records to dead-letter instead of processing (see PoisonRecord)

    def prepare(self) -> None:
        """Checks that need no broker, before the instance joins anything."""

    def start(self, base_config: dict[str, Any]) -> None:
        """Make the stage's own Kafka clients, if any (the broker is reachable now)."""

    def attach(self, producer: OutputProducer, dead_letters: DeadLetters) -> None:
        """The outputs records go to; the producer object stays the same when it is renewed."""

    def open(
        self, partitions: Sequence[int], committed: Mapping[int, Mapping[str, int]], beat: Beat
    ) -> dict[int, PartitionWork]:
        """Take on newly assigned partitions (restoring whatever state they have; `committed`: each partition's
        input offsets as the group committed them, which a restore checks changelog records against)."""
        ...

    def close(self, work: PartitionWork) -> None:
        """Give up a partition that was revoked or lost."""

    def process(self, messages: Sequence[Message], works: dict[int, PartitionWork], now_s: float) -> None:
        """Turn a poll's records into outputs or dead letters, marking each offset done in `consumed`."""

    def stage_checkpoint(self, work: PartitionWork, now_ms: int | None) -> object | None:
        """Produce what the checkpoint publishes for this partition; what persist() needs, or None if nothing."""

    def persist(self, work: PartitionWork, staged: object | None) -> None:
        """After the commit: keep what was committed (its offsets are still in `work.consumed`)."""

    def stop(self) -> None:
        """Close the stage's own clients."""
