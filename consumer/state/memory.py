"""In-memory store: fast, lost with the process; restored from the changelog on start."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from consumer.state.store import Changes, PartitionStore


class MemoryStore(PartitionStore):
    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        # A full pass: scans happen only at lifecycle moments and restores, never per event.
        return iter([(k, v) for k, v in self._data.items() if k.startswith(prefix)])

    def read_range(self, prefix: bytes, start: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        # list() copies the dict under the GIL in one step, so a concurrent writer cannot break the pass.
        # A full pass and a sort: pages of a memory store cost O(state); RocksDB seeks.
        items = list(self._data.items())
        return sorted((k, v) for k, v in items if k.startswith(prefix) and k >= start)[:limit]

    def write(self, changes: Changes, offsets: Mapping[str, int]) -> None:
        data = self._data
        for key, value in (*changes.items(), *self.offset_changes(offsets).items()):
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value

    def close(self) -> None:
        self._data = {}

    def approximate_keys(self) -> int:
        return len(self._data)

    def __len__(self) -> int:
        return len(self._data)
