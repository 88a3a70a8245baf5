"""The per-partition store interface: bytes in, bytes out; state and input offsets written together."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping

Changes = Mapping[bytes, bytes | None]  # None deletes the key

OFFSETS_PREFIX = b"\x01offset\x00"  # reserved keys, beside the state so one batch writes both


class StoreError(RuntimeError):
    """The store cannot be opened, read or written (full disk, I/O error, lock held): not the data's fault."""


def offset_key(name: str) -> bytes:
    return OFFSETS_PREFIX + name.encode()


class PartitionStore(ABC):
    """One partition's state. `write` is atomic: the changes and the offsets land together or not at all."""

    @abstractmethod
    def get(self, key: bytes) -> bytes | None: ...

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    @abstractmethod
    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with prefix."""

    @abstractmethod
    def read_range(self, prefix: bytes, start: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to `limit` (key, value) pairs with the prefix and key >= start, in key order. Safe to call from
        another thread than the writer's (the Deployment view's pages); StoreError once the store is closed."""

    def read_one(self, key: bytes) -> bytes | None:
        """A key's value through read_range, so safe from another thread than the writer's (the stages' HTTP read
        paths, which want the committed state a store holds: it is written after each commit)."""
        rows = self.read_range(key, key, 1)
        return rows[0][1] if rows and rows[0][0] == key else None

    @abstractmethod
    def write(self, changes: Changes, offsets: Mapping[str, int]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def approximate_keys(self) -> int:
        """How many keys the store holds (RocksDB estimates): what a restore of it would replay."""

    def offsets(self) -> dict[str, int]:
        """The offsets written with the state: input offsets to resume from, the changelog position."""
        return {key[len(OFFSETS_PREFIX) :].decode(): int(value) for key, value in self.scan(OFFSETS_PREFIX)}

    @staticmethod
    def offset_changes(offsets: Mapping[str, int]) -> dict[bytes, bytes]:
        return {offset_key(name): str(offset).encode() for name, offset in offsets.items()}
