"""`sendtrack quarantine` against the real broker: statuses written to address.quarantine here (as the quarantine
stage would), shown by the tool; release and forget write one audited signal to the address's partition."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.cli.options import CANNOT_RUN, NOT_ACCEPTED
from consumer.cli.quarantine import NOT_APPLIED, SEVERITY
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import ADDRESS_SIGNAL, ADDRESS_STATUS
from consumer.kafka.admin import COMPACTED, ensure_topics
from consumer.kafka.config import reader_config
from consumer.kafka.partitioners import partition_of
from consumer.quarantine.privacy import address_ref
from consumer.quarantine.records import status_record
from consumer.quarantine.rules import ADDRESS_STATUSES, DAY_MS, Rules
from consumer.quarantine.signals import COMPLAINT, DELIVERED, FORGET, OPEN, RELEASE, SOFT_ERROR, Signal
from consumer.quarantine.state import AddressState, Limits
from tests.cli.tools import closed_port, outcome, sendtrack
from tests.runtime.harness import Pipeline, stop

PARTITIONS = 4
T0 = 1_796_000_000_000  # 2026-11-30T00:53:20Z
HASH_KEY = "quarantine-cli-test-key"
STATUSES = AvroCodec.named(ADDRESS_STATUS)
SIGNALS = AvroCodec.named(ADDRESS_SIGNAL)


def status(address: str, *signals: Signal) -> dict[str, Any]:
    """The AddressStatus record the quarantine domain publishes after these signals."""
    state = AddressState.new(address, Limits())
    for signal in signals:
        state.apply(signal, Rules(), Limits())
    return status_record(state, max(s.occurred_at for s in signals), Rules())


def soft_errors(count: int, reason: str = "unreachable") -> list[Signal]:
    return [Signal(f"e{day}", SOFT_ERROR, T0 + day * DAY_MS, "d1", f"m{day}", reason) for day in range(count)]


@dataclass
class Quarantine:
    """A pair of address.signals / address.quarantine topics of their own, and the tool pointed at them."""

    bootstrap: str
    signals: str
    statuses: str

    def tool(self, *args: str, partitioner: str = "consistent_random") -> Any:
        action, *rest = args
        topics = ["--topic-address-signals", self.signals, "--topic-address-quarantine", self.statuses]
        return sendtrack(
            "quarantine",
            action,
            "--bootstrap-servers",
            self.bootstrap,
            "--partitioner",
            partitioner,
            *topics,
            *rest,
            env={"SENDTRACK_ADDRESS_HASH_KEY": HASH_KEY},
        )

    def run(self, *args: str, partitioner: str = "consistent_random") -> tuple[int, str, str]:
        return outcome(self.tool(*args, partitioner=partitioner))

    def publish(self, address: str, record: dict[str, Any] | None, partitioner: str = "consistent_random") -> None:
        """Write the address's status (None: its tombstone) where the stage would: its signals' partition."""
        key = address.encode()
        producer = Producer({"bootstrap.servers": self.bootstrap})
        value = None if record is None else STATUSES.encode(record)
        producer.produce(self.statuses, value, key, partition=partition_of(key, PARTITIONS, partitioner))
        assert producer.flush(10) == 0

    def signals_written(self) -> list[tuple[int, bytes, dict[str, Any]]]:
        """Every record of address.signals: (partition, key, decoded signal)."""
        return [(msg.partition(), msg.key(), SIGNALS.decode(msg.value())) for msg in self.read(self.signals)]

    def read(self, topic: str) -> list[Any]:
        reader = Consumer(reader_config({"bootstrap.servers": self.bootstrap}, f"test-{topic}"))
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        records, ended = [], set()
        while len(ended) < PARTITIONS:
            for msg in reader.consume(100, 1.0):
                if msg.error() is None:
                    records.append(msg)
                else:
                    ended.add(msg.partition())
        reader.close()
        return records


@pytest.fixture
def quarantine(kafka) -> Iterator[Quarantine]:
    name = uuid.uuid4().hex[:8]
    topics = Quarantine(kafka.bootstrap_servers, f"qcli-{name}.address.signals", f"qcli-{name}.address.quarantine")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    created = admin.create_topics(
        [NewTopic(topics.signals, PARTITIONS), NewTopic(topics.statuses, PARTITIONS, config=COMPACTED)]
    )
    for future in created.values():
        future.result(10)
    yield topics


def test_show_prints_the_last_status_of_the_address_and_its_history_newest_first(quarantine) -> None:
    address = "jane@example.com"
    quarantine.publish(address, status(address, *soft_errors(2)))
    quarantined = status(address, *soft_errors(5), Signal("o1", OPEN, T0 + 5 * DAY_MS, "d1", "m3"))
    quarantine.publish(address, quarantined)
    quarantine.publish("other@example.com", status("other@example.com", *soft_errors(1)))

    code, out, err = quarantine.run("show", "  Jane@Example.COM ")
    assert (code, err) == (0, "")
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.split("\n\n")[0].splitlines())
    assert fields == {
        "address": address,
        "status": "QUARANTINED",
        "error count": "5",
        "reason": "unreachable",
        "since": "2026-12-04T00:53:20.000Z",  # the fifth error, T0 + 4 days
        "rule": "ERROR_THRESHOLD",
        "deciding event": "SOFT_ERROR at 2026-12-04T00:53:20.000Z (event e4, delivery d1, message m4)",
        "next change": "none by time alone",
        "last signal": "2026-12-05T00:53:20.000Z",  # the open
    }
    heading, header, *rows = out.split("\n\n")[1].splitlines()
    assert heading == "history, newest first (5 messages)"
    assert header.split() == ["first", "signal", "last", "signal", "delivery", "message", "status", "opened", "clicked"]
    assert [row.split()[3] for row in rows] == ["m4", "m3", "m2", "m1", "m0"]
    assert rows[1].split()[5:] == ["yes", "no"]  # m3 was opened


def test_show_json_is_the_record_as_one_object(quarantine) -> None:
    address = "json@example.com"
    record = status(address, *soft_errors(1, "mailbox_full"))
    quarantine.publish(address, record)
    code, out, _ = quarantine.run("show", address, "--json")
    assert code == 0
    assert json.loads(out) == record
    assert out.count("\n") == 1
    assert (json.loads(out)["address"], json.loads(out)["status"]) == (address, "ERRONEOUS")


def test_an_unknown_address_is_said_so_with_exit_1(quarantine) -> None:
    quarantine.publish("known@example.com", status("known@example.com", *soft_errors(1)))
    code, out, err = quarantine.run("show", "nobody@example.com")
    partition = partition_of(b"nobody@example.com", PARTITIONS, "consistent_random")
    assert (code, out) == (NOT_ACCEPTED, "")
    assert err == (
        f"sendtrack quarantine: unknown address: {quarantine.statuses} has no status for it (partition {partition},"
        " placed by consistent_random); never seen, forgotten or dropped\n"
    )


def test_a_tombstone_makes_the_address_unknown_and_a_later_status_known_again(quarantine) -> None:
    address = "gone@example.com"
    quarantine.publish(address, status(address, *soft_errors(5)))
    quarantine.publish(address, None)
    assert quarantine.run("show", address)[0] == NOT_ACCEPTED
    quarantine.publish(address, status(address, *soft_errors(1)))
    code, out, _ = quarantine.run("show", address, "--json")
    assert (code, json.loads(out)["status"]) == (0, "ERRONEOUS")


def test_show_reads_the_partition_the_partitioner_of_address_signals_gives(quarantine) -> None:
    # An address that murmur2 and CRC-32 place on different partitions: only the right partitioner finds it.
    address = next(
        a
        for a in (f"user{n}@example.com" for n in range(100))
        if partition_of(a.encode(), PARTITIONS, "murmur2") != partition_of(a.encode(), PARTITIONS, "consistent")
    )
    quarantine.publish(address, status(address, *soft_errors(1)), partitioner="murmur2_random")
    assert quarantine.run("show", address, partitioner="murmur2_random")[0] == 0
    assert quarantine.run("show", address, partitioner="consistent_random")[0] == NOT_ACCEPTED


def test_show_all_lists_every_address_by_status_without_the_forgotten(quarantine) -> None:
    records = {
        "valid@example.com": status("valid@example.com", Signal("d", DELIVERED, T0, "d1", "m1")),
        "b-erroneous@example.com": status("b-erroneous@example.com", *soft_errors(1)),
        "a-erroneous@example.com": status("a-erroneous@example.com", *soft_errors(2)),
        "quarantined@example.com": status("quarantined@example.com", *soft_errors(5)),
        "complained@example.com": status("complained@example.com", Signal("c", COMPLAINT, T0, "d1", "m1")),
        "forgotten@example.com": status("forgotten@example.com", *soft_errors(5)),
    }
    for address, record in records.items():
        quarantine.publish(address, record)
    quarantine.publish("forgotten@example.com", None)

    code, out, _ = quarantine.run("show", "--all", "--json")
    listed = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [(r["address"], r["status"]) for r in listed] == [
        ("complained@example.com", "DENYLISTED"),
        ("quarantined@example.com", "QUARANTINED"),
        ("a-erroneous@example.com", "ERRONEOUS"),
        ("b-erroneous@example.com", "ERRONEOUS"),
        ("valid@example.com", "VALID"),
    ]
    assert listed[1] == records["quarantined@example.com"]

    code, out, _ = quarantine.run("show", "--all", "--status", "ERRONEOUS")
    header, *rows = out.splitlines()
    assert code == 0
    assert header.split()[:4] == ["address", "status", "errors", "reason"]
    assert [row.split()[:3] for row in rows] == [
        ["a-erroneous@example.com", "ERRONEOUS", "2"],
        ["b-erroneous@example.com", "ERRONEOUS", "1"],
    ]


def test_show_all_lists_the_statuses_of_the_schema() -> None:
    assert sorted(SEVERITY) == sorted(ADDRESS_STATUSES)


@pytest.mark.parametrize("kind", [RELEASE, FORGET])
def test_a_command_writes_one_audited_signal_to_the_address_s_partition(quarantine, kind: str) -> None:
    address = "Ops.Target@Example.com"
    code, out, err = quarantine.run(kind.lower(), address, "--actor", "alice")
    assert code == 0
    [(partition, key, signal)] = quarantine.signals_written()
    assert key == b"ops.target@example.com"
    assert partition == partition_of(key, PARTITIONS, "consistent_random")
    assert signal == {
        "event_id": out.strip(),
        "address": "ops.target@example.com",
        "kind": kind,
        "occurred_at": signal["occurred_at"],
        "delivery_id": None,
        "message_id": None,
        "reason": None,
        "actor": "alice",
    }
    assert uuid.UUID(signal["event_id"]).version == 4
    [audit] = [json.loads(line) for line in err.splitlines()]
    assert {name: audit[name] for name in ("event", "kind", "event_id", "actor", "address_ref", "partition")} == {
        "event": "address_command",
        "kind": kind,
        "event_id": signal["event_id"],
        "actor": "alice",
        "address_ref": address_ref(address, HASH_KEY.encode()),
        "partition": partition,
    }
    assert "target" not in err.lower()  # the address is never in the clear


def test_the_actor_is_the_os_user_at_host_by_default(quarantine) -> None:
    import getpass
    import socket

    assert quarantine.run("forget", "someone@example.com")[0] == 0
    [(_, _, signal)] = quarantine.signals_written()
    assert signal["actor"] == f"{getpass.getuser()}@{socket.gethostname()}"


def answer_as_the_stage(quarantine: Quarantine, tool: Any, answer: Callable[[Signal], dict | None]) -> Signal:
    """Wait for the tool's signal on address.signals, then publish what `answer(signal)` says for its address."""
    signals: list[tuple[int, bytes, dict[str, Any]]] = []
    while not signals:
        assert tool.poll() is None, outcome(tool)  # the tool ended without writing its signal
        signals = quarantine.signals_written()
    [(_, key, record)] = signals
    signal = Signal.from_record(record)
    quarantine.publish(key.decode(), answer(signal))
    return signal


def test_release_wait_ends_when_address_quarantine_shows_the_release(quarantine) -> None:
    address = "held@example.com"
    quarantine.publish(address, status(address, *soft_errors(5)))
    waiting = quarantine.tool("release", address, "--actor", "alice", "--wait", "15")
    # A status of the address decided by another signal does not end the wait; the one this release decided does.
    release = answer_as_the_stage(quarantine, waiting, lambda signal: status(address, *soft_errors(6)))
    quarantine.publish(address, status(address, *soft_errors(5), release))
    code, out, err = outcome(waiting)
    assert (code, out.strip()) == (0, release.event_id)
    assert err.splitlines()[-1] == "released: VALID by MANUAL_RELEASE"


def test_forget_wait_ends_at_the_address_s_tombstone(quarantine) -> None:
    address = "erase-me@example.com"
    quarantine.publish(address, status(address, *soft_errors(2)))
    waiting = quarantine.tool("forget", address, "--actor", "alice", "--wait", "15")
    answer_as_the_stage(quarantine, waiting, lambda signal: None)
    code, _, err = outcome(waiting)
    assert (code, err.splitlines()[-1]) == (0, "forgotten (tombstone)")


def test_forget_wait_of_an_address_without_status_has_nothing_to_wait_for(quarantine) -> None:
    code, _, err = quarantine.run("forget", "never@example.com", "--actor", "alice", "--wait", "15")
    assert (code, err.splitlines()[-1]) == (0, "address.quarantine held no status for the address: nothing to wait for")
    assert len(quarantine.signals_written()) == 1  # the stage's store may still hold it: the FORGET is sent


def test_a_wait_that_expires_exits_3_with_the_signal_written(quarantine) -> None:
    address = "stuck@example.com"
    quarantine.publish(address, status(address, *soft_errors(5)))
    code, out, err = quarantine.run("release", address, "--actor", "alice", "--wait", "1")
    assert code == NOT_APPLIED
    assert err.splitlines()[-1] == f"RELEASE written, but not shown applied in {quarantine.statuses} within 1 s"
    [(_, _, signal)] = quarantine.signals_written()
    assert signal["event_id"] == out.strip()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["show"], "show needs an ADDRESS, or --all"),
        (["show", "a@b.c", "--all"], "give an ADDRESS or --all, not both"),
        (["show", "a@b.c", "--status", "VALID"], "--status goes with --all"),
        (["release", "  ", "--actor", "alice"], "an address command needs an address"),
        (["forget", "a@b.c", "--actor", "alice", "--wait", "-1"], "--wait -1: a number of seconds, 0 or more"),
        (["release", "a@b.c", "--actor", "a" * 257], "actor: more than 256 characters"),
    ],
)
def test_a_wrong_request_is_one_line_and_exit_2(quarantine, args: list[str], line: str) -> None:
    code, out, err = quarantine.run(*args)
    assert (code, out, err) == (CANNOT_RUN, "", f"sendtrack quarantine: {line}\n")


def test_missing_topics_are_named(kafka) -> None:
    missing = Quarantine(kafka.bootstrap_servers, "no-such-signals", "no-such-statuses")
    code, _, err = missing.run("show", "a@b.c")
    assert (code, err) == (
        CANNOT_RUN,
        f"sendtrack quarantine: topic 'no-such-statuses' does not exist on Kafka at {kafka.bootstrap_servers}\n",
    )
    code, _, err = missing.run("release", "a@b.c", "--actor", "alice")
    assert (code, err) == (
        CANNOT_RUN,
        f"sendtrack quarantine: topic 'no-such-signals' does not exist on Kafka at {kafka.bootstrap_servers}\n",
    )


def test_an_unreachable_kafka_is_one_line_naming_it_and_exit_2() -> None:
    nowhere = Quarantine(f"127.0.0.1:{closed_port()}", "s", "q")
    running = [nowhere.tool("show", "a@b.c"), nowhere.tool("release", "a@b.c", "--actor", "alice", "--wait", "5")]
    for process in running:
        code, stdout, stderr = outcome(process)
        assert (code, stdout) == (CANNOT_RUN, "")
        reason = f"cannot reach Kafka at {nowhere.bootstrap} (connection refused) within 10 s"
        assert stderr == f"sendtrack quarantine: {reason}\n"


# -- through the quarantine stage ----------------------------------------------------------------------------------
STAGE_TIMEOUT_S = 90.0  # a generous bound for an instance to start and apply a signal: a hang, not a measure


def test_release_and_forget_wait_through_the_quarantine_stage(kafka, tmp_path) -> None:
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=2)
    ensure_topics(AdminClient({"bootstrap.servers": kafka.bootstrap_servers}), pipeline.topics, 2, quarantine=True)
    topics = pipeline.topics
    tool = Quarantine(kafka.bootstrap_servers, topics.address_signals, topics.address_quarantine)
    address = "bounced@example.com"
    hard_error = {
        "event_id": "mta-1",
        "address": "Bounced@Example.com",
        "kind": "HARD_ERROR",
        "occurred_at": int(time.time() * 1000) - 60_000,
        "delivery_id": "d1",
        "message_id": "m1",
        "reason": "user_unknown",
        "actor": None,
    }
    pipeline.produce_raw(topics.address_signals, address.encode(), SIGNALS.encode(hard_error))
    instance = pipeline.start("q", store="memory", quarantine=True)
    try:
        assert shown_when(tool, address, lambda record: record["status"] == "QUARANTINED", instance)["rule"] == (
            "HARD_ERROR"
        )
        code, out, err = outcome(
            tool.tool("release", "BOUNCED@example.com", "--actor", "ops", "--wait", str(STAGE_TIMEOUT_S)),
            STAGE_TIMEOUT_S + 10,
        )
        assert (code, err.splitlines()[-1]) == (0, "released: VALID by MANUAL_RELEASE"), err
        released = json.loads(tool.run("show", address, "--json")[1])
        assert (released["status"], released["decided_by"]["event_id"]) == ("VALID", out.strip())
        assert released["decided_by"]["kind"] == RELEASE

        code, _, err = outcome(
            tool.tool("forget", address, "--actor", "ops", "--wait", str(STAGE_TIMEOUT_S)), STAGE_TIMEOUT_S + 10
        )
        assert (code, err.splitlines()[-1]) == (0, "forgotten (tombstone)"), err
        assert tool.run("show", address)[0] == NOT_ACCEPTED
    finally:
        assert stop(instance) == 0


def shown_when(tool: Quarantine, address: str, wanted: Callable[[dict[str, Any]], bool], instance: Any) -> dict:
    """The address's record as `show --json` gives it, once it is `wanted`."""
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    while True:
        assert instance.poll() is None, f"the instance exited with {instance.returncode}"
        code, out, _ = tool.run("show", address, "--json")
        if code == 0 and wanted(json.loads(out)):
            return json.loads(out)
        assert time.monotonic() < deadline, f"show still gave {code} {out}"
