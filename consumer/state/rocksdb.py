"""RocksDB store (rocksdict), one database per partition under the state directory.

All partitions of a process share one block cache and use small memtables, so memory
stays bounded however many partitions an instance owns (quix-streams PR #1137).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from consumer.state.store import Changes, PartitionStore, StoreError

_MEMTABLE_BYTES = 8 * 1024 * 1024
_shared_cache: Cache | None = None


def _options(cache_bytes: int) -> Options:
    global _shared_cache
    if _shared_cache is None:
        _shared_cache = Cache(cache_bytes)
    table = BlockBasedOptions()
    table.set_block_cache(_shared_cache)
    table.set_bloom_filter(10, False)  # point reads of absent messages skip disk blocks
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(_MEMTABLE_BYTES)
    options.set_max_write_buffer_number(2)
    options.set_block_based_table_factory(table)
    return options


class RocksDBStore(PartitionStore):
    def __init__(self, path: Path, cache_bytes: int = 64 * 1024 * 1024) -> None:
        self.path = path
        self._closing = threading.Lock()
        self._closed = False
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._db = Rdict(str(path), _options(cache_bytes))
        except Exception as exc:  # rocksdict raises plain Exceptions carrying RocksDB's status text
            raise StoreError(f"cannot open RocksDB at {path}: {exc}") from None

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._db.get(key)
        except Exception as exc:  # an I/O error must not pass for a bad event (it would be dead-lettered)
            raise StoreError(f"cannot read RocksDB at {self.path}: {exc}") from None

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        try:
            return self._db.get(keys)  # one multi-get: restores read many keys at once
        except Exception as exc:
            raise StoreError(f"cannot read RocksDB at {self.path}: {exc}") from None

    def scan(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """In key order, from max(prefix, start)."""
        it = self._db.iter()
        it.seek(max(prefix, start))
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            yield key, it.value()
            it.next()

    def write(self, changes: Changes, offsets: Mapping[str, int]) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in (*changes.items(), *self.offset_changes(offsets).items()):
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        try:
            self._db.write(batch)
        except Exception as exc:
            raise StoreError(f"cannot write RocksDB at {self.path}: {exc}") from None

    def read_range(self, prefix: bytes, start: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        with self._closing:  # close() must not pull the database from under a reader of another thread
            if self._closed:
                raise StoreError(f"RocksDB at {self.path} is closed (the partition moved)")
            return list(itertools.islice(self.scan(prefix, start), limit))

    def memory_bytes(self) -> dict[str, int]:
        """RocksDB's own memory: this database's memtables, and the block cache all partitions share."""
        prop = self._db.property_int_value
        return {
            "memtables": int(prop("rocksdb.cur-size-all-mem-tables") or 0),
            "block_cache": int(prop("rocksdb.block-cache-usage") or 0),
        }

    def approximate_keys(self) -> int:
        try:
            return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)
        except Exception as exc:
            raise StoreError(f"cannot read RocksDB at {self.path}: {exc}") from None

    def close(self) -> None:
        with self._closing:
            self._closed = True
            try:
                self._db.close()  # flushes the memtable: a full disk shows here too
            except Exception as exc:
                raise StoreError(f"cannot close RocksDB at {self.path}: {exc}") from None
