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

from consumer.ops.exchange import Request, Response
from consumer.web.owners import (
    FORWARDED_HEADER,
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


# -- against the broker ------------------------------------------------------------------------------------------
class Instance:
    """What an instance's /api/instance says: its URL and the partitions its consumer was assigned."""

    def __init__(self) -> None:
        self.url = ""
        self.partitions: list[int] = []

    def handle(self, incoming: Request) -> Response:
        body = {"url": self.url, "partitions": self.partitions}
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
