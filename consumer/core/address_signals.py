"""What the delivery core tells the quarantine about a recipient address (schemas/address_signal.avsc).

One signal per significant MTA event that names an address, keyed by the event's id, so a redelivery of the event
says the same again. A message that fails for want of a successful retry (the MTA gave up, or the delivery's
validity period ended after soft bounces) gives one VALIDITY_END_FAILURE whichever way it arises, with an id of
its own: `validity-end:<delivery_id>/<message_id>`.
"""

from __future__ import annotations

from typing import Any

from consumer.core.events import DELIVERY_PROOF, Event, Fact

VALIDITY_END_FAILURE = "VALIDITY_END_FAILURE"
# The signal kind of each MTA event type that says something about its address (RELAYED says nothing;
# RETRIES_EXHAUSTED is the validity-end failure, see retries_over).
SIGNAL_OF_TYPE: dict[str, str] = {
    "HARD_BOUNCE": "HARD_ERROR",
    "SOFT_BOUNCE": "SOFT_ERROR",
    "IGNORED": "IGNORED_ERROR",
    "DELIVERED": "DELIVERED",
    "OPEN": "OPEN",
    "CLICK": "CLICK",
    "COMPLAINT": "COMPLAINT",
}
# Signals of a failure carry its reason; the others carry none.
_WITH_REASON = frozenset({"HARD_ERROR", "SOFT_ERROR", "IGNORED_ERROR"})

_SOFT = int(Fact.SOFT_BOUNCE)
_EXHAUSTED = int(Fact.RETRIES_EXHAUSTED)
_RETRIED = _SOFT | _EXHAUSTED
_SUCCEEDED_OR_HARD = int(Fact.HARD_BOUNCE) | DELIVERY_PROOF


def normal_address(address: str) -> str:
    """The form an address is keyed by: trimmed and case-folded, so `Jane@Example.com` and `jane@example.com` share
    one quarantine (mail systems treat the domain so, and in practice the local part too)."""
    return address.strip().lower()


def address_of(event: Event) -> str | None:
    """The event's recipient address, or None if it names none (absent, empty, or only blanks)."""
    address = event.get("address")
    return address if address and not address.isspace() else None


def retries_over(facts: int, validity_over: bool) -> bool:
    """The message failed for want of a successful retry: soft bounces (or the MTA's report that it gave up) and
    either that report or the end of the validity period, and neither a hard bounce nor a proof of delivery.
    A message's validity-end failure is signalled when this turns true, which happens once whatever the order."""
    if not facts & _RETRIED or facts & _SUCCEEDED_OR_HARD:
        return False
    return bool(facts & _EXHAUSTED) or validity_over


def validity_end_id(delivery_id: str, message_id: str) -> str:
    return f"validity-end:{delivery_id}/{message_id}"


def event_signal(event: Event, kind: str, address: str) -> dict[str, Any]:
    """The AddressSignal record of an MTA event of a kind in SIGNAL_OF_TYPE. `address` as the event gave it: the
    stage publishes it in its normal form."""
    signal_kind = SIGNAL_OF_TYPE[kind]
    return _record(
        event["event_id"],
        signal_kind,
        address,
        event["occurred_at"],
        event["delivery_id"],
        event["message_id"],
        event.get("reason") if signal_kind in _WITH_REASON else None,
    )


def validity_end_signal(
    delivery_id: str, message_id: str, address: str, occurred_at: int, reason: str | None
) -> dict[str, Any]:
    """The AddressSignal record of a message's validity-end failure."""
    return _record(
        validity_end_id(delivery_id, message_id),
        VALIDITY_END_FAILURE,
        address,
        occurred_at,
        delivery_id,
        message_id,
        reason,
    )


def _record(
    event_id: str,
    kind: str,
    address: str,
    occurred_at: int,
    delivery_id: str,
    message_id: str,
    reason: str | None,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "address": address,
        "kind": kind,
        "occurred_at": occurred_at,
        "delivery_id": delivery_id,
        "message_id": message_id,
        "reason": reason,
        "actor": None,
    }
