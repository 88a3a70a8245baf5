"""Restore a partition store from its changelog records, with the merge its stage supplies.

Every record carries, in a header, the input offsets of the checkpoint its change came from (the offsets that
checkpoint commits). A record whose offsets are beyond what the group committed comes from a checkpoint that never
committed (at-least-once: produced, then the commit failed or the process died; exactly-once: an aborted
transaction a reader should not see anyway) and is skipped, as Quix Streams does: its input is processed again.
A stage's merge then decides what a record does to the value already restored (overwriting, by default); the
records of one batch are applied in one atomic write together with the position the next restore starts from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from consumer.state.store import PartitionStore

# The store's offsets entry: the next changelog offset to read. It sits beside the input topics' offsets, named
# by topic: "@" cannot be in a Kafka topic name, so no input can overwrite it (stores before 0.3 used "changelog").
CHANGELOG_OFFSET = "@changelog"
_LEGACY_CHANGELOG_OFFSET = "changelog"
INPUT_OFFSETS_HEADER = "sendtrack.input.offsets"

# (key, current value, incoming value) -> the value to keep; None deletes.
Merge = Callable[[bytes, bytes | None, bytes | None], bytes | None]
Headers = Sequence[tuple[str, bytes]]


class ChangelogRecord(NamedTuple):
    key: bytes
    value: bytes | None
    offset: int
    origin: Mapping[str, int] | None = None  # input topic -> next offset of the change's checkpoint; None: unstamped


class Applied(NamedTuple):
    touched: set[bytes]  # the keys the applied records changed
    skipped: int  # records from checkpoints that never committed


def overwrite(_key: bytes, _current: bytes | None, incoming: bytes | None) -> bytes | None:
    return incoming


def changelog_position(offsets: dict[str, int], default: int) -> int:
    """Where restore continues reading the changelog, from a store's offsets."""
    return offsets.get(CHANGELOG_OFFSET, offsets.get(_LEGACY_CHANGELOG_OFFSET, default))


def stamp(consumed: Mapping[str, int]) -> list[tuple[str, bytes]]:
    """The header of a checkpoint's changelog records: the input offsets that checkpoint commits."""
    return [(INPUT_OFFSETS_HEADER, json.dumps(dict(sorted(consumed.items())), separators=(",", ":")).encode())]


def origin_of(headers: Headers | None) -> dict[str, int] | None:
    """The input offsets a record was stamped with; None for records written before stamping."""
    for name, value in headers or ():
        if name == INPUT_OFFSETS_HEADER:
            return {str(topic): int(offset) for topic, offset in json.loads(value).items()}
    return None


def was_committed(origin: Mapping[str, int] | None, committed: Mapping[str, int]) -> bool:
    """Whether the checkpoint a record came from committed: the group is at or past every offset it stamped."""
    return origin is None or all(committed.get(topic, -1) >= offset for topic, offset in origin.items())


def apply_changelog(
    store: PartitionStore,
    batch: Sequence[ChangelogRecord],
    merge: Merge = overwrite,
    committed: Mapping[str, int] | None = None,
) -> Applied:
    """Merge the records into the store, skipping those from checkpoints beyond `committed` (the group's committed
    input offsets; None checks nothing). The position moves past every record, skipped ones included."""
    if not batch:
        return Applied(set(), 0)
    kept = [r for r in batch if committed is None or was_committed(r.origin, committed)]
    keys = list({record.key: None for record in kept})
    staged: dict[bytes, bytes | None] = dict(zip(keys, store.get_many(keys), strict=True))
    for key, value, _, _ in kept:
        current = staged[key]
        staged[key] = value if current is None or current == value else merge(key, current, value)
    store.write(staged, {CHANGELOG_OFFSET: batch[-1].offset + 1})
    return Applied(set(keys), len(batch) - len(kept))
