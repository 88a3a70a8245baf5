"""One owned partition: its store, the core processor over it, and the input consumed since the checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

from consumer.core.processor import PartitionProcessor
from consumer.state.memory import MemoryStore
from consumer.state.rocksdb import RocksDBStore
from consumer.state.store import PartitionStore
from consumer.state.view import StateView


class PartitionRuntime:
    def __init__(self, partition: int, store: PartitionStore, efs_default: bool) -> None:
        self.partition = partition
        self.store = store
        self._efs_default = efs_default
        self.reset()

    def reset(self) -> None:
        """Forget everything since the last checkpoint: the store holds the committed truth."""
        self.view = StateView(self.store)
        self.processor = PartitionProcessor(self.view, self._efs_default)
        self.consumed: dict[str, int] = {}  # input topic -> next offset, since the last checkpoint


class StoreFactory:
    """Opens partition stores. Memory stores outlive a revoke, so a partition that comes back replays only
    the changelog tail; RocksDB stores are closed on revoke and reopened from disk."""

    def __init__(self, kind: str, state_dir: Path, group_id: str) -> None:
        if kind not in ("memory", "rocksdb"):
            raise ValueError(f"unknown store {kind!r}: memory or rocksdb")
        self.kind = kind
        self._root = state_dir / group_id
        self._memory: dict[int, MemoryStore] = {}

    def open(self, partition: int) -> PartitionStore:
        if self.kind == "memory":
            return self._memory.setdefault(partition, MemoryStore())
        return RocksDBStore(self._root / f"partition-{partition}")

    def release(self, store: PartitionStore) -> None:
        if self.kind == "rocksdb":
            store.close()

    def discard(self, partition: int, store: PartitionStore) -> PartitionStore:
        """Drop a partition's local state (it is stale beyond repair) and return an empty store."""
        if self.kind == "memory":
            self._memory.pop(partition, None)
        else:
            store.close()
            shutil.rmtree(self._root / f"partition-{partition}", ignore_errors=True)
        return self.open(partition)
