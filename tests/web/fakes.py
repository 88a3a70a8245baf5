"""Fakes of what the Deployment view reads and writes: KPI records, an owner's state, a publisher."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from consumer.core.status import MessageState
from consumer.ops.exchange import Request
from consumer.web.owner_state import FailedPage, MessageDetail, failed_page, message_detail


def kpi(delivery_id: str, **fields: Any) -> dict[str, Any]:
    """A complete DeliveryKpi record (schemas/delivery_kpi.avsc) with the given fields."""
    record = {
        "delivery_id": delivery_id,
        "state": "SENDING",
        "efs": False,
        "to_deliver": 1000,
        "processed": 0,
        "sent": 0,
        "failed": 0,
        "pending": 0,
        "delivered_pct": 0.0,
        "bounces_errors_pct": 0.0,
        "opens_unique": 0,
        "clicks_unique": 0,
        "opens_total": 0,
        "clicks_total": 0,
        "complaints": 0,
        "failures_by_reason": {},
        "open_rate_pct": 0.0,
        "click_through_rate_pct": 0.0,
        "progress_pct": 0.0,
        "final": False,
        "confirmations_rejected": 0,
        "version": 1,
        "updated_at": 1_795_000_000_000,
    }
    unknown = set(fields) - set(record)
    assert not unknown, unknown
    return record | fields


@dataclass
class FakePublisher:
    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    failing: bool = False

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        from consumer.web.actions import PublishError

        if self.failing:
            raise PublishError("broker down")
        self.records.append((topic, key, value))


@dataclass
class FakeOwnerState:
    """An owner's state as the service would have it: message states per delivery, in message id order."""

    partitions: set[int] = field(default_factory=set)
    messages: dict[str, dict[str, MessageState]] = field(default_factory=dict)
    efs: bool = False
    final: bool = False
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def owned_partitions(self) -> set[int]:
        return set(self.partitions)

    def failed_messages(self, delivery_id: str, after: str | None, limit: int) -> FailedPage:
        self.calls.append(("failed_messages", delivery_id, after, limit))
        ordered = sorted(self.messages.get(delivery_id, {}).items())
        pending = ((m, s) for m, s in ordered if after is None or m > after)
        return failed_page(pending, self.efs, self.final, limit)

    def message(self, delivery_id: str, message_id: str) -> MessageDetail | None:
        state = self.messages.get(delivery_id, {}).get(message_id)
        return None if state is None else message_detail(message_id, state, self.efs, self.final)


def request(
    path: str,
    method: str = "GET",
    query: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> Request:
    return Request(method, path, query or {}, {"host": "view.test", **(headers or {})}, body, "127.0.0.1:5000", False)


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
