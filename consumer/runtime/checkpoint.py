"""The checkpoint: the one place that orders produce, commit and persist, for every stage.

1. the stage produces each partition's checkpoint output (the delivery stage: complete KPI snapshots and
   the changelog of its state changes; the ingest stage: nothing, its events went out as they were mapped);
2. wait for every acknowledgement;
3. commit the consumed input offsets: inside the transaction (exactly-once) or after the
   flush (at-least-once);
4. only then let the stage persist what was committed (the delivery stage: state + offsets, one batch), and
   count in the metrics what the committed work did (`PartitionWork.tally`).

A crash at any step leaves the store behind the changelog, never ahead; restore replays the tail.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumer.kafka.producer import OutputProducer
from consumer.ops.metrics import Metrics
from consumer.runtime.stage import Beat, PartitionWork, Stage

EARLY_FRACTION = 0.1


class Checkpointer:
    def __init__(
        self,
        producer: OutputProducer,
        consumer: Consumer,
        stage: Stage,
        metrics: Metrics,
        interval_s: float,
        log: Any,
        timeout_s: float = 30.0,
    ) -> None:
        self._producer = producer
        self._consumer = consumer
        self._stage = stage
        self._seconds = metrics.checkpoint_seconds.labels(stage.name)
        self._interval_s = interval_s
        self._log = log
        self._timeout_s = timeout_s
        self._last = time.monotonic()

    def due(self) -> bool:
        return self.until_due() == 0.0

    def until_due(self) -> float:
        """Seconds until the next checkpoint is due; 0 once it is."""
        return max(0.0, self._interval_s - (time.monotonic() - self._last))

    def may_run_early(self) -> bool:
        """Whether a checkpoint before it is due may run now (the input went quiet): not within a tenth of the
        interval of the last one, so that a trickle of input makes at most ten transactions an interval."""
        return time.monotonic() - self._last >= self._interval_s * EARLY_FRACTION

    def run(self, works: Iterable[PartitionWork], now_ms: int | None, beat: Beat) -> bool:
        """Checkpoint every partition (the stage moves its clock to now_ms first, if given); raises
        KafkaException if the outputs or the commit failed. Returns whether anything was committed."""
        started = time.perf_counter()
        self._last = time.monotonic()
        staged = []
        for work in works:
            output = self._stage.stage_checkpoint(work, now_ms)
            if output is not None or work.consumed or work.tally:
                staged.append((work, output))
        if not staged:
            return False
        offsets = [TopicPartition(t, w.partition, o) for w, _ in staged for t, o in w.consumed.items()]
        beat("checkpoint_flush")
        self._producer.flush(self._timeout_s)
        beat("checkpoint_commit")
        if self._producer.transactional:
            self._producer.commit_transaction(offsets, self._consumer.consumer_group_metadata(), self._timeout_s)
        elif offsets:
            raise_refused(self._consumer.commit(offsets=offsets, asynchronous=False))
        beat("checkpoint_persist")
        for work, output in staged:
            self._stage.persist(work, output)
            work.committed.update(work.consumed)
            work.consumed.clear()
            work.tally.commit()
        seconds = time.perf_counter() - started
        self._seconds.observe(seconds)
        if seconds > self._interval_s / 4:  # it delays every output behind it: worth a line
            self._log.warning("slow_checkpoint", seconds=round(seconds, 3), partitions=len(staged))
        return True


def raise_refused(committed: list[TopicPartition] | None) -> None:
    """A plain commit raises only when the request fails; a partition the group refused says so in its `error`, and
    its work must not be persisted as committed."""
    for tp in committed or ():
        if tp.error is not None:
            raise KafkaException(tp.error)
