"""Restore a partition store from its changelog records, with the merge its stage supplies.

A stage's merge decides what a record does to the value already restored (overwriting, by default); the
records of one batch are applied in one atomic write together with the position the next restore starts from.
"""

from __future__ import annotations

from collections.abc import Callable

from consumer.state.store import PartitionStore

# The store's offsets entry: the next changelog offset to read. It sits beside the input topics' offsets, named
# by topic: "@" cannot be in a Kafka topic name, so no input can overwrite it (stores before 0.3 used "changelog").
CHANGELOG_OFFSET = "@changelog"
_LEGACY_CHANGELOG_OFFSET = "changelog"

# (key, current value, incoming value) -> the value to keep; None deletes.
Merge = Callable[[bytes, bytes | None, bytes | None], bytes | None]


def overwrite(_key: bytes, _current: bytes | None, incoming: bytes | None) -> bytes | None:
    return incoming


def changelog_position(offsets: dict[str, int], default: int) -> int:
    """Where restore continues reading the changelog, from a store's offsets."""
    return offsets.get(CHANGELOG_OFFSET, offsets.get(_LEGACY_CHANGELOG_OFFSET, default))


def apply_changelog(
    store: PartitionStore, batch: list[tuple[bytes, bytes | None, int]], merge: Merge = overwrite
) -> set[bytes]:
    """Merge (key, value, offset) records into the store. Returns the keys they touched."""
    if not batch:
        return set()
    keys = list({key: None for key, _, _ in batch})
    staged: dict[bytes, bytes | None] = dict(zip(keys, store.get_many(keys), strict=True))
    for key, value, _ in batch:
        current = staged[key]
        staged[key] = value if current is None or current == value else merge(key, current, value)
    store.write(staged, {CHANGELOG_OFFSET: batch[-1][2] + 1})
    return set(keys)
