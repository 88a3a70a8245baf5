"""The KPI view: the latest record per delivery, change cursors, and a broker-backed follow of the topic."""

from __future__ import annotations

import threading
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_KPI
from consumer.kafka.admin import ensure_topics
from consumer.kafka.topics import Topics
from consumer.web.kpi_view import KpiView
from consumer.web.table import KpiTable
from tests.web.fakes import kpi


def test_the_highest_version_wins_and_an_equal_version_arriving_later_replaces() -> None:
    table = KpiTable()
    assert table.apply(0, kpi("d", version=2, sent=5))
    assert not table.apply(0, kpi("d", version=1, sent=9))
    assert table.apply(0, kpi("d", version=2, sent=6))  # a crashed instance's snapshot came first
    assert not table.apply(0, kpi("d", version=2, sent=6))  # the very same record changes nothing
    entry = table.get("d")
    assert entry is not None and entry.kpi["sent"] == 6 and entry.partition == 0


def test_changes_after_a_cursor_and_a_foreign_cursor_gets_everything() -> None:
    table = KpiTable()
    table.apply(0, kpi("a"))
    cursor = table.cursor()
    assert [e.delivery_id for e in table.page(50).entries] == ["a"]
    table.apply(1, kpi("b"))
    table.apply(0, kpi("a", version=2))
    cursor2, changed = table.changes(cursor, 0)
    assert [e.kpi["delivery_id"] for e in changed] == ["b", "a"]
    assert table.changes(cursor2, 0)[1] == []
    for foreign in (None, "other:1", "garbage", cursor.split(":")[0] + ":999"):
        assert len(table.changes(foreign, 0)[1]) == 2, foreign


def test_a_waiting_reader_wakes_on_a_change() -> None:
    table = KpiTable()
    cursor = table.cursor()
    threading.Timer(0.05, lambda: table.apply(3, kpi("late"))).start()
    _, changed = table.changes(cursor, 10)
    assert [e.kpi["delivery_id"] for e in changed] == ["late"]


def test_a_tombstone_removes_the_delivery() -> None:
    table = KpiTable()
    table.apply(0, kpi("gone"))
    cursor = table.cursor()
    table.remove("gone")
    assert table.get("gone") is None
    assert table.cursor() != cursor


def test_the_view_follows_the_topic_and_skips_bad_records(kafka) -> None:
    topics = Topics.prefixed(f"web-{uuid.uuid4().hex[:8]}.")
    ensure_topics(AdminClient({"bootstrap.servers": kafka.bootstrap_servers}), topics, 3)
    codec = AvroCodec.named(DELIVERY_KPI)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})

    def send(partition: int, key: str, value: bytes | None) -> None:
        producer.produce(topics.kpis, value, key.encode(), partition=partition)
        assert producer.flush(10) == 0

    send(2, "d1", codec.encode(kpi("d1", version=1, sent=1)))
    send(2, "bad", b"not avro at all")
    send(2, "d1", codec.encode(kpi("d1", version=3, sent=3)))
    send(2, "d1", codec.encode(kpi("d1", version=2, sent=2)))  # older: ignored
    send(1, "d2", codec.encode(kpi("d2")))
    registry = CollectorRegistry()
    view = KpiView({"bootstrap.servers": kafka.bootstrap_servers}, topics.kpis, registry=registry).start()
    try:
        assert view.loaded.wait(30), "the view never reached the end of the topic"
        entry = view.get("d1")
        assert entry is not None and entry.kpi["sent"] == 3 and entry.partition == 2
        assert view.skipped == 1
        assert registry.get_sample_value("sendtrack_web_kpi_records_skipped_total") == 1
        cursor = view.cursor()
        send(0, "d3", codec.encode(kpi("d3", state="FINISHED")))  # followed after the initial load
        _, changed = view.changes(cursor, 20)
        assert [(e.kpi["delivery_id"], e.partition) for e in changed] == [("d3", 0)]
        send(1, "d2", None)
        _wait_for(lambda: view.get("d2") is None)
    finally:
        view.stop()
    assert not view.running


def _wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
