"""The quarantine stage as users run it (`sendtrack run --quarantine`) against the test broker: AddressSignal records
in, address.quarantine out as the rules say; exact through kill -9; and through both stages, from MTA events that
name addresses."""

from __future__ import annotations

import random
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import ADDRESS_SIGNAL, ADDRESS_STATUS, DELIVERY_EVENT, MTA_EVENT
from consumer.kafka.admin import ADDRESS_SIGNALS, COMPACTED, ensure_topics, partition_counts
from consumer.kafka.producer import produce_waiting
from consumer.ops import logging as logs
from consumer.ops.metrics import Metrics
from consumer.quarantine.rules import DAY_MS, DENYLISTED, ERRONEOUS, QUARANTINED, VALID
from consumer.quarantine.signals import Signal, normal_address
from consumer.quarantine.stage import QuarantineStage
from consumer.runtime.errors import StartupError
from consumer.runtime.settings import Settings
from tests.core.builders import mta, prepared
from tests.quarantine.builders import new_processor
from tests.runtime.exactness import log_events
from tests.runtime.harness import Pipeline, free_port, http_get, stop, wait_http

SIGNALS = AvroCodec.named(ADDRESS_SIGNAL)
STATUSES = AvroCodec.named(ADDRESS_STATUS)
HOUR_MS = 3_600_000


def signal_record(address: str, kind: str, at: int, event_id: str, **fields: Any) -> dict[str, Any]:
    command = kind in ("RELEASE", "FORGET")
    return {
        "event_id": event_id,
        "address": address,
        "kind": kind,
        "occurred_at": at,
        "delivery_id": None if command else fields.get("delivery_id", "d1"),
        "message_id": None if command else fields.get("message_id", f"m-{event_id}"),
        "reason": fields.get("reason"),
        "actor": "ops" if command else None,
    }


def produce_signals(pipeline: Pipeline, records: list[dict[str, Any]]) -> None:
    """Keyed by the normal address and placed by librdkafka's default partitioner, as the producers of signals do."""
    producer = Producer({"bootstrap.servers": pipeline.bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for record in records:
        key = normal_address(record["address"]).encode()
        produce_waiting(producer, pipeline.topics.address_signals, SIGNALS.encode(record), key)
    assert producer.flush(30) == 0


def published(pipeline: Pipeline) -> dict[str, dict[str, Any] | None]:
    """address.quarantine as a compacted reader ends up with it: the latest value of each address."""
    latest: dict[str, dict[str, Any] | None] = {}
    for _partition, _offset, key, value, _headers in pipeline.read_all(pipeline.topics.address_quarantine):
        latest[key.decode()] = None if value is None else STATUSES.decode(value)
    return latest


def wait_for(pipeline: Pipeline, expected: dict[str, Any], process: Any, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        latest = published(pipeline)
        if latest == expected or time.monotonic() > deadline:
            return latest
        assert process.poll() is None, f"the service exited with {process.returncode}"
        time.sleep(0.5)


def gauge(port: int) -> dict[str, float]:
    text = http_get(port, "/metrics")[1].decode()
    return {s: float(n) for s, n in re.findall(r'sendtrack_quarantine_addresses\{status="(\w+)"\} (\S+)', text)}


def wait_for_gauge(port: int, expected: dict[str, float], timeout_s: float = 10.0) -> dict[str, float]:
    """The gauge's non-zero statuses once they are `expected` (it is set just after the commit that published)."""
    deadline = time.monotonic() + timeout_s
    while (seen := {s: n for s, n in gauge(port).items() if n}) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert seen == expected
    return seen


def test_signals_through_the_broker_give_the_statuses_the_rules_say(kafka, tmp_path):
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=3)
    now = int(time.time() * 1000)
    n = iter(range(1000))

    def s(address: str, kind: str, days_ago: float, **fields: Any) -> dict[str, Any]:
        return signal_record(address, kind, now - round(days_ago * DAY_MS), f"e{next(n)}", **fields)

    history = [
        *(s("Five@Example.com", "SOFT_ERROR", 8 - 1.5 * i, reason="unreachable") for i in range(5)),
        s("hard@example.com", "HARD_ERROR", 1, reason="user_unknown"),
        s("full@example.com", "SOFT_ERROR", 0.1, reason="mailbox_full"),
        s("complains@example.com", "COMPLAINT", 2),
        s("back@example.com", "SOFT_ERROR", 3, reason="unreachable"),
        s("back@example.com", "DELIVERED", 2),
        s("released@example.com", "HARD_ERROR", 3, reason="user_unknown"),
        s("released@example.com", "RELEASE", 1),
        s("old@example.com", "SOFT_ERROR", 15, reason="unreachable"),  # the wall clock has reset it
        s("gone@example.com", "SOFT_ERROR", 1, reason="unreachable"),
    ]
    arrival = random.Random(3).sample(history, len(history)) + history[::2]  # any order, duplicates
    port = free_port()
    service = pipeline.start("q", quarantine=True, create_topics=True, partitions=3, http_port=port)
    try:
        wait_http(port, "/readyz")
        produce_signals(pipeline, arrival)
        pipeline.produce_raw(pipeline.topics.address_signals, b"x@y", b"not avro")
        produce_signals(pipeline, [s("gone@example.com", "FORGET", 0)])
        expected_status = {
            "five@example.com": (QUARANTINED, "ERROR_THRESHOLD"),
            "hard@example.com": (QUARANTINED, "HARD_ERROR"),
            "full@example.com": (ERRONEOUS, "ERROR_COUNTED"),
            "complains@example.com": (DENYLISTED, "COMPLAINT"),
            "back@example.com": (VALID, "DELIVERED"),
            "released@example.com": (VALID, "MANUAL_RELEASE"),
            "old@example.com": (VALID, "COUNTER_RESET"),
        }
        deadline = time.monotonic() + 90
        while True:
            latest = published(pipeline)
            seen = {a: (r["status"], r["rule"]) for a, r in latest.items() if r is not None}
            if (seen == expected_status and latest.get("gone@example.com", 0) is None) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert seen == expected_status
        assert "gone@example.com" in latest and latest["gone@example.com"] is None  # forgotten: a tombstone
        full = latest["full@example.com"]
        assert (full["error_count"], full["reason"]) == (1, "mailbox_full")
        [counted] = [r for r in history if r["address"] == "full@example.com"]
        assert full["next_change_at"] == counted["occurred_at"] + 10 * DAY_MS + 1
        assert latest["five@example.com"]["decided_by"]["event_id"] == history[4]["event_id"]
        assert [m["status"] for m in latest["back@example.com"]["history"]] == ["SENT", "FAILED"]
        assert wait_for_gauge(port, {VALID: 3.0, ERRONEOUS: 1.0, QUARANTINED: 2.0, DENYLISTED: 1.0})
        dead = pipeline.read_all(pipeline.topics.dlq)
        assert [dict(headers)["sendtrack.error.code"] for *_, headers in dead] == [b"decode_error"]
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
        for topic, config in (
            (pipeline.topics.address_signals, ADDRESS_SIGNALS),
            (pipeline.topics.address_quarantine, COMPACTED),
        ):
            [described] = [
                future.result(10) for future in admin.describe_configs([ConfigResource("topic", topic)]).values()
            ]
            assert {name: described[name].value for name in config} == config
        assert stop(service) == 0
    finally:
        service.kill()
    assert not re.search(r"[a-z]+@example\.com", (tmp_path / "q.log").read_text())  # never an address in clear


def wait_for_assignment(log: Path, times: int, process: Any, timeout_s: float = 60.0) -> None:
    """Until the quarantine stage's log says it was assigned partitions `times` times."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = log_events(log) if log.exists() else []
        if sum(e["event"] == "assigned" and e.get("stage") == "quarantine" for e in events) >= times:
            return
        assert process.poll() is None, f"the service exited with {process.returncode}"
        time.sleep(0.1)
    raise AssertionError("the quarantine stage was never assigned its partitions")


def random_signals(seed: int, addresses: int, count: int, now: int) -> list[dict[str, Any]]:
    """Signals whose deadlines are days away from `now` whichever they are (dated 25 to 11 days ago, or 9 days to an
    hour ago), so the statuses are the same all through the test; some addresses are forgotten on the way."""
    rnd = random.Random(seed)
    kinds = ["SOFT_ERROR"] * 6 + ["DELIVERED"] * 3 + ["HARD_ERROR", "IGNORED_ERROR", "OPEN", "CLICK", "RELEASE"]
    out = []
    for i in range(count):
        address = f"user{rnd.randrange(addresses)}@example.com"
        if rnd.random() < 0.01:
            out.append(signal_record(address, "FORGET", now - HOUR_MS, f"f{i}"))
            continue
        days = rnd.uniform(11, 25) if rnd.random() < 0.4 else rnd.uniform(1 / 24, 9)
        kind = rnd.choice(kinds) if rnd.random() > 0.005 else "COMPLAINT"
        reason = rnd.choice((None, "mailbox_full", "unreachable", "user_unknown"))
        message = f"m{rnd.randrange(addresses * 3)}"
        out.append(signal_record(address, kind, now - round(days * DAY_MS), f"e{i}", message_id=message, reason=reason))
    return out


def expected_topic(records: list[dict[str, Any]], now: int) -> dict[str, dict[str, Any] | None]:
    """What address.quarantine ends with after a clean pass over the records in their log order."""
    processor = new_processor()
    processor.apply([(normal_address(r["address"]), Signal.from_record(r)) for r in records], now_ms=now)
    processor.advance_clock(now)
    out = processor.take_output()
    latest: dict[str, dict[str, Any] | None] = dict.fromkeys(out.tombstones)
    latest.update((record["address"], record) for record in out.statuses)
    return latest


# The default pair in CI; the memory store with at-least-once in the long runs (pytest -m long), keeping CI short.
@pytest.mark.parametrize(
    ("store", "guarantee"),
    [("rocksdb", "exactly-once"), pytest.param("memory", "at-least-once", marks=pytest.mark.long)],
)
def test_kill_minus_nine_at_random_moments_changes_nothing(kafka, tmp_path, store, guarantee):
    now = int(time.time() * 1000)
    records = random_signals(seed=11, addresses=300, count=8_000, now=now)
    expected = expected_topic(records, now)
    assert expected == expected_topic(records, now + 2 * HOUR_MS)  # no deadline falls within the test
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    ensure_topics(AdminClient({"bootstrap.servers": kafka.bootstrap_servers}), pipeline.topics, 4, quarantine=True)
    rnd = random.Random(5)
    parts = 4
    log = tmp_path / "crashy.log"
    for part in range(parts):
        service = pipeline.start("crashy", quarantine=True, store=store, guarantee=guarantee, commit_interval=0.2)
        wait_for_assignment(log, part + 1, service)
        produce_signals(pipeline, records[part * len(records) // parts : (part + 1) * len(records) // parts])
        time.sleep(rnd.uniform(0.0, 1.0))  # then die in the middle of this part's work, or just after
        assert service.poll() is None, f"part {part}: exited early with {service.returncode}"
        service.send_signal(signal.SIGKILL)
        service.wait()
    shutil.rmtree(tmp_path / "state-crashy", ignore_errors=True)  # the last run restores all from the changelog
    port = free_port()
    service = pipeline.start("crashy", quarantine=True, store=store, guarantee=guarantee, http_port=port)
    try:
        latest = wait_for(pipeline, expected, service, timeout_s=180)
        assert latest.keys() == expected.keys()
        wrong = [address for address in expected if latest[address] != expected[address]]
        assert not wrong, (len(wrong), wrong[:3])
        counts: dict[str, float] = {}
        for record in expected.values():
            if record is not None:
                counts[record["status"]] = counts.get(record["status"], 0) + 1
        wait_http(port, "/readyz")
        assert wait_for_gauge(port, counts)  # exact after the restores
        assert stop(service) == 0
    finally:
        service.kill()
    restores = [e for e in log_events(tmp_path / "crashy.log") if e["event"] == "restored"]
    assert sum(e["records"] for e in restores[-8:] if e["stage"] == "quarantine") > 0


def test_mta_events_with_addresses_reach_address_quarantine_through_both_stages(kafka, tmp_path):
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=2)
    ensure_topics(AdminClient({"bootstrap.servers": kafka.bootstrap_servers}), pipeline.topics, 2, quarantine=True)
    now = int(time.time() * 1000)
    events = [
        mta("d1", "m1", "HARD_BOUNCE", at=now - 5000, reason="user_unknown", address="Hard@Example.com"),
        mta("d1", "m2", "DELIVERED", at=now - 5000, address="reader@example.com"),
        mta("d1", "m2", "OPEN", at=now - 4000, address="reader@example.com"),
        mta("d1", "m3", "SOFT_BOUNCE", at=now - 5000, reason="mailbox_full", address="full@example.com"),
        mta("d1", "m4", "COMPLAINT", at=now - 3000, address="angry@example.com"),
        mta("d1", "m5", "RELAYED", at=now - 3000, address="quiet@example.com"),
    ]
    pipeline.produce_events(
        pipeline.topics.deliveries,
        DELIVERY_EVENT,
        [prepared("d1", efs=False, validity_end=now + HOUR_MS, at=now - 9000)],
    )
    pipeline.produce_events(pipeline.topics.mta_events, MTA_EVENT, events)
    service = pipeline.start("both", quarantine=True, store="memory")
    try:
        deadline = time.monotonic() + 90
        while len(latest := published(pipeline)) < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert {a: r["status"] for a, r in latest.items()} == {
            "hard@example.com": QUARANTINED,
            "reader@example.com": VALID,
            "full@example.com": ERRONEOUS,
            "angry@example.com": DENYLISTED,
        }
        [message] = latest["reader@example.com"]["history"]
        assert (message["delivery_id"], message["message_id"], message["status"], message["opened"]) == (
            "d1",
            "m2",
            "SENT",
            True,
        )
        assert latest["full@example.com"]["reason"] == "mailbox_full"
        assert stop(service) == 0
    finally:
        service.kill()


def test_topics_that_would_misplace_statuses_or_dead_letters_are_refused_at_start(kafka, tmp_path):
    """Signals, statuses, the changelog and the dead letters keep one partition number: a dead-letter topic with
    fewer partitions than address.signals made every rewind fail again."""
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=2)  # the dead-letter topic among them
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for future in admin.create_topics([NewTopic(name, 3) for name in pipeline.topics.quarantine]).values():
        future.result(10)
    while len(partition_counts(admin, pipeline.topics.quarantine)) < 3:  # listed a moment after their creation
        time.sleep(0.05)
    settings = Settings(kafka.bootstrap_servers, topics=pipeline.topics, store="memory", quarantine=True)
    stage = QuarantineStage(settings, Metrics(), logs.get("test"))
    with pytest.raises(StartupError, match="one partition count"):
        stage.start({"bootstrap.servers": kafka.bootstrap_servers})


def test_partitions_moving_between_instances_keep_the_statuses_exact(kafka, tmp_path):
    """Two instances share the partitions; one stops (its partitions are checkpointed on revoke and restored from
    the changelog by the other), and the result is still a clean pass's, the gauge the whole set's."""
    now = int(time.time() * 1000)
    records = random_signals(seed=23, addresses=200, count=4_000, now=now)
    expected = expected_topic(records, now)
    assert expected == expected_topic(records, now + 2 * HOUR_MS)
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    ensure_topics(AdminClient({"bootstrap.servers": kafka.bootstrap_servers}), pipeline.topics, 4, quarantine=True)
    third = len(records) // 3
    port = free_port()
    first = pipeline.start("a", quarantine=True, http_port=port)
    second = pipeline.start("b", quarantine=True)
    try:
        wait_for_assignment(tmp_path / "a.log", 1, first)
        wait_for_assignment(tmp_path / "b.log", 1, second)
        produce_signals(pipeline, records[:third])
        time.sleep(3)
        assert stop(second) == 0
        produce_signals(pipeline, records[third : 2 * third])
        time.sleep(1)
        produce_signals(pipeline, records[2 * third :])
        latest = wait_for(pipeline, expected, first, timeout_s=120)
        assert latest == expected
        counts: dict[str, float] = {}
        for record in expected.values():
            if record is not None:
                counts[record["status"]] = counts.get(record["status"], 0) + 1
        assert wait_for_gauge(port, counts, timeout_s=30)  # instance a now owns every partition
        restores = [e for e in log_events(tmp_path / "a.log") if e["event"] == "restored"]
        assert any(e["records"] > 0 for e in restores if e.get("stage") == "quarantine")
        assert stop(first) == 0
    finally:
        first.kill()
        second.kill()
