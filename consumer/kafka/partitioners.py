"""The partition librdkafka's key partitioners give a key, as a pure function.

A reader that knows which producer placed a keyed record (and its partitioner) reads one partition instead of the
whole topic: `sendtrack quarantine show` finds an address in address.quarantine so. These hash the key exactly as
librdkafka does (src/rdkafka_msg.c; tests/kafka/test_partitioners.py proves them equal through a real broker):

- consistent, consistent_random: CRC-32 (zlib's) of the key, modulo the partition count;
- murmur2, murmur2_random: Kafka's murmur2 (Java clients' default), its sign bit cleared, modulo the count;
- fnv1a, fnv1a_random: FNV-1a, 32 bits, as a signed int made positive (Sarama's hash partitioner), modulo.

The `_random` variants differ only for keys no hash places: a null key (every partitioner), and an empty key with
consistent_random. Those go to a partition librdkafka draws (sticky), which no function can tell.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from consumer.kafka.config import PARTITIONERS

MASK32 = 0xFFFFFFFF
MURMUR2_SEED = 0x9747B28C
MURMUR2_M = 0x5BD1E995
FNV1A_OFFSET = 0x811C9DC5
FNV1A_PRIME = 0x01000193


def crc32(key: bytes) -> int:
    return zlib.crc32(key) & MASK32


def murmur2(key: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2) as an unsigned 32-bit number."""
    length = len(key)
    h = (MURMUR2_SEED ^ length) & MASK32
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * MURMUR2_M) & MASK32
        k ^= k >> 24
        k = (k * MURMUR2_M) & MASK32
        h = ((h * MURMUR2_M) & MASK32) ^ k
    tail = key[whole:]
    if tail:
        for shift, byte in enumerate(tail):
            h ^= byte << (8 * shift)
        h = (h * MURMUR2_M) & MASK32
    h ^= h >> 13
    h = (h * MURMUR2_M) & MASK32
    return h ^ (h >> 15)


def fnv1a(key: bytes) -> int:
    """librdkafka's FNV-1a: the 32-bit hash read as a signed int and negated when negative (-2**31 stays itself)."""
    h = FNV1A_OFFSET
    for byte in key:
        h = ((h ^ byte) * FNV1A_PRIME) & MASK32
    return (-h) & MASK32 if h & 0x80000000 else h


HASHES: dict[str, Callable[[bytes], int]] = {
    "consistent": crc32,
    "murmur2": lambda key: murmur2(key) & 0x7FFFFFFF,
    "fnv1a": fnv1a,
}


def partition_of(key: bytes | None, partitions: int, partitioner: str) -> int:
    """The partition a producer with this librdkafka `partitioner` gives a record keyed `key`, among `partitions`.

    ValueError for a key that librdkafka places at random (None; empty with consistent_random), an unknown
    partitioner or no partitions.
    """
    if partitioner not in PARTITIONERS:
        raise ValueError(f"unknown partitioner {partitioner!r}; one of {', '.join(PARTITIONERS)}")
    if partitions < 1:
        raise ValueError(f"{partitions} partitions")
    if key is None or (not key and partitioner == "consistent_random"):
        raise ValueError(f"{partitioner} places a {'null' if key is None else 'empty'} key at random")
    return HASHES[partitioner.removesuffix("_random")](key) % partitions
