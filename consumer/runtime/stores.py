"""Opens the partition stores of a stage's named stores: memory or RocksDB, one directory per store and partition.

A store's files live in `<state-dir>/<group>/<name>/partition-<p>`; the default store's in `<group>/partition-<p>`,
where the delivery stage kept its one store before stores had names."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path
from typing import IO

from consumer.runtime.errors import StateFailed
from consumer.state.memory import MemoryStore
from consumer.state.rocksdb import RocksDBStore
from consumer.state.store import PartitionStore, StoreError

DEFAULT_STORE = "default"


class StoreFactory:
    """Opens partition stores. Memory stores outlive a revoke, so a partition that comes back replays only
    the changelog tail; RocksDB stores are closed on revoke and reopened from disk."""

    def __init__(self, kind: str, state_dir: Path, group_id: str) -> None:
        if kind not in ("memory", "rocksdb"):
            raise ValueError(f"unknown store {kind!r}: memory or rocksdb")
        self.kind = kind
        self._root = state_dir / group_id
        self._memory: dict[tuple[str, int], MemoryStore] = {}
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

    def open(self, partition: int, name: str = DEFAULT_STORE) -> PartitionStore:
        if self.kind == "memory":
            return self._memory.setdefault((name, partition), MemoryStore())
        try:
            return RocksDBStore(self._path(partition, name))
        except StoreError as exc:
            raise StateFailed(str(exc)) from None

    def _path(self, partition: int, name: str) -> Path:
        folder = self._root if name == DEFAULT_STORE else self._root / name
        return folder / f"partition-{partition}"

    def release(self, store: PartitionStore) -> None:
        if self.kind == "rocksdb":
            try:
                store.close()
            except StoreError as exc:
                raise StateFailed(str(exc)) from None

    def discard(self, partition: int, store: PartitionStore, name: str = DEFAULT_STORE) -> PartitionStore:
        """Drop a partition's local state (it is stale beyond repair) and return an empty store."""
        if self.kind == "memory":
            self._memory.pop((name, partition), None)
        else:
            store.close()
            shutil.rmtree(self._path(partition, name), ignore_errors=True)
        return self.open(partition, name)
