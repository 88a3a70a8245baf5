"""How the delivery stage merges a changelog record into what a restore already has.

Values are merged, not overwritten: a message record only ever learns (facts are a union,
bounces keep the first/last, the change count is a maximum), so applying a record twice,
or a record of a transaction that never committed, can add only facts whose events will be
replayed anyway. Deliveries' counters are then recomputed from their messages after the restore
(`PartitionProcessor.compute_stats`), which makes the restored state exact by construction.
"""

from __future__ import annotations

from collections.abc import Callable

from consumer.core.status import Bounce, MessageState
from consumer.delivery import records


def join_messages(a: MessageState, b: MessageState) -> MessageState:
    return MessageState(
        a.facts | b.facts,
        max(a.changes, b.changes),
        _pick(a.hard, b.hard, min),
        _pick(a.soft, b.soft, max),
        _pick(a.exhausted, b.exhausted, min),
        a.address or b.address,  # one message, one recipient
    )


def _pick(a: Bounce | None, b: Bounce | None, choose: Callable[..., Bounce]) -> Bounce | None:
    if a is None or b is None:
        return a or b
    return choose(a, b, key=lambda bounce: bounce[:3])


def merge(key: bytes, current: bytes | None, incoming: bytes | None) -> bytes | None:
    if current is None or incoming is None:
        return incoming
    if key.startswith(records.MESSAGE):
        joined = join_messages(records.decode_message(current), records.decode_message(incoming))
        return records.encode_message(joined)
    if key.startswith((records.DELIVERY, records.ARCHIVED)):
        older, newer = records.decode_delivery(current), records.decode_delivery(incoming)
        newer.version = max(older.version, newer.version)  # versions never go back
        return records.encode_delivery(newer)
    if key == records.WATERMARK:
        return max(current, incoming, key=int)
    return incoming
