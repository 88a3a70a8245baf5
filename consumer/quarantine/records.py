"""The AddressStatus record (schemas/address_status.avsc) of an address's state at a time."""

from __future__ import annotations

from typing import Any

from consumer.quarantine.history import MessageEntry
from consumer.quarantine.rules import Rules, Standing, next_change_at, status_of
from consumer.quarantine.signals import Signal
from consumer.quarantine.state import AddressState


def status_record(state: AddressState, now: int, rules: Rules) -> dict[str, Any]:
    """What address.quarantine holds for the address at `now` (the stage's clock)."""
    standing = state.standing(rules)
    status, error_count, decision = status_of(standing, now, rules)
    return {
        "address": state.address,
        "status": status,
        "error_count": error_count,
        "reason": decision.reason if decision else None,
        "since": decision.since if decision else None,
        "rule": decision.rule if decision else None,
        "decided_by": _deciding(decision.signal) if decision else None,
        "next_change_at": _next_change(standing, now, rules),
        "updated_at": state.last_seen or 0,
        "history": [_message(entry) for entry in state.history.latest()],
    }


def _next_change(standing: Standing, now: int, rules: Rules) -> int | None:
    due = next_change_at(standing, rules)
    # A change already due has happened in `status`; after it the counter is zero, so nothing more is due.
    return due if due is not None and due > now else None


def _deciding(signal: Signal | None) -> dict[str, Any] | None:
    if signal is None:
        return None
    return {
        "event_id": signal.event_id,
        "kind": signal.kind,
        "occurred_at": signal.occurred_at,
        "delivery_id": signal.delivery_id,
        "message_id": signal.message_id,
    }


def _message(entry: MessageEntry) -> dict[str, Any]:
    return {
        "delivery_id": entry.delivery_id,
        "message_id": entry.message_id,
        "status": entry.status,
        "occurred_at": entry.first_at,
        "updated_at": entry.last_at,
        "opened": entry.opened,
        "clicked": entry.clicked,
    }
