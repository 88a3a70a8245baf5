"""The core's view of a partition store: decoded objects staged in memory until the checkpoint.

Reads go through a cache of decoded objects; writes only mark keys dirty. `stage()` encodes
each dirty object once, however often it changed since the last checkpoint, and hands the
byte changes to the checkpoint, which writes them to the changelog and the store together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from consumer.core.delivery import DeliveryState
from consumer.core.processor import REJECTED_CONFIRMATION
from consumer.core.status import MessageState
from consumer.delivery import records
from consumer.state.store import PartitionStore


class StateView:
    def __init__(self, store: PartitionStore) -> None:
        self._store = store
        # Keyed by (delivery_id, message_id): the byte key is built only for store reads and at stage().
        self._messages: dict[tuple[str, str], MessageState] = {}
        self._dirty_messages: set[tuple[str, str]] = set()
        self._deliveries: dict[bytes, DeliveryState] = {}
        self._counted: dict[bytes, bytes] = {}  # events counted once per id, by key: their kind
        self._dropped: set[bytes] = set()  # keys of archived deliveries' messages and counted events, to delete
        self._watermark: int | None = None

    @property
    def store(self) -> PartitionStore:
        return self._store

    # -- messages ------------------------------------------------------------------------
    def message(self, delivery_id: str, message_id: str) -> MessageState | None:
        key = (delivery_id, message_id)
        message = self._messages.get(key)
        if message is None:
            value = self._store.get(records.message_key(delivery_id, message_id))
            if value is None:
                return None
            message = self._messages[key] = records.decode_message(value)
        return message

    def put_message(self, delivery_id: str, message_id: str, message: MessageState) -> None:
        key = (delivery_id, message_id)
        self._messages[key] = message
        self._dirty_messages.add(key)

    def messages(self, delivery_id: str) -> Iterator[tuple[str, MessageState]]:
        stored = set()
        for key, value in self._store.scan(records.messages_prefix(delivery_id)):
            message_id = records.split_key(key)[2]
            stored.add(message_id)
            yield message_id, self._messages.get((delivery_id, message_id)) or records.decode_message(value)
        for (owner, message_id), message in list(self._messages.items()):
            if owner == delivery_id and message_id not in stored:
                yield message_id, message

    def message_groups(self, delivery_id: str) -> Iterator[tuple[MessageState, int]]:
        # Most messages share one of a few plain values ("facts changes"): decode each distinct value once.
        staged = {key: message for key, message in self._messages.items() if key[0] == delivery_id}
        stored: Counter[bytes] = Counter()
        for key, value in self._store.scan(records.messages_prefix(delivery_id)):
            if not staged or (delivery_id, records.split_key(key)[2]) not in staged:
                stored[value] += 1
        for value, count in stored.items():
            yield records.decode_message(value), count
        for message in staged.values():
            yield message, 1

    # -- deliveries, engagements, watermark ---------------------------------------------
    def deliveries(self) -> Iterable[DeliveryState]:
        return [records.decode_delivery(v) for _, v in self._store.scan(records.DELIVERY)]

    def put_delivery(self, delivery: DeliveryState) -> None:
        self._deliveries[records.delivery_key(delivery.delivery_id)] = delivery

    def archived(self, delivery_id: str) -> DeliveryState | None:
        staged = self._deliveries.get(records.delivery_key(delivery_id))
        if staged is not None:
            return staged if staged.archived else None
        value = self._store.get(records.archived_key(delivery_id))
        return None if value is None else records.decode_delivery(value)

    def drop_messages(self, delivery_id: str) -> None:
        for prefix in records.per_message_prefixes(delivery_id):
            self._dropped.update(key for key, _ in self._store.scan(prefix))
            for key in [key for key in self._counted if key.startswith(prefix)]:
                del self._counted[key]
        for key in [key for key in self._messages if key[0] == delivery_id]:
            del self._messages[key]
            self._dirty_messages.discard(key)

    def count_once(self, delivery_id: str, event_id: str, kind: str) -> bool:
        # Rejections and engagements have ids from different topics' producers: each kind its own keys.
        legacy = records.counted_key(delivery_id, event_id)  # engagements' key; rejections' one before
        if kind == REJECTED_CONFIRMATION:
            key = records.rejected_key(delivery_id, event_id)
            if key in self._counted or self._store.get(key) is not None or self._store.get(legacy) == records.REJECTION:
                return False
        else:
            key = legacy
            if key in self._counted:
                return False
            stored = self._store.get(key)
            if stored == records.REJECTION:  # a rejection of the old layout holds the key: move it to its own
                self._counted[records.rejected_key(delivery_id, event_id)] = stored
            elif stored is not None:
                return False
        self._counted[key] = kind.encode()
        return True

    def counted(self, delivery_id: str) -> Iterator[str]:
        staged = self._counted
        for prefix in records.counted_prefixes(delivery_id):
            for key, value in self._store.scan(prefix):
                if key not in staged:  # a staged value replaces the stored one (a moved rejection)
                    yield value.decode()
            for key, value in staged.items():
                if key.startswith(prefix):
                    yield value.decode()

    def watermark(self) -> int:
        value = self._store.get(records.WATERMARK)
        return int(value) if value is not None else 0

    def put_watermark(self, watermark: int) -> None:
        self._watermark = watermark

    # -- checkpoint ------------------------------------------------------------------------
    def stage(self) -> dict[bytes, bytes | None]:
        """Encode what changed since the last stage and start afresh."""
        messages, encode = self._messages, records.encode_message
        changes: dict[bytes, bytes | None] = dict.fromkeys(self._dropped)
        changes.update((records.message_key(*key), encode(messages[key])) for key in self._dirty_messages)
        for key, delivery in self._deliveries.items():
            if delivery.archived:  # the live record goes, the archived one stays
                changes[key] = None
                changes[records.archived_key(delivery.delivery_id)] = records.encode_delivery(delivery)
            else:
                changes[key] = records.encode_delivery(delivery)
        changes.update(self._counted)
        if self._watermark is not None:
            changes[records.WATERMARK] = b"%d" % self._watermark
        self._messages.clear()
        self._dirty_messages.clear()
        self._deliveries.clear()
        self._counted.clear()
        self._dropped.clear()
        self._watermark = None
        return changes


def leftovers_of_archived(store: PartitionStore, delivery_id: str) -> list[bytes]:
    """Keys an archived delivery no longer has: its live record, its messages and counted events. A restore keeps
    them if it missed their tombstones: compacted away (after the changelog's delete.retention.ms) while the store
    was offline, or a fenced transaction's records that a broker showed. Empty for a delivery not archived."""
    if store.get(records.archived_key(delivery_id)) is None:
        return []
    keys = [key for prefix in records.per_message_prefixes(delivery_id) for key, _ in store.scan(prefix)]
    live = records.delivery_key(delivery_id)
    return [*keys, live] if store.get(live) is not None else keys
