"""Prometheus metrics (prefix sendtrack_). Labels are bounded: never a delivery or message id."""

from __future__ import annotations

from collections import Counter as Amounts
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_AGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "sendtrack_events", "Input events by topic, type and outcome", ["topic", "type", "outcome"], registry=r
        )
        self.transitions = Counter(
            "sendtrack_status_transitions", "Message status changes", ["from_status", "to_status", "efs"], registry=r
        )
        self.dlq = Counter("sendtrack_dlq_records", "Records sent to the dead-letter topic", ["reason"], registry=r)
        self.rejected_confirmations = Counter(
            "sendtrack_rejected_confirmations", "Confirmations refused for a missing role", ["reason"], registry=r
        )
        self.anomalies = Counter(
            "sendtrack_anomalies", "MTA events for an unknown or unconfirmed delivery (applied)", registry=r
        )
        self.stats_mismatches = Counter(
            "sendtrack_compute_stats_mismatches",
            "Recomputes that differed from the incremental KPIs",
            ["trigger"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "sendtrack_batch_processing_seconds",
            "Decode and apply time per consumed batch",
            ["stage"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.event_age = Histogram(
            "sendtrack_event_age_seconds",
            "Event time to processing (the last event of each partition batch)",
            buckets=_AGE_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "sendtrack_consumer_lag", "Messages behind the end, per input partition", ["topic", "partition"], registry=r
        )
        self.checkpoint_seconds = Histogram(
            "sendtrack_checkpoint_seconds",
            "Produce, commit and persist time per checkpoint",
            ["stage"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.checkpoint_failures = Counter(
            "sendtrack_checkpoint_failures", "Checkpoints that failed and were rewound", ["stage", "kind"], registry=r
        )
        self.rebalances = Counter("sendtrack_rebalances", "Partition assignment changes", ["stage", "kind"], registry=r)
        self.restore_records = Counter("sendtrack_state_restore_records", "Changelog records restored", registry=r)
        self.restore_seconds = Histogram(
            "sendtrack_state_restore_seconds",
            "Time to restore one partition",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 20, 60),
            registry=r,
        )
        self.kpis_published = Counter("sendtrack_kpi_records_published", "DeliveryKpi records published", registry=r)
        self.sending_logs_published = Counter(
            "sendtrack_sending_log_records_published", "SendingLog records published", registry=r
        )
        self.address_signals = Counter(
            "sendtrack_address_signals",
            "AddressSignal records the delivery stage published (--quarantine), by kind",
            ["kind"],
            registry=r,
        )
        self.assigned_partitions = Gauge("sendtrack_assigned_partitions", "Partitions owned", ["stage"], registry=r)
        self.state_keys = Gauge(
            "sendtrack_state_keys",
            "Keys in the delivery stage's stores of the owned partitions (RocksDB's estimate): what a restore replays",
            registry=r,
        )
        self.live_deliveries = Gauge(
            "sendtrack_live_deliveries", "Deliveries of the owned partitions not archived (held in memory)", registry=r
        )
        self.ingest_records = Counter(
            "sendtrack_ingest_records",
            "MTA source records by format and outcome (mapped, no_event, dead_lettered), counted when committed",
            ["format", "outcome"],
            registry=r,
        )
        self.ingest_events = Counter(
            "sendtrack_ingest_events",
            "Contract events produced from MTA source records, by format and type, counted when committed",
            ["format", "type"],
            registry=r,
        )
        # The quarantine stage (--quarantine). Never an address as a label: addresses are personal data.
        self.quarantine_addresses = Gauge(
            "sendtrack_quarantine_addresses",
            "Addresses of the owned partitions by published quarantine status (committed state)",
            ["status"],
            registry=r,
        )
        self.quarantine_transitions = Counter(
            "sendtrack_quarantine_transitions",
            "Published address status changes (NONE: no record, before the first or after an erase)",
            ["from_status", "to_status"],
            registry=r,
        )
        self.quarantine_signals = Counter(
            "sendtrack_quarantine_signals",
            "Address signals applied by kind and outcome (applied, duplicate, late), counted when committed",
            ["kind", "outcome"],
            registry=r,
        )
        self.quarantine_records = Counter(
            "sendtrack_quarantine_records_published",
            "address.quarantine records published: status records and tombstones",
            ["record"],
            registry=r,
        )


class Tally:
    """Counter increments held back until the checkpoint that covers them commits. A rewind drops them with the
    work they counted, so a counter never counts an aborted record, nor a redone one twice."""

    def __init__(self) -> None:
        self._pending: Amounts[Any] = Amounts()  # a labelled counter child -> its increment

    def add(self, child: Any, amount: float = 1) -> None:
        if amount:
            self._pending[child] += amount

    def commit(self) -> None:
        for child, amount in self._pending.items():
            child.inc(amount)
        self._pending.clear()

    def __bool__(self) -> bool:
        return bool(self._pending)
