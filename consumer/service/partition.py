"""A delivery-stage partition: its store, the core processor over it, and where its inputs stand."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path
from typing import IO

from consumer.core.processor import PartitionProcessor
from consumer.service.errors import StateFailed
from consumer.service.stage import PartitionWork
from consumer.state.memory import MemoryStore
from consumer.state.rocksdb import RocksDBStore
from consumer.state.store import PartitionStore, StoreError
from consumer.state.view import StateView


class PartitionRuntime(PartitionWork):
    """A delivery-stage partition: its store and the core processor over it."""

    def __init__(
        self, partition: int, store: PartitionStore, efs_default: bool, retention_ms: int | None = None
    ) -> None:
        self.store = store
        self._efs_default = efs_default
        self._retention_ms = retention_ms
        super().__init__(partition)

    def reset(self) -> None:
        """Forget everything since the last checkpoint: the store holds the committed truth."""
        super().reset()
        self.view = StateView(self.store)
        self.processor = PartitionProcessor(self.view, self._efs_default, self._retention_ms)


class StoreFactory:
    """Opens partition stores. Memory stores outlive a revoke, so a partition that comes back replays only
    the changelog tail; RocksDB stores are closed on revoke and reopened from disk."""

    def __init__(self, kind: str, state_dir: Path, group_id: str) -> None:
        if kind not in ("memory", "rocksdb"):
            raise ValueError(f"unknown store {kind!r}: memory or rocksdb")
        self.kind = kind
        self._root = state_dir / group_id
        self._memory: dict[int, MemoryStore] = {}
        self._lock: IO[str] | None = None

    def prepare(self) -> None:
        """Before joining the group: the state directory must be writable and ours alone."""
        if self.kind == "memory":
            return
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            probe = self._root / ".write-probe"
            with probe.open("w") as out:
                out.write("ok")
                out.flush()
                os.fsync(out.fileno())
            probe.unlink()
            self._lock = (self._root / ".lock").open("a+")
        except OSError as exc:
            raise StateFailed(f"state directory {self._root} is not usable: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise StateFailed(
                f"state directory {self._root} is in use by another sendtrack process (give each instance its own"
                " --state-dir)"
            ) from None

    def open(self, partition: int) -> PartitionStore:
        if self.kind == "memory":
            return self._memory.setdefault(partition, MemoryStore())
        try:
            return RocksDBStore(self._root / f"partition-{partition}")
        except StoreError as exc:
            raise StateFailed(str(exc)) from None

    def release(self, store: PartitionStore) -> None:
        if self.kind == "rocksdb":
            try:
                store.close()
            except StoreError as exc:
                raise StateFailed(str(exc)) from None

    def discard(self, partition: int, store: PartitionStore) -> PartitionStore:
        """Drop a partition's local state (it is stale beyond repair) and return an empty store."""
        if self.kind == "memory":
            self._memory.pop(partition, None)
        else:
            store.close()
            shutil.rmtree(self._root / f"partition-{partition}", ignore_errors=True)
        return self.open(partition)
