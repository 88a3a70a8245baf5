"""Batch apply: one partition's events in, status changes and KPI snapshots out.

The processor keeps every live delivery of its partition in memory and reads messages
through the PartitionState, so KPIs move by deltas and are never rescanned; only the two
lifecycle moments that change many statuses at once (the validity end, a PREPARED that
switches EFS) walk a delivery's messages.

Retention: a delivery final for longer than `retention_ms` (by the same clock that ends
validity periods, counted from when that clock saw it become final) is archived at the next
clock step: its message-level state is deleted, its record keeps the final counters, and it
leaves memory. Later input for it is refused.

Address signals (with `address_signals`): each MTA event the processor applies that names an address gives one
signal (consumer/core/address_signals.py), also one that tells its message nothing new: an older soft bounce read
after a newer one is still an error of its own day to the quarantine, which counts by event time and drops a
redelivery's repeat by its event id. An event of an archived delivery, which is refused, gives none. An event of a
delivery unknown or not confirmed does give one: it is applied like any other (its PREPARED is usually just not read
yet, the two topics are not aligned), and what the MTA saw of the address is true whatever the back office said.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consumer.core.address_signals import (
    SIGNAL_OF_TYPE,
    address_of,
    event_signal,
    retries_over,
    validity_end_signal,
)
from consumer.core.delivery import DeliveryState, Rejection, apply_delivery_event
from consumer.core.events import FACT_OF_TYPE, Event, Fact
from consumer.core.kpi import KpiCounters, kpi_figures
from consumer.core.state_view import PartitionState
from consumer.core.status import (
    FAILED,
    NO_CONTRIBUTION,
    Bounce,
    MessageState,
    awaits_validity_end,
    contribution,
    failure_reason,
    message_status,
)

APPLIED = "applied"
DUPLICATE = "duplicate"  # changed nothing: a redelivery, or a fact already known
REJECTED = "rejected"
ARCHIVED = "archived"  # for a delivery already archived: refused, changes nothing
_SOFT = int(Fact.SOFT_BOUNCE)

REJECTED_CONFIRMATION = "REJECTED_CONFIRMATION"
# Counted once per distinct event id (count_once), by kind: the counter each one adds to.
_COUNTED_TOTAL = {"OPEN": "opens_total", "CLICK": "clicks_total", REJECTED_CONFIRMATION: "confirmations_rejected"}


class ApplyFailed(Exception):
    """Applying the event at `index` of a batch raised: the events before it are applied, so the
    caller must drop the partition's uncommitted state before going on."""

    def __init__(self, index: int, event: Event) -> None:
        super().__init__(f"applying event {index} ({event.get('type')} {event.get('event_id')!r}) failed")
        self.index = index


@dataclass(slots=True)
class Output:
    """What a checkpoint publishes and reports, accumulated since the last take."""

    kpis: list[dict[str, Any]] = field(default_factory=list)
    sending_logs: list[dict[str, Any]] = field(default_factory=list)
    address_signals: list[dict[str, Any]] = field(default_factory=list)  # AddressSignal records, address as given
    rejections: list[Rejection] = field(default_factory=list)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, outcome)
    transitions: Counter[tuple[str | None, str, bool]] = field(default_factory=Counter)
    anomalies: int = 0  # MTA events for a delivery unknown or not confirmed


class PartitionProcessor:
    def __init__(
        self,
        state: PartitionState,
        efs_default: bool = False,
        retention_ms: int | None = None,
        address_signals: bool = False,
    ) -> None:
        self._state = state
        self._efs_default = efs_default
        self._retention_ms = retention_ms  # None: deliveries are never archived
        self._signals = address_signals  # off: no signal is made, no address kept
        self._deliveries = {d.delivery_id: d for d in state.deliveries()}
        self._time = state.watermark()  # max(event-time watermark, wall clock seen)
        self._watermark = self._time
        self._stored_watermark = self._watermark
        self._time_cap: int | None = None
        self._wall: int | None = None  # the latest wall clock seen: when retention starts counting
        self._dirty: set[str] = set()
        self._out = Output()

    # -- input -------------------------------------------------------------------------
    def apply(self, events: Iterable[Event], now_ms: int | None = None) -> None:
        """Apply a batch. now_ms, the wall clock, caps how far event times move time: an event
        dated in the future is applied, but it cannot end validity periods early."""
        self._time_cap = now_ms
        if now_ms is not None:
            self._see_wall(now_ms)
        for index, event in enumerate(events):
            try:
                if "message_id" in event:
                    self._apply_mta(event)
                else:
                    self._apply_delivery(event)
            except Exception as exc:
                raise ApplyFailed(index, event) from exc
        self._advance(self._watermark)

    def advance_clock(self, now_ms: int) -> None:
        """The wall clock: move time forward, ending validity periods and archiving what it passes."""
        self._see_wall(now_ms)
        self._advance(now_ms)

    def _see_wall(self, now_ms: int) -> None:
        self._wall = now_ms if self._wall is None else max(self._wall, now_ms)

    def _advance(self, now_ms: int) -> None:
        """Move time forward (the wall clock, or the watermark) and end validity periods it passes."""
        if now_ms <= self._time:
            return
        self._time = now_ms
        for delivery in self._deliveries.values():
            if not delivery.final and delivery.validity_over_at(now_ms):
                self._sync_final(delivery)
            if self._archive_due(delivery):
                self._archive(delivery)

    def take_sending_logs(self) -> list[dict[str, Any]]:
        """The status changes so far, for a caller that publishes them before the checkpoint."""
        logs, self._out.sending_logs = self._out.sending_logs, []
        return logs

    def take_address_signals(self) -> list[dict[str, Any]]:
        """The address signals so far, for a caller that publishes them before the checkpoint."""
        signals, self._out.address_signals = self._out.address_signals, []
        return signals

    def take_output(self) -> Output:
        """Publish one complete KPI snapshot per changed delivery; reset the accumulators."""
        out, self._out = self._out, Output()
        for delivery_id in sorted(self._dirty):
            delivery = self._deliveries[delivery_id]
            delivery.version += 1
            self._state.put_delivery(delivery)
            out.kpis.append(kpi_record(delivery))
            if delivery.archived:  # its last KPI is out: it leaves memory
                del self._deliveries[delivery_id]
        self._dirty.clear()
        if self._watermark != self._stored_watermark:  # an idle partition stages nothing
            self._state.put_watermark(self._watermark)
            self._stored_watermark = self._watermark
        return out

    # -- queries -----------------------------------------------------------------------
    def delivery(self, delivery_id: str) -> DeliveryState | None:
        """A live delivery (an archived one only until its last KPI is taken)."""
        return self._deliveries.get(delivery_id)

    def delivery_ids(self) -> list[str]:
        return list(self._deliveries)

    @property
    def live_deliveries(self) -> int:
        return len(self._deliveries)

    def archived(self, delivery_id: str) -> DeliveryState | None:
        """The delivery if it is archived: its final counters; input for it is refused."""
        live = self._deliveries.get(delivery_id)
        if live is not None:
            return live if live.archived else None
        return self._state.archived(delivery_id)

    def recompute(self, delivery_id: str) -> KpiCounters:
        """Compute stats: the delivery's counters summed again from its messages' statuses."""
        delivery = self._deliveries[delivery_id]
        counters = KpiCounters()
        for message, count in self._state.message_groups(delivery_id):
            status = message_status(message.facts, delivery.efs, delivery.final)
            counters.add(contribution(message, status), count)
        for kind in self._state.counted(delivery_id):
            _count(counters, kind)
        return counters

    def compute_stats(self, delivery_id: str, publish: bool = True) -> bool | None:
        """Recompute a delivery's counters; adopt them if they differ. None if the delivery is unknown.

        Returns whether the incremental counters matched. A changed delivery is published; so is
        every delivery asked for with publish=True (the compute-stats command). An archived delivery
        has no messages left to sum: its final counters are the answer, republished as they are.
        """
        delivery = self._deliveries.get(delivery_id) or self._state.archived(delivery_id)
        if delivery is None:
            return None
        if delivery.archived:
            if publish:  # back in memory until take_output() has published it
                self._deliveries[delivery_id] = delivery
                self._touch(delivery)
            return True
        recomputed = self.recompute(delivery_id)
        matched = recomputed == delivery.counters
        if not matched:
            delivery.counters = recomputed
        if publish or not matched:
            self._touch(delivery)
        return matched

    # -- rules -------------------------------------------------------------------------
    def _delivery_for(self, delivery_id: str) -> DeliveryState:
        delivery = self._deliveries.get(delivery_id)
        if delivery is None:
            delivery = DeliveryState(delivery_id, efs=self._efs_default)
            self._deliveries[delivery_id] = delivery
        return delivery

    def _touch(self, delivery: DeliveryState) -> None:
        self._dirty.add(delivery.delivery_id)

    def _see_event_time(self, delivery: DeliveryState, occurred_at: int) -> None:
        """updated_at is the latest event time seen for the delivery, whether or not it changed anything."""
        if occurred_at > delivery.updated_at:
            delivery.updated_at = occurred_at
            self._dirty.add(delivery.delivery_id)
        if occurred_at > self._watermark:
            cap = self._time_cap
            self._watermark = occurred_at if cap is None or occurred_at <= cap else max(self._watermark, cap)

    def _refused_as_archived(self, event: Event) -> bool:
        """Input for an archived delivery changes nothing (the service dead-letters it before it gets here)."""
        if self.archived(event["delivery_id"]) is None:
            return False
        self._out.outcomes[event["type"], ARCHIVED] += 1
        return True

    def _archive_due(self, delivery: DeliveryState) -> bool:
        if self._retention_ms is None or not delivery.final:
            return False
        since = delivery.final_at if delivery.final_at is not None else delivery.validity_end  # older records
        return since is not None and self._time >= since + self._retention_ms

    def _archive(self, delivery: DeliveryState) -> None:
        """Drop the message-level state; the record keeps the final counters and its KPI goes out marked."""
        delivery.archived = True
        self._state.drop_messages(delivery.delivery_id)
        self._touch(delivery)

    def _apply_delivery(self, event: Event) -> None:
        if self._refused_as_archived(event):
            return
        delivery = self._delivery_for(event["delivery_id"])
        self._see_event_time(delivery, event["occurred_at"])
        efs_before = delivery.efs
        result = apply_delivery_event(delivery, event, self._efs_default)
        if isinstance(result, Rejection):
            if not self._state.count_once(delivery.delivery_id, event["event_id"], REJECTED_CONFIRMATION):
                self._out.outcomes[event["type"], DUPLICATE] += 1
                return
            _count(delivery.counters, REJECTED_CONFIRMATION)
            self._out.rejections.append(result)
            self._out.outcomes[event["type"], REJECTED] += 1
            self._touch(delivery)
            return
        self._out.outcomes[event["type"], APPLIED if result else DUPLICATE] += 1
        if not result:
            return
        self._touch(delivery)
        if delivery.efs != efs_before:
            self._reevaluate(delivery, efs_before, delivery.final, event)
        self._sync_final(delivery)

    def _apply_mta(self, event: Event) -> None:
        delivery_id = event["delivery_id"]
        delivery = self._deliveries.get(delivery_id)
        if delivery is None or delivery.archived:  # a live delivery, the usual case, needs no look at the archive
            if self._refused_as_archived(event):
                return
            delivery = self._delivery_for(delivery_id)
        kind = event["type"]
        self._see_event_time(delivery, event["occurred_at"])
        out = self._out
        if not delivery.ready_to_send:
            out.anomalies += 1
        engagement_new = kind in _COUNTED_TOTAL and self._state.count_once(delivery_id, event["event_id"], kind)
        if engagement_new:
            _count(delivery.counters, kind)

        message_id = event["message_id"]
        message = self._state.message(delivery_id, message_id)
        if message is None:
            message = MessageState()
        efs, final = delivery.efs, delivery.final
        old_status = message_status(message.facts, efs, final)
        old = contribution(message, old_status) if message.facts else NO_CONTRIBUTION
        facts_before = message.facts
        changed = _learn(message, event, kind) or engagement_new
        if self._signals:
            self._signal_event(delivery, message_id, message, event, facts_before)
        if not changed:
            out.outcomes[kind, DUPLICATE] += 1
            return
        out.outcomes[kind, APPLIED] += 1
        new_status = message_status(message.facts, efs, final)
        delivery.counters.move(old, contribution(message, new_status))
        if new_status != old_status:
            self._log_change(delivery, message_id, message, old_status, new_status, event)
        self._state.put_message(delivery_id, message_id, message)
        self._touch(delivery)

    def _sync_final(self, delivery: DeliveryState) -> None:
        """final follows (validity_end, time); flipping it re-evaluates the soft bounces it decides."""
        final = delivery.validity_over_at(self._time)
        if final == delivery.final:
            return
        delivery.final = final
        # By the wall clock, not the watermark: a backlog read months later (a replay) is kept for the retention
        # from when it was read, so its later events still count, as they did live. Without a wall clock (the
        # core alone), the time it became final.
        seen = self._wall if self._wall is not None else self._time
        delivery.final_at = max(seen, self._time) if final else None
        self._touch(delivery)
        if delivery.counters.awaiting_validity_end:
            self._reevaluate(delivery, delivery.efs, not final, None)

    def _signal_event(
        self, delivery: DeliveryState, message_id: str, message: MessageState, event: Event, facts_before: int
    ) -> None:
        """The signals of an applied MTA event: its own, and the message's validity-end failure if it made one."""
        address = address_of(event)
        if address is not None and message.address is None and message.facts & _SOFT:
            message.address = address  # for the validity end, which brings no event
        kind = event["type"]
        signals = self._out.address_signals
        if address is not None and kind in SIGNAL_OF_TYPE:
            signals.append(event_signal(event, kind, address))
        address = address or message.address
        final = delivery.final
        if address is None or retries_over(facts_before, final) or not retries_over(message.facts, final):
            return
        # The MTA gave up (its report's time), or a soft bounce came after the validity end (the end's time).
        at = event["occurred_at"] if kind == "RETRIES_EXHAUSTED" else delivery.validity_end or event["occurred_at"]
        signals.append(validity_end_signal(delivery.delivery_id, message_id, address, at, _retry_reason(message)))

    def _signal_validity_end(self, delivery: DeliveryState, message_id: str, message: MessageState) -> None:
        """The validity end fails a soft-bounced message nothing else settled."""
        if message.address is not None and awaits_validity_end(message.facts):
            at = delivery.validity_end or self._time
            signal = validity_end_signal(delivery.delivery_id, message_id, message.address, at, _retry_reason(message))
            self._out.address_signals.append(signal)

    def _reevaluate(self, delivery: DeliveryState, efs_before: bool, final_before: bool, cause: Event | None) -> None:
        """Recompute every message's status after a delivery-wide rule input changed."""
        validity_ended = self._signals and delivery.final and not final_before
        for message_id, message in list(self._state.messages(delivery.delivery_id)):
            if validity_ended:
                self._signal_validity_end(delivery, message_id, message)
            old_status = message_status(message.facts, efs_before, final_before)
            new_status = message_status(message.facts, delivery.efs, delivery.final)
            if old_status == new_status:
                continue
            delivery.counters.move(contribution(message, old_status), contribution(message, new_status))
            self._log_change(delivery, message_id, message, old_status, new_status, cause)
            self._state.put_message(delivery.delivery_id, message_id, message)

    def _log_change(
        self,
        delivery: DeliveryState,
        message_id: str,
        message: MessageState,
        old_status: str | None,
        new_status: str,
        cause: Event | None,
    ) -> None:
        message.changes += 1
        self._out.transitions[old_status, new_status, delivery.efs] += 1
        if cause is not None:
            event_id, occurred_at = cause["event_id"], cause["occurred_at"]
        else:  # the validity end did it
            event_id, occurred_at = None, delivery.validity_end or self._time
        self._out.sending_logs.append(
            {
                "log_id": f"{_log_part(delivery.delivery_id)}/{_log_part(message_id)}/{message.changes}",
                "delivery_id": delivery.delivery_id,
                "message_id": message_id,
                "old_status": old_status,
                "new_status": new_status,
                "reason": failure_reason(message) if new_status == FAILED else None,
                "event_id": event_id,
                "occurred_at": occurred_at,
            }
        )


def _count(counters: KpiCounters, kind: str) -> None:
    """One more distinct event of a kind counted once per event id."""
    total = _COUNTED_TOTAL[kind]
    setattr(counters, total, getattr(counters, total) + 1)


def _retry_reason(message: MessageState) -> str | None:
    """The reason of a failure for want of a successful retry: the last soft bounce's, else the MTA's report's."""
    for bounce in (message.soft, message.exhausted):
        if bounce is not None and bounce.reason:
            return bounce.reason
    return None


def _learn(message: MessageState, event: Event, kind: str) -> bool:
    """Add the event's fact (and bounce reason) to the message; False if nothing new was learnt."""
    facts = message.facts | FACT_OF_TYPE[kind]
    learnt = facts != message.facts
    message.facts = facts
    if kind in ("HARD_BOUNCE", "SOFT_BOUNCE", "RETRIES_EXHAUSTED"):
        bounce = Bounce(event["occurred_at"], event.get("attempt") or 0, event["event_id"], event.get("reason"))
        if kind == "HARD_BOUNCE":
            if message.hard is None or bounce[:3] < message.hard[:3]:
                message.hard, learnt = bounce, True
        elif kind == "SOFT_BOUNCE":
            if message.soft is None or bounce[:3] > message.soft[:3]:
                message.soft, learnt = bounce, True
        elif message.exhausted is None or bounce[:3] < message.exhausted[:3]:
            message.exhausted, learnt = bounce, True
    return learnt


def kpi_record(delivery: DeliveryState) -> dict[str, Any]:
    """The DeliveryKpi record (schemas/delivery_kpi.avsc) of a delivery's current state."""
    return {
        "delivery_id": delivery.delivery_id,
        "state": delivery.state,
        "efs": delivery.efs,
        "to_deliver": delivery.to_deliver,
        **kpi_figures(delivery.counters, delivery.to_deliver),
        "final": delivery.final,
        "archived": delivery.archived,
        "version": delivery.version,
        "updated_at": delivery.updated_at,
    }


def _log_part(identifier: str) -> str:
    """An id as a part of a log_id: "%" and the separator "/" escaped (in that order), so different messages never
    share a log_id; an id without either, the usual case, is written as it is."""
    if "/" not in identifier and "%" not in identifier:
        return identifier
    return identifier.replace("%", "%25").replace("/", "%2F")
