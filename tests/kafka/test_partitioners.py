"""The pure partitioners give the partition librdkafka gives: known hash vectors, and keyed records produced
through the real broker with each partitioner."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.kafka.config import PARTITIONERS
from consumer.kafka.partitioners import crc32, fnv1a, murmur2, partition_of

PARTITION_COUNTS = (7, 32)  # a prime, so every bit of the hash shows; and a power of two
TOPIC = "partitioners-{}"


def test_murmur2_gives_the_java_client_s_hashes() -> None:
    # librdkafka's unit test vectors (rdmurmur2.c), taken from Java's Utils.murmur2 with the sign bit cleared.
    vectors = {b"kafka": 1348980580, b"amqp": 767747138, b"giberish123456789": 257239820}
    assert {key: murmur2(key) & 0x7FFFFFFF for key in vectors} == vectors
    assert murmur2(b"kafka") == 1348980580 | 0x80000000  # Java: -798503068


def test_fnv1a_gives_librdkafka_s_hashes() -> None:
    # librdkafka's unit test vectors (rdfnv1a.c), taken from Go's hash/fnv and Sarama's abs().
    unaligned = b"PreAmbleWillBeRemoved,ThePrePartThatIs"
    vectors = {
        b"kafka": 0xD33C4E1,
        b"giberish123456789": 0x77A58295,
        b"1234": 0x23BDD03,
        b"234": 0x2DEA3CD2,
        b"34": 0x740FA83E,
        b"4": 0x310CA263,
        unaligned: 0x65CBD69C,
        unaligned[1:]: 0x6E49C79A,
        unaligned[2:]: 0x69EED356,
        unaligned[3:]: 0x6ABCC023,
        b"": 0x7EE3623B,
    }
    assert {key: fnv1a(key) for key in vectors} == vectors


def test_crc32_is_the_standard_crc() -> None:
    assert crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value
    assert partition_of(b"123456789", 7, "consistent") == 0xCBF43926 % 7


@given(key=st.binary(min_size=1, max_size=64), partitions=st.integers(1, 10_000))
def test_a_random_variant_places_a_key_as_its_plain_partitioner(key: bytes, partitions: int) -> None:
    for name in ("consistent", "murmur2", "fnv1a"):
        placed = partition_of(key, partitions, name)
        assert 0 <= placed < partitions
        assert partition_of(key, partitions, f"{name}_random") == placed


def test_keys_librdkafka_places_at_random_are_refused() -> None:
    for name in PARTITIONERS:
        with pytest.raises(ValueError, match="null key at random"):
            partition_of(None, 3, name)
    with pytest.raises(ValueError, match="empty key at random"):
        partition_of(b"", 3, "consistent_random")
    assert partition_of(b"", 3, "consistent") == 0  # CRC-32 of nothing
    with pytest.raises(ValueError, match="unknown partitioner"):
        partition_of(b"a", 3, "random")
    with pytest.raises(ValueError, match="0 partitions"):
        partition_of(b"a", 0, "consistent")


class Placer:
    """A producer per partitioner: where librdkafka puts each key, from its delivery reports."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._producers = {
            name: Producer({"bootstrap.servers": bootstrap_servers, "partitioner": name, "linger.ms": 0})
            for name in PARTITIONERS
        }

    def partitions(self, partitioner: str, topic: str, keys: list[bytes]) -> list[int]:
        placed: dict[int, int] = {}
        producer = self._producers[partitioner]
        for index, key in enumerate(keys):
            producer.produce(topic, b"", key, on_delivery=self._reporter(placed, index))
        assert producer.flush(30) == 0
        return [placed[index] for index in range(len(keys))]

    @staticmethod
    def _reporter(placed: dict[int, int], index: int) -> Callable[[KafkaError | None, Message], None]:
        def report(error: KafkaError | None, message: Message) -> None:
            assert error is None, error
            placed[index] = message.partition()

        return report

    def close(self) -> None:
        for producer in self._producers.values():
            producer.flush(10)
        self._producers.clear()  # destroyed now, not after the broker stops (reconnect log lines)


@pytest.fixture(scope="module")
def placer(kafka) -> Iterator[Placer]:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    futures = admin.create_topics([NewTopic(TOPIC.format(count), count) for count in PARTITION_COUNTS])
    for future in futures.values():
        future.result(10)
    placer = Placer(kafka.bootstrap_servers)
    yield placer
    placer.close()


ADDRESS_LIKE = st.emails().map(str.encode)  # the quarantine's keys
ANY_BYTES = st.binary(min_size=1, max_size=40)  # every tail length, bytes with the high bit set


@settings(max_examples=25, deadline=None)
@given(keys=st.lists(st.one_of(ADDRESS_LIKE, ANY_BYTES, st.text(min_size=1).map(str.encode)), min_size=1, max_size=40))
def test_librdkafka_puts_each_key_where_partition_of_says(placer: Placer, keys: list[bytes]) -> None:
    for count in PARTITION_COUNTS:
        for name in PARTITIONERS:
            expected = [partition_of(key, count, name) for key in keys]
            assert placer.partitions(name, TOPIC.format(count), keys) == expected, name


def test_librdkafka_hashes_an_empty_key_except_with_consistent_random(placer: Placer) -> None:
    for name in PARTITIONERS:
        if name != "consistent_random":
            assert placer.partitions(name, TOPIC.format(7), [b""]) == [partition_of(b"", 7, name)], name
