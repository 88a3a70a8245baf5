"""Message status rules: a pure function of the facts seen, so arrival order and duplicates don't matter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from consumer.core.events import DELIVERY_PROOF, ENGAGED, RELAY_PROOF, Fact

PENDING = "PENDING"
SENT = "SENT"
FAILED = "FAILED"

_HARD = int(Fact.HARD_BOUNCE)
_SOFT = int(Fact.SOFT_BOUNCE)
_EXHAUSTED = int(Fact.RETRIES_EXHAUSTED)
_CLICK = int(Fact.CLICK)
_COMPLAINT = int(Fact.COMPLAINT)
# Once one of these is seen, the end of the validity period can no longer change the status.
_SETTLED = _HARD | DELIVERY_PROOF | _EXHAUSTED

UNKNOWN_REASON = "unknown"  # a failure whose events gave no reason
OTHER_REASON = "other"  # a reason outside the platform's list
# The platform's failure reasons, the one list: what a bounce event may carry (the ingest classifier's rules use
# exactly these) and, with OTHER_REASON, the keys of a KPI's failures_by_reason. A fixed list keeps the delivery's
# state and KPI record bounded whatever reasons the input invents; sending logs keep the reason as given.
PLATFORM_REASONS: tuple[str, ...] = (
    "user_unknown",
    "invalid_domain",
    "mailbox_full",
    "account_disabled",
    "inactive_mailbox",
    "refused",
    "unreachable",
    "not_connected",
    "text_too_long",
    "invalid_address",
    "denylisted",
    "error_ignored",
    UNKNOWN_REASON,
)
FAILURE_REASONS = frozenset({*PLATFORM_REASONS, OTHER_REASON})


class Bounce(NamedTuple):
    """A bounce event's identity and reason; ordering picks the first hard / last soft bounce."""

    occurred_at: int
    attempt: int
    event_id: str
    reason: str | None


@dataclass(slots=True)
class MessageState:
    """What is known about one message: the union of its facts, and the reasons that matter."""

    facts: int = 0
    changes: int = 0  # status changes so far: numbers the sending-log records deterministically
    hard: Bounce | None = None  # the first hard bounce
    soft: Bounce | None = None  # the last soft bounce
    exhausted: Bounce | None = None  # the first retries-exhausted report
    # The recipient address, kept once the message soft-bounced (and only while address signals are on): the
    # validity end, which no event brings, signals its failure to this address.
    address: str | None = None


def message_status(facts: int, efs: bool, validity_over: bool) -> str | None:
    """The precedence of the status rules; None while the message was never relayed."""
    if not facts & RELAY_PROOF:
        return None
    if facts & _HARD:
        return FAILED
    if facts & DELIVERY_PROOF:
        return SENT
    if facts & _EXHAUSTED or (facts & _SOFT and validity_over):
        return FAILED
    if facts & _SOFT:
        return FAILED if efs else SENT
    return PENDING if efs else SENT


def failure_reason(message: MessageState) -> str:
    for bounce in (message.hard, message.soft, message.exhausted):
        if bounce is not None and bounce.reason:
            return bounce.reason
    return UNKNOWN_REASON


def kpi_reason(reason: str) -> str:
    return reason if reason in FAILURE_REASONS else OTHER_REASON


def awaits_validity_end(facts: int) -> bool:
    """A soft-bounced message not yet settled: the validity end will make it Failed."""
    return bool(facts & _SOFT) and not facts & _SETTLED


class Contribution(NamedTuple):
    """What one message adds to its delivery's KPI counters."""

    status: str | None
    opened: bool
    clicked: bool
    complained: bool
    failure_reason: str | None
    awaits_validity_end: bool


NO_CONTRIBUTION = Contribution(None, False, False, False, None, False)


def contribution(message: MessageState, status: str | None) -> Contribution:
    if status == FAILED:  # the one status whose contribution depends on more than the facts: its reason
        return _contribution(message.facts, status, kpi_reason(failure_reason(message)))
    key = (message.facts, status)
    found = _WITHOUT_REASON.get(key)
    if found is None:
        found = _WITHOUT_REASON[key] = _contribution(message.facts, status, None)
    return found


# Made once each, as the hot path asks for them twice per event: facts have 9 bits, so at most 2,048 entries.
_WITHOUT_REASON: dict[tuple[int, str | None], Contribution] = {}


def _contribution(facts: int, status: str | None, failure_reason: str | None) -> Contribution:
    sent = status == SENT
    return Contribution(
        status,
        sent and bool(facts & ENGAGED),  # a click implies an open
        sent and bool(facts & _CLICK),
        bool(facts & _COMPLAINT),
        failure_reason,
        awaits_validity_end(facts),
    )
