"""Keys and values of the state: how core objects are laid out as bytes in a store and its changelog."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from consumer.core.delivery import DeliveryState
from consumer.core.kpi import KpiCounters
from consumer.core.processor import REJECTED_CONFIRMATION
from consumer.core.status import Bounce, MessageState

MESSAGE = b"m\x00"
DELIVERY = b"d\x00"  # a live delivery
ARCHIVED = b"a\x00"  # an archived delivery: its final record, apart so that opening a partition never reads it
COUNTED = b"e\x00"  # MTA events (mta.events) counted once per event id: opens, clicks
# Rejected confirmations (the deliveries topic) counted once per event id. Their ids are chosen by other
# producers than MTA events', so an equal id is a different event: sharing COUNTED's keys lost one count.
REJECTED = b"r\x00"
WATERMARK = b"w"
# The value of a REJECTED key; also of a COUNTED key written before rejections had keys of their own.
REJECTION = REJECTED_CONFIRMATION.encode()
_SEP = b"\x00"


def message_key(delivery_id: str, message_id: str) -> bytes:
    return b"".join((MESSAGE, delivery_id.encode(), _SEP, message_id.encode()))


def messages_prefix(delivery_id: str) -> bytes:
    return b"".join((MESSAGE, delivery_id.encode(), _SEP))


def delivery_key(delivery_id: str) -> bytes:
    return DELIVERY + delivery_id.encode()


def archived_key(delivery_id: str) -> bytes:
    return ARCHIVED + delivery_id.encode()


def counted_key(delivery_id: str, event_id: str) -> bytes:
    return b"".join((COUNTED, delivery_id.encode(), _SEP, event_id.encode()))


def rejected_key(delivery_id: str, event_id: str) -> bytes:
    return b"".join((REJECTED, delivery_id.encode(), _SEP, event_id.encode()))


def counted_prefixes(delivery_id: str) -> tuple[bytes, bytes]:
    """The prefixes of every event of the delivery counted once: engagements, then rejections."""
    return b"".join((COUNTED, delivery_id.encode(), _SEP)), b"".join((REJECTED, delivery_id.encode(), _SEP))


def per_message_prefixes(delivery_id: str) -> tuple[bytes, ...]:
    """Every key of the delivery's message-level state: messages, engagements and rejections counted once."""
    return (messages_prefix(delivery_id), *counted_prefixes(delivery_id))


def split_key(key: bytes) -> tuple[bytes, str, str]:
    """(kind prefix, delivery_id, rest) of a message, counted-event or rejection key."""
    delivery_id, _, rest = key[2:].partition(_SEP)
    return key[:2], delivery_id.decode(), rest.decode()


# Most messages never bounce: their value is just "facts changes"; the rest is JSON, with the address (kept once a
# message soft-bounced) as a sixth element when there is one: records written before it have five.
def encode_message(message: MessageState) -> bytes:
    if message.hard is None and message.soft is None and message.exhausted is None and message.address is None:
        return b"%d %d" % (message.facts, message.changes)
    fields = [message.facts, message.changes, message.hard, message.soft, message.exhausted]
    if message.address is not None:
        fields.append(message.address)
    return json.dumps(fields, separators=(",", ":")).encode()


def decode_message(value: bytes) -> MessageState:
    if value[:1] != b"[":
        facts, changes = value.split()
        return MessageState(int(facts), int(changes))
    facts, changes, hard, soft, exhausted, *address = json.loads(value)
    return MessageState(facts, changes, _bounce(hard), _bounce(soft), _bounce(exhausted), *address)


def _bounce(raw: list[Any] | None) -> Bounce | None:
    return None if raw is None else Bounce(*raw)


def encode_delivery(delivery: DeliveryState) -> bytes:
    data = {f.name: getattr(delivery, f.name) for f in fields(delivery)}
    data["counters"] = {f.name: getattr(delivery.counters, f.name) for f in fields(KpiCounters)}
    return json.dumps(data, separators=(",", ":")).encode()


def decode_delivery(value: bytes) -> DeliveryState:
    data = json.loads(value)
    legacy = data.pop("rejected_event_ids", None)  # before 0.2 the ids were kept in the record, unbounded
    if legacy is not None:
        data["counters"].setdefault("confirmations_rejected", len(legacy))
    data["counters"] = KpiCounters(**data["counters"])
    for rank in ("prepared_rank", "scheduled_rank"):
        if data[rank] is not None:
            data[rank] = tuple(data[rank])
    return DeliveryState(**data)


def delivery_of(key: bytes) -> str | None:
    """The delivery a state key belongs to; None for partition-wide keys."""
    if key.startswith((DELIVERY, ARCHIVED)):
        return key[2:].decode()
    if key.startswith((MESSAGE, COUNTED, REJECTED)):
        return key[2:].partition(_SEP)[0].decode()
    return None
