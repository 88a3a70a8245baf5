"""The ingest stage on the service's runner, driven poll by poll over fake Kafka clients."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.cli.run import build_service
from consumer.codec.avro import AvroCodec
from consumer.codec.errors import InvalidEvent
from consumer.codec.schemas import MTA_EVENT
from consumer.codec.validation import NO_KEY_CHECK, check_event
from consumer.ingest.formats import make_format
from consumer.ingest.stage import FORMAT_HEADER, RULE_HEADER, IngestStage, ingest_stages
from consumer.kafka.producer import ANY_PARTITION
from consumer.kafka.topics import Topics
from consumer.ops.metrics import Metrics
from consumer.runtime.app import Service
from consumer.runtime.settings import AT_LEAST_ONCE, IngestSource, Settings
from tests.ingest import sends
from tests.runtime.fakes import NOW_S, FakeConsumer, FakeMessage, FakeProducer

SOURCE = "kumomta.logs"
EVENTS = AvroCodec.named(MTA_EVENT)


class IngestDriver:
    """An instance running one ingest stage (no delivery stage) over fake clients, owning `partitions`."""

    def __init__(self, fmt: str = "kumomta", partitions: int = 2, now_s: float = NOW_S, **settings: Any) -> None:
        self.topics = Topics()
        self.settings = Settings(
            bootstrap_servers="unused:9092",
            state_dir=Path("unused"),
            delivery_stage=False,
            ingest=(IngestSource(fmt, SOURCE),),
            **settings,
        )
        self.metrics = Metrics()
        self.stages = ingest_stages(self.settings, self.metrics)
        self.service = Service(self.settings, clock=lambda: now_s, metrics=self.metrics, stages=self.stages)
        self.runner = self.service.runners[0]
        self.producer, self.consumer = FakeProducer(transactional=self.settings.transactional), FakeConsumer()
        self.runner.attach(self.producer, self.consumer)  # type: ignore[arg-type]
        self.runner.works.update(self.stages[0].open(range(partitions), {}, lambda _step: None))
        self._next = Counter[int]()

    def record(self, value: bytes | None, partition: int = 0) -> FakeMessage:
        offset = self._next[partition]
        self._next[partition] += 1
        return FakeMessage(SOURCE, partition, offset, b"any-key", value)

    def poll(self, *messages: FakeMessage) -> None:
        self.runner.process(list(messages))  # type: ignore[arg-type]

    def events(self) -> list[dict[str, Any]]:
        return [EVENTS.decode(record.value) for record in self.producer.on(self.topics.mta_events)]

    def dead_letters(self) -> list[dict[str, str]]:
        return [
            {name: value.decode() for name, value in record.headers or [] if name.startswith("sendtrack.")}
            for record in self.producer.on(self.topics.dlq)
        ]

    def committed_offsets(self) -> dict[int, int]:
        return {tp.partition: tp.offset for commit in self.producer.offsets for tp in commit}

    def counted(self, outcome: str) -> float:
        return self.metrics.ingest_records.labels("kumomta", outcome)._value.get()


def kumo(kind: str = "Delivery", **fields: Any) -> bytes:
    record = {
        "type": kind,
        "id": fields.pop("id", "spool-1"),
        "recipient": "ann@example.com",
        "timestamp": fields.pop("timestamp", 1_767_225_000),
        "num_attempts": 1,
        "meta": {"delivery_id": fields.pop("delivery_id", "spring"), "message_id": fields.pop("message_id", "m1")},
        **fields,
    }
    return json.dumps(record).encode()


def test_each_event_is_produced_keyed_by_its_delivery_for_the_partitioner_with_the_deciding_rule():
    driver = IngestDriver()
    bounce = kumo(
        "Bounce",
        id="spool-2",
        message_id="m2",
        response={"code": 550, "enhanced_code": {"class": 5, "subject": 1, "detail": 1}, "content": "No such user"},
    )
    driver.poll(driver.record(kumo("Delivery")), driver.record(bounce, partition=1))
    driver.runner.checkpoint()
    records = driver.producer.on(driver.topics.mta_events)
    assert [(r.key, r.partition) for r in records] == [(b"spring", ANY_PARTITION)] * 2  # the source key is ignored
    assert [e["type"] for e in driver.events()] == ["DELIVERED", "HARD_BOUNCE"]
    headers = [dict(r.headers or []) for r in records]
    assert headers[0] == {FORMAT_HEADER: b"kumomta"}
    assert headers[1][RULE_HEADER] == make_format("kumomta").map(bounce)[0].rule.encode()
    assert driver.committed_offsets() == {0: 1, 1: 1}
    assert driver.counted("mapped") == 2


def test_a_record_that_cannot_be_mapped_is_dead_lettered_and_the_stage_goes_on():
    driver = IngestDriver()
    driver.poll(
        driver.record(b"not json"),
        driver.record(kumo("NoSuchType")),
        driver.record(kumo(delivery_id="")),
        driver.record(kumo()),
    )
    driver.runner.checkpoint()
    letters = driver.dead_letters()
    assert [letter["sendtrack.error.code"] for letter in letters] == ["unmappable"] * 3
    assert [letter["sendtrack.source.offset"] for letter in letters] == ["0", "1", "2"]
    assert all(letter["sendtrack.source.topic"] == SOURCE for letter in letters)
    assert [e["type"] for e in driver.events()] == ["DELIVERED"]
    assert driver.committed_offsets() == {0: 4}
    assert (driver.counted("dead_lettered"), driver.counted("mapped")) == (3, 1)


def test_an_event_the_delivery_stage_would_refuse_dead_letters_its_source_record_whole():
    """A SendGrid post whose second event is dated beyond the allowed clock skew: none of its events go out,
    so the source record can be replayed from the dead-letter topic without duplicating the first."""
    driver = IngestDriver("sendgrid", max_clock_skew_s=60)
    base = {"email": "ann@example.com", "delivery_id": "spring", "message_id": "m1", "sg_event_id": "e1"}
    post = [
        {**base, "event": "delivered", "timestamp": int(NOW_S) - 10},
        {**base, "event": "open", "timestamp": int(NOW_S) + 3_600, "sg_event_id": "e2"},
    ]
    driver.poll(driver.record(json.dumps(post).encode()))
    driver.runner.checkpoint()
    assert driver.events() == []
    assert [letter["sendtrack.error.code"] for letter in driver.dead_letters()] == ["clock_skew"]


def test_a_record_that_maps_to_nothing_moves_the_offset_and_is_counted_as_such():
    driver = IngestDriver()
    driver.poll(driver.record(kumo("Rejection")))
    driver.runner.checkpoint()
    assert driver.events() == [] and driver.dead_letters() == []
    assert driver.committed_offsets() == {0: 1}
    assert driver.counted("no_event") == 1


def test_a_mapper_that_raises_is_a_dead_letter_not_a_crash(monkeypatch):
    driver = IngestDriver()
    stage = driver.stages[0]
    monkeypatch.setattr(stage._mapper, "map", lambda _value: 1 / 0)
    driver.poll(driver.record(kumo()))
    driver.runner.checkpoint()
    assert [letter["sendtrack.error.code"] for letter in driver.dead_letters()] == ["processing_error"]
    assert driver.committed_offsets() == {0: 1}


def test_a_failed_checkpoint_rewinds_and_nothing_is_produced_or_counted_twice():
    driver = IngestDriver()
    first = driver.record(kumo())
    driver.poll(first)
    driver.runner.recover("checkpoint_failed", "broker went away")  # aborts the open transaction
    assert driver.consumer.seeks[-1].offset < 0  # nothing committed yet: back to the group's start
    driver.poll(first)  # the same record, read again after the rewind
    driver.runner.checkpoint()
    assert len(driver.events()) == 1
    assert driver.counted("mapped") == 1
    assert driver.metrics.ingest_events.labels("kumomta", "DELIVERED")._value.get() == 1


def test_at_least_once_commits_the_offsets_after_the_flush():
    driver = IngestDriver(processing_guarantee=AT_LEAST_ONCE)
    commits: list[Any] = []
    driver.consumer.commit = lambda offsets, asynchronous: commits.append(offsets)  # type: ignore[attr-defined]
    driver.poll(driver.record(kumo()))
    driver.runner.checkpoint()
    assert [(tp.topic, tp.offset) for tp in commits[0]] == [(SOURCE, 1)]


@pytest.mark.parametrize("fmt", sends.FORMATS)
def test_a_whole_send_goes_through_the_stage_as_the_mapper_maps_it(fmt):
    driver = IngestDriver(fmt, now_s=sends.T_PROMO + 30 * sends.DAY)
    records = sends.source_records(fmt)
    driver.poll(*(driver.record(value, partition=i % 2) for i, value in enumerate(records)))
    driver.runner.checkpoint()
    expected = [m.event for value in records for m in make_format(fmt).map(value)]
    assert sorted(driver.events(), key=lambda e: e["event_id"]) == sorted(expected, key=lambda e: e["event_id"])
    assert driver.dead_letters() == []


def test_the_configuration_is_checked_before_anything_runs(tmp_path):
    def stages(**settings: Any) -> list[IngestStage]:
        return ingest_stages(Settings(bootstrap_servers="x", **settings), Metrics())

    with pytest.raises(ValueError, match="one ingest stage per format"):
        stages(ingest=(IngestSource("ses", "a"), IngestSource("ses", "b")))
    with pytest.raises(ValueError, match="sendtrack's own"):
        stages(ingest=(IngestSource("ses", "mta.events"),))
    with pytest.raises(ValueError, match="unknown format"):
        stages(ingest=(IngestSource("postfix", "a"),))
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rule]]\nid = 'broken'\n")
    with pytest.raises(ValueError):
        stages(ingest=(IngestSource("ses", "a"),), bounce_rules=(rules,))
    with pytest.raises(ValueError, match="nothing to run"):
        Service(Settings(bootstrap_servers="x", delivery_stage=False))


def test_readiness_waits_for_every_stage_s_group_and_names_the_stage_in_trouble():
    """One stage's assignment must not make the instance ready while another stage still joins or rebalances."""
    settings = Settings(bootstrap_servers="x", ingest=(IngestSource("ses", "ses.events"),), store="memory")
    service = build_service(settings)
    delivery, ingest = service.runners
    for runner in service.runners:
        runner.attach(FakeProducer(), FakeConsumer())  # type: ignore[arg-type]
    ingest._on_assign(None, [])
    ready, detail = service.readiness()
    assert not ready and detail == "delivery: joining the consumer group"
    delivery._on_assign(None, [])
    assert service.readiness() == (True, "delivery: 0 partitions, ingest-ses: 0 partitions")
    ingest._on_revoke(None, [])
    assert service.readiness() == (False, "ingest-ses: rebalancing")


def _mutated(value: bytes, data: st.DataObject) -> bytes:
    """A real record with a few bytes changed, cut short, or left as it is."""
    how = data.draw(st.sampled_from(["as-is", "flip", "cut"]))
    if how == "cut":
        return value[: data.draw(st.integers(0, len(value)))]
    if how == "flip":
        raw = bytearray(value)
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        return bytes(raw)
    return value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(sends.FORMATS), data=st.data())
def test_any_mix_of_good_broken_and_random_records_moves_on_and_out_comes_exactly_what_maps(fmt, data):
    """Every offset is committed; each record either maps (its events produced, all of them) or is one dead
    letter; the stage never raises, whatever the bytes."""
    records = sends.source_records(fmt)
    values = data.draw(
        st.lists(
            st.one_of(
                st.sampled_from(records).map(lambda value: _mutated(value, data)),
                st.binary(max_size=64),
                st.none(),
            ),
            min_size=1,
            max_size=12,
        )
    )
    driver = IngestDriver(fmt, now_s=sends.T_PROMO + 30 * sends.DAY)
    driver.poll(*(driver.record(value, partition=i % 2) for i, value in enumerate(values)))
    driver.runner.checkpoint()
    mapper, expected_events, expected_letters = make_format(fmt), [], 0
    for value in values:
        try:
            expected_events += [
                check_event(m.event, NO_KEY_CHECK, int((sends.T_PROMO + 30 * sends.DAY + 900) * 1000))
                for m in mapper.map(value)
            ]
        except InvalidEvent:
            expected_letters += 1
    assert sorted(e["event_id"] for e in driver.events()) == sorted(e["event_id"] for e in expected_events)
    assert len(driver.dead_letters()) == expected_letters
    per_partition = Counter(i % 2 for i in range(len(values)))
    assert driver.committed_offsets() == dict(per_partition)
