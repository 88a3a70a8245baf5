"""Confirm send and Compute stats: who may, what is published, and how refusals are audited."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import ADDRESS_SIGNAL, DELIVERY_EVENT
from consumer.kafka.topics import Topics
from consumer.quarantine.commands import command_signal
from consumer.quarantine.privacy import address_ref
from consumer.quarantine.signals import RELEASE
from consumer.web.actions import Actions, KafkaPublisher, PublishError
from consumer.web.auth import ANONYMOUS, Auth, Identity, WebConfig
from tests.web.fakes import FakePublisher, kpi

TOPICS = Topics.prefixed("t.")
ALICE = Identity("alice", frozenset({"start_deliveries", "viewer"}), "basic")
BOB = Identity("bob", frozenset({"viewer"}), "bearer")
NOBODY = Identity("nobody", frozenset(), "basic")
AWAITING = kpi("d1", state="AWAITING_CONFIRMATION")
EVENTS = AvroCodec.named(DELIVERY_EVENT)


def config() -> WebConfig:
    return WebConfig(None, {"alice": b"$2b$04$" + b"x" * 53}, {}, None, None, None, b"s")  # users: authentication on


@pytest.fixture
def setup() -> tuple[Actions, FakePublisher, CollectorRegistry]:
    publisher, registry = FakePublisher(), CollectorRegistry()
    ids = iter(f"event-{i}" for i in range(100))
    actions = Actions(
        publisher, Auth(config()), registry, TOPICS, clock=lambda: 1_800_000_000.5, new_id=lambda: next(ids)
    )
    return actions, publisher, registry


def denied(registry: CollectorRegistry, action: str, reason: str) -> float:
    return registry.get_sample_value("sendtrack_web_denied_actions_total", {"action": action, "reason": reason}) or 0


def test_a_user_with_the_role_confirms_as_themselves(setup) -> None:
    actions, publisher, registry = setup
    outcome = actions.confirm(ALICE, "d1", AWAITING)
    assert (outcome.status, outcome.event_id) == (202, "event-0")
    [(topic, key, value)] = publisher.records
    assert (topic, key) == ("t.deliveries", b"d1")
    event = EVENTS.decode(value)
    assert {k: event[k] for k in ("event_id", "delivery_id", "type", "occurred_at", "actor", "actor_roles")} == {
        "event_id": "event-0",
        "delivery_id": "d1",
        "type": "CONFIRMED",
        "occurred_at": 1_800_000_000_500,
        "actor": "alice",
        "actor_roles": ["start_deliveries", "viewer"],
    }
    assert registry.get_sample_value("sendtrack_web_actions_total", {"action": "confirm"}) == 1


def test_a_refused_confirmation_is_published_for_the_core_to_record_once_per_user(setup) -> None:
    actions, publisher, registry = setup
    outcomes = [actions.confirm(who, "d1", AWAITING) for who in (BOB, BOB, NOBODY)]
    assert [(o.status, o.reason) for o in outcomes] == [(403, "missing_role")] * 3
    events = [EVENTS.decode(value) for _, _, value in publisher.records]
    assert [(e["actor"], e["actor_roles"]) for e in events] == [("bob", ["viewer"])] * 2 + [("nobody", [])]
    ids = [e["event_id"] for e in events]
    assert ids[0] == ids[1] != ids[2]  # one refusal per (delivery, user) in the core; every attempt counted here
    assert denied(registry, "confirm", "missing_role") == 3
    assert registry.get_sample_value("sendtrack_web_actions_total", {"action": "confirm"}) is None


@pytest.mark.parametrize(
    ("identity", "delivery", "status", "reason"),
    [
        (None, AWAITING, 401, "unauthenticated"),
        (ANONYMOUS, AWAITING, 403, "read_only"),
        (ALICE, None, 404, "unknown_delivery"),
        (ALICE, kpi("d1", state="SENDING"), 409, "not_awaiting_confirmation"),
    ],
)
def test_confirmations_refused_without_publishing(setup, identity, delivery, status, reason) -> None:
    actions, publisher, registry = setup
    outcome = actions.confirm(identity, "d1", delivery)
    assert (outcome.status, outcome.reason) == (status, reason)
    assert publisher.records == []
    assert denied(registry, "confirm", reason) == 1


def test_compute_stats_publishes_the_command_keyed_by_delivery(setup) -> None:
    actions, publisher, registry = setup
    assert actions.compute_stats(BOB, "d1", kpi("d1")).status == 202
    [(topic, key, value)] = publisher.records
    assert (topic, key, json.loads(value)) == (
        "t.sendtrack.control",
        b"d1",
        {"command": "compute-stats", "delivery_id": "d1"},
    )
    assert registry.get_sample_value("sendtrack_web_actions_total", {"action": "compute-stats"}) == 1


@pytest.mark.parametrize(
    ("identity", "delivery", "status", "reason"),
    [
        (None, kpi("d1"), 401, "unauthenticated"),
        (ANONYMOUS, kpi("d1"), 403, "read_only"),
        (NOBODY, kpi("d1"), 403, "missing_role"),
        (BOB, None, 404, "unknown_delivery"),
    ],
)
def test_compute_stats_refusals(setup, identity, delivery, status, reason) -> None:
    actions, publisher, registry = setup
    assert (actions.compute_stats(identity, "d1", delivery).status, publisher.records) == (status, [])
    assert denied(registry, "compute-stats", reason) == 1


def test_an_unacknowledged_action_says_so(setup) -> None:
    actions, publisher, registry = setup
    publisher.failing = True
    outcome = actions.compute_stats(ALICE, "d1", kpi("d1"))
    assert (outcome.status, outcome.reason) == (503, "unavailable")
    assert registry.get_sample_value("sendtrack_web_actions_total", {"action": "compute-stats"}) is None


def test_a_refusal_is_one_structured_log_line(setup) -> None:
    actions, _, _ = setup
    with capture_logs() as lines:
        actions.confirm(BOB, "d1", AWAITING)
    assert [line for line in lines if line["event"] == "web_action_denied"] == [
        {
            "event": "web_action_denied",
            "log_level": "warning",
            "action": "confirm",
            "reason": "missing_role",
            "user": "bob",
            "auth": "bearer",
            "delivery_id": "d1",
        }
    ]


RELEASER = Identity("dave", frozenset({"view_addresses", "release_addresses"}), "basic")
VIEWER = Identity("carol", frozenset({"view_addresses"}), "basic")


def test_a_release_is_the_address_command_of_the_verified_user(setup) -> None:
    actions, publisher, registry = setup
    with capture_logs() as lines:
        outcome = actions.release(RELEASER, " Jane@Example.com")
    assert (outcome.status, outcome.event_id) == (202, "event-0")
    [(topic, key, value)] = publisher.records
    assert (topic, key) == ("t.address.signals", b"jane@example.com")
    assert AvroCodec.named(ADDRESS_SIGNAL).decode(value) == command_signal(
        RELEASE, "jane@example.com", "dave", 1_800_000_000_500, "event-0"
    )
    [line] = [line for line in lines if line["event"] == "web_action"]
    assert line == {
        "event": "web_action",
        "log_level": "info",
        "action": "release",
        "user": "dave",
        "auth": "basic",
        "event_id": "event-0",
        "address_ref": address_ref("jane@example.com"),
    }
    assert registry.get_sample_value("sendtrack_web_actions_total", {"action": "release"}) == 1


@pytest.mark.parametrize(
    ("identity", "status", "reason"),
    [(None, 401, "unauthenticated"), (ANONYMOUS, 403, "read_only"), (VIEWER, 403, "missing_role")],
)
def test_releases_refused_publish_nothing_and_name_the_address_by_its_hash(setup, identity, status, reason) -> None:
    actions, publisher, registry = setup
    with capture_logs() as lines:
        outcome = actions.release(identity, "jane@example.com")
    assert (outcome.status, outcome.reason, publisher.records) == (status, reason, [])
    assert denied(registry, "release", reason) == 1
    [line] = [line for line in lines if line["event"] == "web_action_denied"]
    assert line["address_ref"] == address_ref("jane@example.com") and "jane" not in repr(lines)


def test_a_release_the_quarantine_would_dead_letter_is_refused_here(setup) -> None:
    actions, publisher, registry = setup
    long_name = Identity("x" * 257, frozenset({"release_addresses"}), "bearer")  # a token's subject, unbounded
    outcome = actions.release(long_name, "jane@example.com")
    assert (outcome.status, outcome.reason, publisher.records) == (400, "invalid_field", [])
    assert "actor" in outcome.message and "jane" not in outcome.message
    assert denied(registry, "release", "invalid_field") == 1


def test_an_unacknowledged_release_says_so_without_the_address(setup) -> None:
    actions, publisher, registry = setup
    publisher.failing = True
    with capture_logs() as lines:
        outcome = actions.release(RELEASER, "jane@example.com")
    assert (outcome.status, outcome.reason) == (503, "unavailable")
    assert registry.get_sample_value("sendtrack_web_actions_total", {"action": "release"}) is None
    assert [line["address_ref"] for line in lines] == [address_ref("jane@example.com")] and "jane" not in repr(lines)


def test_the_kafka_publisher_waits_for_the_acknowledgement(kafka) -> None:
    topic = f"web-actions-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    publisher = KafkaPublisher({"bootstrap.servers": kafka.bootstrap_servers})
    publisher.publish(topic, b"d1", b"hello")
    publisher.close()
    reader = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": topic, "enable.auto.commit": False})
    try:
        reader.assign([TopicPartition(topic, 0, 0)])
        msg = reader.poll(10)
        assert msg is not None and msg.error() is None and (msg.key(), msg.value()) == (b"d1", b"hello")
    finally:
        reader.close()


def test_an_unreachable_broker_is_a_publish_error() -> None:
    publisher = KafkaPublisher({"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 500}, timeout_s=2)
    with pytest.raises(PublishError, match="not acknowledged"):
        publisher.publish("anything", b"d1", b"x")
