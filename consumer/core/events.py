"""Event model: the decoded form of the two upstream topics.

Events stay plain dicts with the schema's field names (as fastavro decodes them), so
the hot path allocates nothing more; these names and constants describe them.
"""

from __future__ import annotations

from enum import IntFlag
from typing import Any

Event = dict[str, Any]

DELIVERY_EVENT_TYPES = ("PREPARED", "CONFIRMED", "SCHEDULED", "CANCELLED")
MTA_EVENT_TYPES = (
    "RELAYED",
    "DELIVERED",
    "SOFT_BOUNCE",
    "HARD_BOUNCE",
    "IGNORED",
    "RETRIES_EXHAUSTED",
    "OPEN",
    "CLICK",
    "COMPLAINT",
)

START_DELIVERIES_ROLE = "start_deliveries"


class Fact(IntFlag):
    """One bit per MTA event type seen for a message: a message's facts are their union."""

    RELAYED = 1
    DELIVERED = 2
    SOFT_BOUNCE = 4
    HARD_BOUNCE = 8
    IGNORED = 16
    RETRIES_EXHAUSTED = 32
    OPEN = 64
    CLICK = 128
    COMPLAINT = 256


FACT_OF_TYPE: dict[str, int] = {name: int(Fact[name]) for name in MTA_EVENT_TYPES}

# Any of these proves the message was relayed, so it has a status.
RELAY_PROOF = int(
    Fact.RELAYED
    | Fact.DELIVERED
    | Fact.SOFT_BOUNCE
    | Fact.HARD_BOUNCE
    | Fact.RETRIES_EXHAUSTED
    | Fact.OPEN
    | Fact.CLICK
)
ENGAGED = int(Fact.OPEN | Fact.CLICK)
# Proof the message reached the mailbox: a delivery or engagement.
DELIVERY_PROOF = int(Fact.DELIVERED) | ENGAGED
