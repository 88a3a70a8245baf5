"""What the owner of a partition answers about its messages, and the pure helpers that build the answers.

Message-level state lives only with the instance that owns the partition. The service implements
`OwnerState` over its partition state; these helpers keep that implementation a few lines long.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from consumer.core.events import Fact
from consumer.core.status import FAILED, Bounce, MessageState, failure_reason, message_status

PAGE_SCAN_BUDGET = 10_000  # messages looked at for one page: a delivery with few failures never means a full scan


STATUSES = ("PENDING", "SENT", "FAILED")


@dataclass(frozen=True)
class MessageRow:
    message_id: str
    status: str | None  # PENDING, SENT, FAILED; None while never relayed
    reason: str | None  # why it failed
    events: list[str]  # the MTA event types seen
    changes: int  # status changes so far (the sending-log records of this message)


@dataclass(frozen=True)
class MessagePage:
    rows: list[MessageRow]
    next_after: str | None  # the cursor of the next page; None when the delivery's messages are exhausted


@dataclass(frozen=True)
class BounceRow:
    kind: str  # hard, soft, retries_exhausted
    occurred_at: int  # epoch millis
    attempt: int
    reason: str | None


@dataclass(frozen=True)
class MessageDetail:
    message_id: str
    status: str | None  # None while never relayed
    reason: str | None
    facts: list[str]  # the MTA event types seen
    bounces: list[BounceRow]
    changes: int  # status changes so far (the sending-log records of this message)


class OwnerState(Protocol):
    """Message-level queries answered by the instance that owns a partition; safe to call from HTTP threads."""

    def owned_partitions(self) -> set[int]: ...

    def delivery_kpi(self, delivery_id: str) -> dict[str, Any] | None:
        """The last KPI this instance published for a delivery it owns; None otherwise."""
        ...

    def messages(self, delivery_id: str, status: str | None, after: str | None, limit: int) -> MessagePage:
        """Messages in `status` (any when None) with message id > after, in message id order."""
        ...

    def message(self, delivery_id: str, message_id: str) -> MessageDetail | None: ...


def status_page(
    messages: Iterable[tuple[str, MessageState]],
    efs: bool,
    validity_over: bool,
    status: str | None,
    limit: int,
    budget: int = PAGE_SCAN_BUDGET,
) -> MessagePage:
    """One page of messages in `status` (any when None) from (message_id, state) pairs in id order, starting
    after the cursor. Stops after `budget` messages even with fewer than `limit` rows: the page then says where
    to go on."""
    rows: list[MessageRow] = []
    for seen, (message_id, message) in enumerate(messages, 1):
        current = message_status(message.facts, efs, validity_over)
        if status in (None, current):
            reason = failure_reason(message) if current == FAILED else None
            rows.append(MessageRow(message_id, current, reason, _events(message), message.changes))
        if len(rows) == limit or seen == budget:
            return MessagePage(rows, message_id)
    return MessagePage(rows, None)


def message_detail(message_id: str, message: MessageState, efs: bool, validity_over: bool) -> MessageDetail:
    status = message_status(message.facts, efs, validity_over)
    return MessageDetail(
        message_id,
        status,
        failure_reason(message) if status == FAILED else None,
        _events(message),
        _bounces(message),
        message.changes,
    )


def _events(message: MessageState) -> list[str]:
    return [fact.name for fact in Fact if message.facts & fact]


def _bounces(message: MessageState) -> list[BounceRow]:
    kinds: list[tuple[str, Bounce | None]] = [
        ("hard", message.hard),
        ("soft", message.soft),
        ("retries_exhausted", message.exhausted),
    ]
    rows = [BounceRow(kind, b.occurred_at, b.attempt, b.reason) for kind, b in kinds if b is not None]
    return sorted(rows, key=lambda row: row.occurred_at)
