"""Delivery lifecycle: what the back office's events say about a delivery, order-independent.

Every field is either a flag (once seen, stays), a value chosen by a total order on its
events (the latest PREPARED wins), or a maximum, so any arrival order gives the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from consumer.core.events import START_DELIVERIES_ROLE, Event
from consumer.core.kpi import KpiCounters

MISSING_ROLE_REASON = f"missing_role:{START_DELIVERIES_ROLE}"


class Rejection(NamedTuple):
    """A confirmation refused because its actor lacks the Start deliveries role."""

    delivery_id: str
    event_id: str
    actor: str | None
    reason: str
    occurred_at: int


@dataclass(slots=True)
class DeliveryState:
    delivery_id: str
    efs: bool  # effective setting: the PREPARED value, else the service default
    prepared_rank: tuple[int, str] | None = None  # (occurred_at, event_id) of the PREPARED in effect
    to_deliver: int | None = None
    validity_end: int | None = None
    confirmation_required: bool = False
    scheduled_at: int | None = None
    scheduled_rank: tuple[int, str] | None = None
    confirmed: bool = False
    scheduled: bool = False
    cancelled: bool = False
    final: bool = False  # the validity period is over
    # The wall-clock time the service saw it become final: about its validity end for a send processed live, the
    # time it was read for a backlog or a replay. Retention counts from here, so a replay archives nothing early.
    final_at: int | None = None
    archived: bool = False  # final for longer than the retention: message-level state dropped, counters kept
    counters: KpiCounters = field(default_factory=KpiCounters)
    version: int = 0  # of the last published KPI record
    updated_at: int = 0  # latest event time applied

    @property
    def state(self) -> str:
        if self.cancelled:
            return "CANCELLED"
        if self.final:
            return "FINISHED"
        if self.counters.processed:
            return "SENDING"
        if self.scheduled:
            return "SCHEDULED"
        if self.confirmed:
            return "CONFIRMED"
        if self.prepared_rank is None:
            return "UNKNOWN"
        return "AWAITING_CONFIRMATION" if self.confirmation_required else "PREPARED"

    @property
    def ready_to_send(self) -> bool:
        """False while MTA traffic for it is an anomaly: unknown, or awaiting confirmation."""
        if self.prepared_rank is None:
            return False
        return self.confirmed or not self.confirmation_required

    def validity_over_at(self, time_ms: int) -> bool:
        return self.validity_end is not None and time_ms >= self.validity_end


def apply_delivery_event(delivery: DeliveryState, event: Event, efs_default: bool) -> Rejection | bool | None:
    """Apply one lifecycle event. Returns a new Rejection, True if the state changed, else False."""
    kind = event["type"]
    if kind == "PREPARED":
        return _apply_prepared(delivery, event, efs_default)
    if kind == "CONFIRMED":
        return _apply_confirmed(delivery, event)
    if kind == "SCHEDULED":
        changed = not delivery.scheduled
        delivery.scheduled = True
        return _take_scheduled_at(delivery, event) or changed
    if kind == "CANCELLED":
        changed = not delivery.cancelled
        delivery.cancelled = True
        return changed
    raise ValueError(f"unknown delivery event type {kind!r}")


def _apply_prepared(delivery: DeliveryState, event: Event, efs_default: bool) -> bool:
    rank = (event["occurred_at"], event["event_id"])
    if delivery.prepared_rank is not None and rank <= delivery.prepared_rank:
        return False  # a duplicate, or superseded by a later PREPARED
    delivery.prepared_rank = rank
    delivery.to_deliver = event.get("to_deliver")
    efs = event.get("efs")
    delivery.efs = efs_default if efs is None else efs
    delivery.validity_end = event.get("validity_end")
    delivery.confirmation_required = bool(event.get("confirmation_required"))
    _take_scheduled_at(delivery, event)
    return True


def _take_scheduled_at(delivery: DeliveryState, event: Event) -> bool:
    """scheduled_at comes from the latest event that carries one."""
    if event.get("scheduled_at") is None:
        return False
    rank = (event["occurred_at"], event["event_id"])
    if delivery.scheduled_rank is not None and rank <= delivery.scheduled_rank:
        return False
    delivery.scheduled_rank = rank
    delivery.scheduled_at = event["scheduled_at"]
    return True


def _apply_confirmed(delivery: DeliveryState, event: Event) -> Rejection | bool:
    if START_DELIVERIES_ROLE in (event.get("actor_roles") or ()):
        changed = not delivery.confirmed
        delivery.confirmed = True
        return changed
    return Rejection(  # the caller counts it once per event id
        delivery.delivery_id,
        event["event_id"],
        event.get("actor"),
        MISSING_ROLE_REASON,
        event["occurred_at"],
    )
