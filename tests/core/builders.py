"""Event builders for core tests: the contract's field names, minimal noise."""

from __future__ import annotations

import itertools
from typing import Any

from consumer.core.processor import PartitionProcessor
from consumer.delivery.view import StateView
from consumer.state.memory import MemoryStore

_ids = itertools.count(1)


def mta(delivery_id: str, message_id: str, kind: str, at: int = 1_000, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": fields.pop("event_id", f"mta-{next(_ids)}"),
        "delivery_id": delivery_id,
        "message_id": message_id,
        "type": kind,
        "occurred_at": at,
        "attempt": fields.pop("attempt", 0),
        "reason": fields.pop("reason", None),
        "url": fields.pop("url", None),
        "address": None,
        **fields,
    }


def delivery_event(delivery_id: str, kind: str, at: int = 0, **fields: Any) -> dict[str, Any]:
    event = {
        "event_id": fields.pop("event_id", f"del-{next(_ids)}"),
        "delivery_id": delivery_id,
        "type": kind,
        "occurred_at": at,
    }
    for name in (
        "to_deliver",
        "efs",
        "validity_end",
        "confirmation_required",
        "scheduled_at",
        "actor",
        "actor_roles",
    ):
        event[name] = fields.pop(name, None)
    assert not fields, fields
    return event


def prepared(
    delivery_id: str, efs: bool, to_deliver: int = 10, validity_end: int | None = 1_000_000, **fields: Any
) -> dict[str, Any]:
    return delivery_event(delivery_id, "PREPARED", efs=efs, to_deliver=to_deliver, validity_end=validity_end, **fields)


def processor(efs_default: bool = False) -> PartitionProcessor:
    return PartitionProcessor(StateView(MemoryStore()), efs_default=efs_default)


def kpi_after(events: list[dict[str, Any]], efs_default: bool = False) -> dict[str, Any]:
    """Apply the events in one batch and return the last KPI snapshot of the only delivery."""
    p = processor(efs_default)
    p.apply(events)
    kpis = p.take_output().kpis
    assert len(kpis) == 1, kpis
    return kpis[0]
