"""KPI arithmetic: counters moved by message contribution deltas, and the published snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from consumer.core.status import FAILED, PENDING, SENT, Contribution


@dataclass(slots=True)
class KpiCounters:
    """A delivery's counters; always the sum of its messages' contributions (plus event totals)."""

    processed: int = 0
    sent: int = 0
    failed: int = 0
    pending: int = 0
    opens_unique: int = 0
    clicks_unique: int = 0
    complaints: int = 0
    awaiting_validity_end: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    opens_total: int = 0  # distinct OPEN events
    clicks_total: int = 0  # distinct CLICK events
    confirmations_rejected: int = 0  # distinct CONFIRMED events refused for a missing role

    def add(self, c: Contribution, sign: int) -> None:
        """Add (sign=1) or remove (sign=-1) one message's contribution."""
        status = c.status
        if status is not None:
            self.processed += sign
            if status == SENT:
                self.sent += sign
            elif status == FAILED:
                self.failed += sign
                reasons = self.failures_by_reason
                count = reasons.get(c.failure_reason, 0) + sign
                if count:
                    reasons[c.failure_reason] = count
                else:
                    del reasons[c.failure_reason]
            elif status == PENDING:
                self.pending += sign
        if c.opened:
            self.opens_unique += sign
        if c.clicked:
            self.clicks_unique += sign
        if c.complained:
            self.complaints += sign
        if c.awaits_validity_end:
            self.awaiting_validity_end += sign

    def move(self, old: Contribution, new: Contribution) -> None:
        if old != new:
            self.add(old, -1)
            self.add(new, 1)


def pct(numerator: int, denominator: int) -> float:
    """A percentage at full precision; 0 when the denominator is 0."""
    return 100.0 * numerator / denominator if denominator else 0.0


def kpi_figures(counters: KpiCounters, to_deliver: int | None) -> dict[str, Any]:
    """The counter part of a DeliveryKpi record (field names of schemas/delivery_kpi.avsc)."""
    c = counters
    return {
        "processed": c.processed,
        "sent": c.sent,
        "failed": c.failed,
        "pending": c.pending,
        "delivered_pct": pct(c.sent, c.processed),
        "bounces_errors_pct": pct(c.failed, c.processed),
        "opens_unique": c.opens_unique,
        "clicks_unique": c.clicks_unique,
        "opens_total": c.opens_total,
        "clicks_total": c.clicks_total,
        "complaints": c.complaints,
        "failures_by_reason": dict(sorted(c.failures_by_reason.items())),
        "open_rate_pct": pct(c.opens_unique, c.sent),
        "click_through_rate_pct": pct(c.clicks_unique, c.sent),
        "progress_pct": pct(c.processed, to_deliver) if to_deliver is not None else None,
        "confirmations_rejected": c.confirmations_rejected,
    }
