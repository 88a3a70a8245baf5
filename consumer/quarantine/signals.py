"""Address signals (schemas/address_signal.avsc): what the delivery stage tells the quarantine about an address."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The key of an address: defined beside the signals the delivery core makes, re-exported for the quarantine's users.
from consumer.core.address_signals import normal_address as normal_address
from consumer.core.events import Fact

HARD_ERROR = "HARD_ERROR"
SOFT_ERROR = "SOFT_ERROR"
IGNORED_ERROR = "IGNORED_ERROR"
# A message that failed when its delivery's validity period ended, after soft bounces: counts as a soft error.
VALIDITY_END_FAILURE = "VALIDITY_END_FAILURE"
DELIVERED = "DELIVERED"
OPEN = "OPEN"
CLICK = "CLICK"
COMPLAINT = "COMPLAINT"
RELEASE = "RELEASE"  # a manual release (`sendtrack quarantine release`, audited): no delivery, no message
FORGET = "FORGET"  # erase the address's state (`sendtrack quarantine forget`, audited): the stage's command

SIGNAL_KINDS = (
    HARD_ERROR,
    SOFT_ERROR,
    IGNORED_ERROR,
    VALIDITY_END_FAILURE,
    DELIVERED,
    OPEN,
    CLICK,
    COMPLAINT,
    RELEASE,
    FORGET,
)

# What each kind says about its message, in the core's terms, so the recipient history reuses the core's status
# rules. A validity-end failure is a soft bounce the retries never got past: RETRIES_EXHAUSTED makes it Failed.
MESSAGE_FACTS: dict[str, int] = {
    HARD_ERROR: int(Fact.HARD_BOUNCE),
    SOFT_ERROR: int(Fact.SOFT_BOUNCE),
    IGNORED_ERROR: int(Fact.IGNORED),
    VALIDITY_END_FAILURE: int(Fact.SOFT_BOUNCE | Fact.RETRIES_EXHAUSTED),
    DELIVERED: int(Fact.DELIVERED),
    OPEN: int(Fact.OPEN),
    CLICK: int(Fact.CLICK),
    COMPLAINT: int(Fact.COMPLAINT),
}


@dataclass(frozen=True, slots=True)
class Signal:
    """One signal; event_id identifies it (a redelivery keeps it), occurred_at is its event time."""

    event_id: str
    kind: str
    occurred_at: int
    delivery_id: str | None = None
    message_id: str | None = None
    reason: str | None = None
    actor: str | None = None  # who gave the command (RELEASE, FORGET)

    def __post_init__(self) -> None:
        if self.kind not in SIGNAL_KINDS:
            raise ValueError(f"unknown signal kind {self.kind!r}")

    @property
    def order(self) -> tuple[int, bool, str]:
        """The total order histories are folded in: event time, then a release after whatever shares its
        millisecond (a release releases what is dated up to it), then the event id, so ties are decided alike
        whatever the arrival order."""
        return (self.occurred_at, self.kind == RELEASE, self.event_id)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Signal:
        """From an AddressSignal record as the codec decodes it (the address is the record's key and field)."""
        return cls(
            record["event_id"],
            record["kind"],
            record["occurred_at"],
            record.get("delivery_id"),
            record.get("message_id"),
            record.get("reason"),
            record.get("actor"),
        )
