"""`sendtrack tail` decodes every topic of a real run: the sample send through one instance, then each topic read."""

from __future__ import annotations

import json
import select
import signal
import time
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.cli.main import main
from consumer.cli.options import CANNOT_RUN
from consumer.cli.tail import DECODERS, Record, changelog_decoder, key_matches, quarantine_changelog_decoder
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import ADDRESS_SIGNAL, ADDRESS_STATUS, DELIVERY_EVENT, MTA_EVENT, load
from consumer.delivery import records
from consumer.kafka.topics import Topics
from consumer.quarantine import state_codec
from consumer.quarantine.commands import command_signal
from consumer.quarantine.records import status_record
from consumer.quarantine.rules import Rules
from consumer.quarantine.signals import RELEASE, Signal
from consumer.quarantine.state import AddressState, Limits
from consumer.quarantine.state_codec import encode_address
from tests import samples
from tests.cli.tools import outcome, sendtrack
from tests.ingest.formats.test_kumomta import EXPECTED_SAMPLES as KUMOMTA_EXPECTED
from tests.runtime.harness import Pipeline, stop

GARBAGE = b"\x00\x01garbage"
ADDRESS = "jane@example.com"
FOREIGN_KEY = b"someone-else"  # a good event under another delivery's key: dead-lettered as key_mismatch


class Run:
    """The sample send, processed by one instance that was then stopped; plus raw topics to tail."""

    def __init__(self, pipeline: Pipeline, kumomta: str, garbage: str) -> None:
        self.pipeline, self.topics, self.kumomta, self.garbage = pipeline, pipeline.topics, kumomta, garbage

    def tail(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
        """Run the tool in this process: (exit code, stdout)."""
        names = [f"--topic-{f.name.replace('_', '-')}={getattr(self.topics, f.name)}" for f in fields(Topics)]
        code = main(["tail", "--bootstrap-servers", self.pipeline.bootstrap, *names, *args])
        return code, capsys.readouterr().out

    def records(self, capsys: pytest.CaptureFixture[str], topic: str, *args: str) -> list[dict[str, Any]]:
        code, out = self.tail(capsys, topic, "--from-beginning", "--json", *args)
        assert code == 0
        return [json.loads(line) for line in out.splitlines()]


def create_topic(bootstrap: str, name: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the topic exists
    admin.create_topics([NewTopic(name, 1)])[name].result(10)
    return name


@pytest.fixture(scope="module")
def run(kafka, tmp_path_factory: pytest.TempPathFactory) -> Run:
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path_factory.mktemp("tail"), partitions=2)
    pipeline.produce_events(
        pipeline.topics.deliveries, DELIVERY_EVENT, samples.events(samples.DELIVERIES_FILE, DELIVERY_EVENT)
    )
    mta_events = samples.events(samples.MTA_FILE, MTA_EVENT)
    pipeline.produce_events(pipeline.topics.mta_events, MTA_EVENT, mta_events)
    pipeline.produce_raw(pipeline.topics.mta_events, samples.DELIVERY_ID.encode(), GARBAGE, headers=[("trace", b"t1")])
    pipeline.produce_raw(pipeline.topics.mta_events, FOREIGN_KEY, AvroCodec.named(MTA_EVENT).encode(mta_events[0]))
    command = {"command": "compute-stats", "delivery_id": samples.DELIVERY_ID}
    pipeline.produce_raw(pipeline.topics.control, samples.DELIVERY_ID.encode(), json.dumps(command).encode())
    service = pipeline.start("solo", store="memory")
    try:
        latest = pipeline.wait_for_kpis({samples.DELIVERY_ID: {"processed": 12, "sent": 9}}, processes=[service])
        assert latest[samples.DELIVERY_ID]["sent"] == 9, latest
        deadline = time.monotonic() + 30
        while len(pipeline.read_all(pipeline.topics.dlq)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert stop(service) == 0
    finally:
        service.kill()
    kumomta = create_topic(kafka.bootstrap_servers, f"{pipeline.name}.kumomta")
    for line in (samples.SAMPLES / "ingest" / "kumomta.jsonl").read_bytes().splitlines():
        pipeline.produce_raw(kumomta, b"k", line)
    garbage = create_topic(kafka.bootstrap_servers, f"{pipeline.name}.garbage")
    for value in (GARBAGE, b"\xc3\x01" + bytes(8) + b"\x02", b"", None, "é\x00".encode()):
        pipeline.produce_raw(garbage, None, value)
    return Run(pipeline, kumomta, garbage)


def fingerprint(schema: str) -> str:
    return load(schema).fingerprint.hex()


def values(shown: list[dict[str, Any]]) -> list[Any]:
    return [record["value"] for record in shown]


# -- every topic ----------------------------------------------------------------------------------
def test_deliveries_are_avro_delivery_events(run, capsys):
    shown = run.records(capsys, run.topics.deliveries)
    assert {(r["schema"], r["wire_format"], r["fingerprint"]) for r in shown} == {
        ("sendtrack.DeliveryEvent", "avro", fingerprint(DELIVERY_EVENT))
    }
    assert sorted(values(shown), key=str) == sorted(samples.events(samples.DELIVERIES_FILE, DELIVERY_EVENT), key=str)
    assert {r["key"] for r in shown} == {samples.DELIVERY_ID}


def test_mta_events_decode_and_the_bad_record_shows_why_and_its_bytes(run, capsys):
    shown = run.records(capsys, run.topics.mta_events)
    good = [r for r in shown if "undecodable" not in r]
    events = samples.events(samples.MTA_FILE, MTA_EVENT)
    assert sorted(values(good), key=str) == sorted([*events, events[0]], key=str)  # events[0] again: FOREIGN_KEY
    [bad] = [r for r in shown if "undecodable" in r]
    assert bad["value"] is None and bad["headers"] == [["trace", "t1"]]
    assert bad["undecodable"] == {
        "reason": "DecodeError: value: not an Avro single-object encoded mta_event",
        "length": len(GARBAGE),
        "hex": GARBAGE.hex(" "),
        "base64": "AAFnYXJiYWdl",
    }


def test_control_commands_are_json(run, capsys):
    [shown] = run.records(capsys, run.topics.control)
    assert (shown["schema"], shown["wire_format"]) == ("control-command", "json")
    assert shown["value"] == {"command": "compute-stats", "delivery_id": samples.DELIVERY_ID}


def test_kpi_snapshots_are_avro_and_the_last_is_the_one_kpis_reads(run, capsys):
    shown = run.records(capsys, run.topics.kpis)
    assert {(r["schema"], r["fingerprint"]) for r in shown} == {("sendtrack.DeliveryKpi", fingerprint("delivery_kpi"))}
    latest = max(values(shown), key=lambda kpi: kpi["version"])
    assert latest == run.pipeline.kpis()[samples.DELIVERY_ID]
    assert {k: latest[k] for k in ("processed", "sent", "failed", "opens_unique")} == {
        k: samples.EXPECTED_KPI[k] for k in ("processed", "sent", "failed", "opens_unique")
    }


def test_sending_logs_are_avro(run, capsys):
    shown = run.records(capsys, run.topics.sending_logs)
    assert {r["schema"] for r in shown} == {"sendtrack.SendingLog"}
    assert Counter(json.dumps(v, sort_keys=True) for v in values(shown)) == Counter(
        json.dumps(v, sort_keys=True) for v in run.pipeline.sending_logs()
    )


def test_dead_letters_show_their_error_and_the_original_decoded_as_its_topic_does(run, capsys):
    shown = {r["value"]["error"]["code"]: r for r in run.records(capsys, run.topics.dlq)}
    assert sorted(shown) == ["decode_error", "key_mismatch"]
    garbage, foreign = shown["decode_error"], shown["key_mismatch"]
    # The sample's events share its key, so its partition; the garbage came after them.
    offset = str(len(samples.events(samples.MTA_FILE, MTA_EVENT)))
    assert garbage["value"]["source"] == {
        "topic": run.topics.mta_events,
        "partition": str(garbage["partition"]),
        "offset": offset,
    }
    assert garbage["value"]["error"]["field"] == "value"
    assert garbage["value"]["original"]["undecodable"]["hex"] == GARBAGE.hex(" ")
    assert garbage["schema"] == "avro:sendtrack.MtaEvent"  # no frame, so no fingerprint
    assert foreign["schema"] == f"avro:sendtrack.MtaEvent fp={fingerprint(MTA_EVENT)}"
    assert ["trace", "t1"] in garbage["headers"]
    assert foreign["key"] == FOREIGN_KEY.decode()
    assert foreign["value"]["original"]["value"] == samples.events(samples.MTA_FILE, MTA_EVENT)[0]
    assert foreign["value"]["error"]["message"].startswith("key: record key b'someone-else' is not delivery_id")


def test_the_changelog_shows_each_state_entry(run, capsys):
    shown = run.records(capsys, run.topics.changelog)
    assert {r["wire_format"] for r in shown} == {"changelog"}
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for record in shown:
        by_kind.setdefault(record["schema"], []).append(record["value"])
    assert set(by_kind) == {"message", "delivery", "counted", "watermark"}
    messages = {e["message_id"] for e in samples.events(samples.MTA_FILE, MTA_EVENT)}
    assert {v["message_id"] for v in by_kind["message"]} == messages
    assert by_kind["delivery"][-1]["state"]["counters"]["sent"] == 9
    assert "HARD_BOUNCE" in {fact for v in by_kind["message"] for fact in v["state"]["facts"]}
    assert all(isinstance(v["state"], int) for v in by_kind["watermark"])


def test_an_ingest_source_topic_shows_the_events_each_record_maps_to(run, capsys):
    shown = run.records(capsys, run.kumomta, "--format", "kumomta")
    assert {(r["schema"], r["wire_format"]) for r in shown} == {("kumomta->sendtrack.MtaEvent", "json")}
    mapped = [
        [(m["event"]["type"], m["event"]["message_id"], m["event"]["reason"], m["rule"]) for m in v["maps_to"]]
        for v in values(shown)
    ]
    assert mapped == KUMOMTA_EXPECTED
    assert values(shown)[0]["source"]["type"] == "Reception"


# -- the flags ------------------------------------------------------------------------------------
def test_pretty_output_names_where_the_schema_and_the_wire_format(run, capsys):
    code, out = run.tail(capsys, run.topics.deliveries, "--from-beginning", "--max", "1")
    header, *body = out.splitlines()
    where, key, label, fp, at = header.split(" ")
    assert code == 0 and where.startswith(f"{run.topics.deliveries}[") and "]@" in where
    assert (key, label, fp) == (
        f"key={samples.DELIVERY_ID}",
        "avro:sendtrack.DeliveryEvent",
        f"fp={fingerprint(DELIVERY_EVENT)}",
    )
    assert at.startswith("at=20")
    assert json.loads("\n".join(body))["delivery_id"] == samples.DELIVERY_ID


def test_key_keeps_only_that_keys_records(run, capsys):
    [foreign] = run.records(capsys, run.topics.mta_events, "--key", FOREIGN_KEY.decode())
    assert foreign["key"] == FOREIGN_KEY.decode()
    assert run.records(capsys, run.topics.deliveries, "--key", "no-such-delivery") == []
    # On the changelog, whose keys are state keys, --key is the delivery: the watermark is no delivery's.
    of_delivery = run.records(capsys, run.topics.changelog, "--key", samples.DELIVERY_ID)
    assert of_delivery and {r["schema"] for r in of_delivery} == {"message", "delivery", "counted"}


def test_max_stops_after_that_many_records_even_when_following(run, capsys):
    assert len(run.records(capsys, run.topics.mta_events, "--max", "3", "--follow")) == 3


@pytest.mark.parametrize("decoder", DECODERS)
def test_garbage_never_crashes_any_decoder(run, capsys, decoder):
    shown = run.records(capsys, run.garbage, "--as", decoder)
    assert len(shown) == 5
    if decoder == "dlq":  # a dead letter without headers is still shown: its original, raw
        assert [r["value"]["error"] for r in shown] == [{}] * 5
        shown = [r["value"]["original"] for r in shown]
    if decoder in ("changelog", "quarantine-changelog"):  # no key names a state entry, not even the null value's
        assert all("undecodable" in r for r in shown)
        return
    assert shown[3]["value"] is None and "undecodable" not in shown[3]  # the null value
    if decoder in ("raw", "dlq"):
        assert shown[1]["value"]["hex"].startswith("c3 01") and shown[4]["value"] == "é\x00"
    else:
        assert all("undecodable" in r for i, r in enumerate(shown) if i != 3)


def test_a_topic_of_unknown_content_or_that_does_not_exist_is_one_line_and_exit_2(run, capsys):
    code = main(["tail", "--bootstrap-servers", run.pipeline.bootstrap, run.garbage])
    assert (code, capsys.readouterr().err) == (
        CANNOT_RUN,
        f"sendtrack tail: which records are in {run.garbage!r}? pass --as DECODER or --format FORMAT\n",
    )
    code = main(["tail", "--bootstrap-servers", run.pipeline.bootstrap, "--as", "raw", "no-such-topic"])
    assert code == CANNOT_RUN
    assert capsys.readouterr().err.startswith("sendtrack tail: topic 'no-such-topic' does not exist")


def test_without_from_beginning_only_new_records_are_shown_and_ctrl_c_ends_it(run):
    topic = create_topic(run.pipeline.bootstrap, f"{run.pipeline.name}.live")
    run.pipeline.produce_raw(topic, b"old", b"before")
    tail = sendtrack("tail", "--bootstrap-servers", run.pipeline.bootstrap, "--as", "raw", "--json", topic)
    first = None
    deadline = time.monotonic() + 20
    while first is None and time.monotonic() < deadline:  # it is assigned some time after it started
        run.pipeline.produce_raw(topic, b"new", b"after")
        time.sleep(0.5)
        first = tail.stdout.readline() if _readable(tail.stdout) else None
    assert first is not None and (json.loads(first)["key"], json.loads(first)["value"]) == ("new", "after")
    tail.send_signal(signal.SIGINT)
    code, _, stderr = outcome(tail)
    assert code in (0, 130) and "Traceback" not in stderr


def _readable(stream: Any) -> bool:
    return bool(select.select([stream], [], [], 0)[0])


def test_changelog_values_by_kind_including_tombstones():
    message = records.message_key("d", "m")
    assert changelog_decoder(Record(message, None)).value == {
        "kind": "message",
        "delivery_id": "d",
        "message_id": "m",
        "tombstone": True,
        "state": None,
    }
    plain = changelog_decoder(Record(message, b"3 1")).value["state"]
    assert plain == {"facts": ["RELAYED", "DELIVERED"], "changes": 1, "hard": None, "soft": None, "exhausted": None}
    counted = changelog_decoder(Record(records.counted_key("d", "e-1"), b"OPEN"))
    assert (counted.schema, counted.value["event_id"], counted.value["state"]) == ("counted", "e-1", "OPEN")
    rejected = changelog_decoder(Record(records.rejected_key("d", "e-1"), b"REJECTED_CONFIRMATION"))
    assert (rejected.schema, rejected.value["delivery_id"], rejected.value["event_id"]) == ("counted", "d", "e-1")
    assert rejected.value["state"] == "REJECTED_CONFIRMATION"
    assert records.delivery_of(records.rejected_key("d", "e-1")) == "d"  # `tail --key d` shows it
    assert changelog_decoder(Record(records.WATERMARK, b"1767225600000")).value["state"] == 1767225600000
    unknown = changelog_decoder(Record(b"zz", b"x"))
    assert unknown.error == "ValueError: not a state key: zz" and unknown.raw == b"x"


def test_address_signals_and_statuses_decode_by_their_topic_and_key_is_any_case(kafka, capsys):
    topics = Topics.prefixed("tail-address.")
    for name in (topics.address_signals, topics.address_quarantine):
        create_topic(kafka.bootstrap_servers, name)
    signal = command_signal(RELEASE, "Jane@Example.com", "alice", 1_800_000_000_000, "release-1")
    state = AddressState.new("jane@example.com", Limits())
    state.apply(Signal.from_record(signal), Rules(), Limits())
    status = status_record(state, signal["occurred_at"], Rules())
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    producer.produce(topics.address_signals, AvroCodec.named(ADDRESS_SIGNAL).encode(signal), b"jane@example.com")
    producer.produce(topics.address_quarantine, AvroCodec.named(ADDRESS_STATUS).encode(status), b"jane@example.com")
    producer.produce(topics.address_quarantine, None, b"jane@example.com")  # forgotten
    producer.produce(topics.address_quarantine, AvroCodec.named(ADDRESS_STATUS).encode(status), b"other@example.com")
    assert producer.flush(10) == 0
    names = [f"--topic-{f.name.replace('_', '-')}={getattr(topics, f.name)}" for f in fields(Topics)]

    def shown(topic: str) -> list[dict[str, Any]]:
        args = [topic, "--from-beginning", "--json", "--key", "JANE@example.com "]
        assert main(["tail", "--bootstrap-servers", kafka.bootstrap_servers, *names, *args]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    [signal_shown] = shown(topics.address_signals)
    assert (signal_shown["schema"], signal_shown["value"]) == ("sendtrack.AddressSignal", signal)
    status_shown, tombstone = shown(topics.address_quarantine)
    assert (status_shown["schema"], status_shown["value"]) == ("sendtrack.AddressStatus", status)
    assert (tombstone["key"], tombstone["value"]) == ("jane@example.com", None)


def test_quarantine_changelog_entries_by_kind_including_tombstones():
    state = AddressState.new(ADDRESS, Limits())
    state.apply(Signal("e1", "HARD_ERROR", 5, "d1", "m1", "user_unknown"), Rules(), Limits())
    key = state_codec.address_key("jane@example.com")
    address = quarantine_changelog_decoder(Record(key, encode_address(state, 9)))
    assert (address.schema, address.value["address"], address.value["tombstone"]) == ("address", ADDRESS, False)
    assert address.value["state"] == json.loads(encode_address(state, 9))
    gone = quarantine_changelog_decoder(Record(key, None)).value
    assert (gone["tombstone"], gone["state"]) == (True, None)
    deadline = quarantine_changelog_decoder(Record(state_codec.deadline_key(9, "jane@example.com"), b"")).value
    assert (deadline["kind"], deadline["due"], deadline["address"]) == ("deadline", 9, "jane@example.com")
    count = quarantine_changelog_decoder(Record(state_codec.status_count_key("QUARANTINED"), b"3")).value
    assert (count["status"], count["state"]) == ("QUARANTINED", 3)
    assert quarantine_changelog_decoder(Record(state_codec.CLOCK, b"1767225600000")).value["state"] == 1767225600000
    for key in (b"zz", state_codec.DEADLINE + b"\x00"):
        assert quarantine_changelog_decoder(Record(key, b"x")).error.startswith("ValueError: ")


def test_key_on_the_quarantine_changelog_is_the_address_of_each_entry():
    def matches(key: bytes) -> bool:
        return key_matches("quarantine-changelog", FakeMessage(key), " Jane@Example.com")

    assert matches(state_codec.address_key("jane@example.com"))
    assert matches(state_codec.deadline_key(9, "jane@example.com"))
    assert not matches(state_codec.address_key("other@example.com"))
    assert not matches(state_codec.CLOCK) and not matches(state_codec.DEADLINE + b"\x00")


@dataclass
class FakeMessage:
    _key: bytes

    def key(self) -> bytes:
        return self._key
