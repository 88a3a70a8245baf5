"""Owner routing: the client.id encoding, the cached map, forwarding, and the owners on a real broker."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.kafka.partitioners import partition_of
from consumer.ops.exchange import Request, Response
from consumer.web.owners import (
    ADDRESS_PARTITIONS,
    FORWARDED_HEADER,
    KeyPartitions,
    Owners,
    advertised_url_of,
    client_id_for,
    dns_peers,
    first_answer,
    forward,
    group_lookup,
    is_routed,
    peer_lookup,
    redirect,
    static_peers,
    topic_partition_count,
)
from tests.web.fakes import Recorder, request
from tests.web.serving import serve


def test_a_client_id_carries_the_advertised_url_and_gives_it_back() -> None:
    client_id = client_id_for("http://10.0.0.5:8080/")
    assert client_id == "sendtrack@http://10.0.0.5:8080"
    assert advertised_url_of(client_id) == "http://10.0.0.5:8080"
    assert advertised_url_of(client_id_for("https://[::1]:8443")) == "https://[::1]:8443"


@pytest.mark.parametrize("client_id", ["sendtrack", "rdkafka", "sendtrack@ftp://h:1", "sendtrack@http://h:1/x", ""])
def test_other_client_ids_name_no_url(client_id: str) -> None:
    assert advertised_url_of(client_id) is None


def test_only_a_base_url_can_be_advertised() -> None:
    with pytest.raises(ValueError):
        client_id_for("10.0.0.5:8080")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_map_is_cached_and_a_miss_refreshes_it_at_most_once_a_second() -> None:
    answers = [{0: "http://a:1"}, {0: "http://a:1", 1: "http://b:1"}, {1: "http://b:1"}]
    calls = []

    def lookup() -> dict[int, str]:
        calls.append(1)
        return answers[min(len(calls) - 1, len(answers) - 1)]

    clock = Clock()
    owners = Owners(lookup, ttl_s=5.0, clock=clock)
    assert owners.owner_of(0) == "http://a:1"
    assert owners.owner_of(1) is None  # a miss, but the map is fresh: no second lookup yet
    assert len(calls) == 1
    clock.now = 1.5
    assert owners.owner_of(1) == "http://b:1"  # the miss refreshes
    assert owners.owner_of(0) == "http://a:1"  # cached
    assert len(calls) == 2
    clock.now = 7.0
    assert owners.owner_of(0) is None  # stale after the ttl: refreshed
    owners.invalidate()
    owners.owner_of(1)
    assert len(calls) == 4


def test_the_first_lookup_that_knows_an_owner_answers() -> None:
    def broken() -> dict[int, str]:
        raise RuntimeError("broker unreachable")

    lookup = first_answer(broken, dict, lambda: {3: "http://c:1"}, lambda: {3: "http://never:1"})
    assert lookup() == {3: "http://c:1"}
    assert first_answer(broken, dict)() == {}


def test_a_forwarded_request_reaches_the_owner_marked_and_its_answer_comes_back() -> None:
    owner = Recorder(Response(200, b'{"ok": 1}', "application/json", [("X-Owner", "yes")]))
    with serve(owner) as url:
        incoming = request(
            "/api/deliveries/d 1/failed", query={"after": ["m/5"]}, headers={"authorization": "Basic abc"}
        )
        answer = forward(incoming, url)
    assert (answer.status, answer.body, answer.content_type) == (200, b'{"ok": 1}', "application/json")
    assert ("X-Owner", "yes") in answer.headers
    [seen] = owner.requests
    assert seen.path == "/api/deliveries/d 1/failed" and seen.query == {"after": ["m/5"]}
    assert seen.headers["authorization"] == "Basic abc" and is_routed(seen)


def test_the_owners_redirects_and_errors_come_back_unfollowed() -> None:
    owner = Recorder(Response(302, b"", "text/plain", [("Location", "/elsewhere")]))
    with serve(owner) as url:
        assert forward(request("/x"), url).status == 302
        owner.response = Response(503, b"{}", "application/json")
        assert forward(request("/x"), url).status == 503
    assert len(owner.requests) == 2


def test_an_unreachable_owner_raises_oserror() -> None:
    with serve(Recorder(Response(200))) as url:
        pass
    with pytest.raises(OSError):
        forward(request("/x"), url, timeout_s=2)


def test_a_redirect_is_marked_routed_so_the_owner_answers_it() -> None:
    answer = redirect(request("/deliveries/a b", query={"after": ["m1"]}), "http://owner:8080")
    assert answer.status == 307
    assert dict(answer.headers)["Location"] == "http://owner:8080/deliveries/a%20b?after=m1&routed=1"
    assert is_routed(request("/x", query={"routed": ["1"]}))
    assert is_routed(request("/x", headers={FORWARDED_HEADER: "1"}))
    assert not is_routed(request("/x"))


def test_peers_come_from_a_list_or_a_name() -> None:
    assert static_peers(["http://a:1/", "http://b:2"])() == ["http://a:1", "http://b:2"]
    assert "http://127.0.0.1:8080" in dns_peers("localhost", 8080)()


def test_peers_list_the_partitions_of_either_group() -> None:
    instance = Instance()
    instance.partitions, instance.address_partitions = [0, 2], [1]
    with serve(instance) as url:
        instance.url = url
        assert peer_lookup(static_peers([url]))() == {0: url, 2: url}
        assert peer_lookup(static_peers([url]), field=ADDRESS_PARTITIONS)() == {1: url}


def test_a_key_s_partition_is_the_producers_and_the_count_is_asked_again_after_a_while() -> None:
    clock, counts = Clock(), iter([4, 8])
    asked: list[int] = []

    def partition_count() -> int:
        asked.append(count := next(counts))
        return count

    partitions = KeyPartitions(partition_count, "murmur2_random", ttl_s=60.0, clock=clock)
    assert partitions.of(b"jane@example.com") == partition_of(b"jane@example.com", 4, "murmur2")
    clock.now = 60.0
    partitions.of(b"x")
    assert asked == [4]  # within the ttl: asked once
    clock.now = 60.5
    assert partitions.of(b"jane@example.com") == partition_of(b"jane@example.com", 8, "murmur2")
    assert asked == [4, 8]


def test_a_partition_count_that_cannot_be_known_is_asked_again_next_time() -> None:
    answers: list[int | None] = [None, 3]

    def partition_count() -> int:
        answer = answers.pop(0)
        if answer is None:
            raise LookupError("no such topic")
        return answer

    partitions = KeyPartitions(partition_count, "consistent")
    with pytest.raises(LookupError):
        partitions.of(b"k")
    assert partitions.of(b"k") == partition_of(b"k", 3, "consistent")


# -- against the broker ------------------------------------------------------------------------------------------
class Instance:
    """What an instance's /api/instance says: its URL and the partitions its consumer was assigned."""

    def __init__(self) -> None:
        self.url = ""
        self.partitions: list[int] = []
        self.address_partitions: list[int] = []

    def handle(self, incoming: Request) -> Response:
        body = {"url": self.url, "partitions": self.partitions, "address_partitions": self.address_partitions}
        return Response(200, json.dumps(body).encode())


@contextmanager
def two_instances(bootstrap: str, group: str, topic: str) -> Iterator[tuple[list[Instance], list[Consumer]]]:
    with ExitStack() as stack:
        instances = [Instance(), Instance()]
        consumers = []
        for instance in instances:
            instance.url = stack.enter_context(serve(instance))
            consumer = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": group,
                    "client.id": client_id_for(instance.url),
                    "partition.assignment.strategy": "range",
                    "session.timeout.ms": 6000,
                }
            )
            stack.callback(consumer.close)
            consumer.subscribe([topic])
            consumers.append(consumer)
        yield instances, consumers


def test_the_owner_of_every_partition_is_found_from_the_group_or_the_peers(kafka) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    topic, group = f"web-owners-{uuid.uuid4().hex[:8]}", f"web-owners-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result()
    with two_instances(kafka.bootstrap_servers, group, topic) as (instances, consumers):
        deadline = time.monotonic() + 60
        while sum(len(c.assignment()) for c in consumers) < 4 or not all(c.assignment() for c in consumers):
            assert time.monotonic() < deadline, "the group never settled"
            for consumer in consumers:
                consumer.poll(0.1)
        expected = {}
        for instance, consumer in zip(instances, consumers, strict=True):
            instance.partitions = [tp.partition for tp in consumer.assignment()]
            expected.update((p, instance.url) for p in instance.partitions)
        # Apache Kafka describes the members with their client ids and assignments (Tansu 0.6.0 describes none,
        # which is what the peers are for).
        assert group_lookup(admin, group, topic)() == expected
        lookup = first_answer(group_lookup(admin, group, topic), peer_lookup(static_peers(i.url for i in instances)))
        assert lookup() == expected
        owners = Owners(lookup)
        assert {p: owners.owner_of(p) for p in range(4)} == expected


def test_a_topic_s_partition_count_comes_from_the_metadata(kafka) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    topic = f"web-keyed-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 7, 1)])[topic].result()
    assert topic_partition_count(admin, topic)() == 7
    with pytest.raises(LookupError):
        topic_partition_count(admin, f"{topic}-absent")()
