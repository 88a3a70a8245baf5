"""The commands an operator gives about one address: `sendtrack quarantine release|forget` and the view's Release.

Each is an AddressSignal record (schemas/address_signal.avsc) on address.signals, keyed by the normal address so
it reaches the partition, hence the state, of every other signal of that address. The CLI and the view build it
here alike: a fresh event id per command, the verified user as its actor, no delivery and no message.
"""

from __future__ import annotations

from typing import Any

from consumer.quarantine.signals import FORGET, RELEASE, normal_address

COMMANDS = (RELEASE, FORGET)


def command_key(address: str) -> bytes:
    """The record key of every signal of the address: its normal form, UTF-8."""
    return normal_address(address).encode()


def command_signal(kind: str, address: str, actor: str, occurred_at: int, event_id: str) -> dict[str, Any]:
    """The AddressSignal record of a RELEASE or FORGET given by `actor` at `occurred_at` (epoch millis)."""
    if kind not in COMMANDS:
        raise ValueError(f"not an address command: {kind!r}")
    if not normal_address(address):
        raise ValueError("an address command needs an address")
    if not actor:
        raise ValueError("an address command needs its actor")
    return {
        "event_id": event_id,
        "address": normal_address(address),
        "kind": kind,
        "occurred_at": occurred_at,
        "delivery_id": None,
        "message_id": None,
        "reason": None,
        "actor": actor,
    }
