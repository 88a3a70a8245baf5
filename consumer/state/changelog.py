"""Restore a partition store from its changelog records, safely even when the log holds surprises.

Values are merged, not overwritten: a message record only ever learns (facts are a union,
bounces keep the first/last, the change count is a maximum), so applying a record twice,
or a record of a transaction that never committed, can add only facts whose events will be
replayed anyway. Deliveries' counters are then recomputed from their messages by the caller
(`PartitionProcessor.compute_stats`), which makes the restored state exact by construction.
"""

from __future__ import annotations

from collections.abc import Callable

from consumer.core.status import Bounce, MessageState
from consumer.state import records
from consumer.state.store import PartitionStore

# The store's offsets entry: the next changelog offset to read. It sits beside the input topics' offsets, named
# by topic: "@" cannot be in a Kafka topic name, so no input can overwrite it (stores before 0.3 used "changelog").
CHANGELOG_OFFSET = "@changelog"
_LEGACY_CHANGELOG_OFFSET = "changelog"


def changelog_position(offsets: dict[str, int], default: int) -> int:
    """Where restore continues reading the changelog, from a store's offsets."""
    return offsets.get(CHANGELOG_OFFSET, offsets.get(_LEGACY_CHANGELOG_OFFSET, default))


def join_messages(a: MessageState, b: MessageState) -> MessageState:
    return MessageState(
        a.facts | b.facts,
        max(a.changes, b.changes),
        _pick(a.hard, b.hard, min),
        _pick(a.soft, b.soft, max),
        _pick(a.exhausted, b.exhausted, min),
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


def apply_changelog(store: PartitionStore, batch: list[tuple[bytes, bytes | None, int]], touched: set[str]) -> int:
    """Merge (key, value, offset) records into the store; add the deliveries they touch. Returns the count."""
    if not batch:
        return 0
    keys = list({key: None for key, _, _ in batch})
    staged: dict[bytes, bytes | None] = dict(zip(keys, store.get_many(keys), strict=True))
    for key, value, _ in batch:
        current = staged[key]
        staged[key] = value if current is None or current == value else merge(key, current, value)
    for key in keys:
        delivery_id = records.delivery_of(key)
        if delivery_id is not None:
            touched.add(delivery_id)
    store.write(staged, {CHANGELOG_OFFSET: batch[-1][2] + 1})
    return len(batch)
