"""Topic names and the configs each topic needs."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Topics:
    deliveries: str = "deliveries"
    mta_events: str = "mta.events"
    control: str = "sendtrack.control"
    kpis: str = "delivery.kpis"
    sending_logs: str = "sending.logs"
    dlq: str = "sendtrack.dlq"
    changelog: str = "sendtrack.changelog"
    # The quarantine (--quarantine): the delivery stage's address signals in, keyed by address; the quarantine
    # stage's compacted statuses out, which the campaign platform reads; its state's changelog (co-partitioned
    # with address.signals).
    address_signals: str = "address.signals"
    address_quarantine: str = "address.quarantine"
    quarantine_changelog: str = "sendtrack.quarantine.changelog"

    @property
    def inputs(self) -> tuple[str, str, str]:
        """Co-partitioned: partition p of each is owned by one instance, with state partition p."""
        return (self.deliveries, self.mta_events, self.control)

    @property
    def compacted(self) -> tuple[str, ...]:
        return (self.kpis, self.changelog, self.address_quarantine, self.quarantine_changelog)

    @property
    def quarantine(self) -> tuple[str, str, str]:
        """The quarantine stage's (--quarantine), co-partitioned: its input, its output by input partition, its
        changelog."""
        return (self.address_signals, self.address_quarantine, self.quarantine_changelog)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.inputs, self.kpis, self.sending_logs, self.dlq, self.changelog)

    @classmethod
    def prefixed(cls, prefix: str) -> Topics:
        """Every default name behind a prefix: several pipelines side by side on one cluster."""
        return cls(**{f.name: f"{prefix}{f.default}" for f in fields(cls)})
