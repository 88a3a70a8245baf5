"""`sendtrack quarantine show | release | forget`: an address's quarantine, read from address.quarantine, and the
operator's commands about it, written to address.signals (consumer/quarantine/README.md has the rules).

`show ADDRESS` reads one partition of the compacted address.quarantine, the one the quarantine stage writes the
address's records to: the partition number its signals have in address.signals, where the producers' partitioner
put them (consumer/kafka/partitioners.py computes it). So --partitioner must be the one the producers of
address.signals use (`sendtrack run --partitioner`), or show reads the wrong partition and finds nothing.
`show --all` reads every partition. The last record of an address wins; a tombstone means unknown.

`release` and `forget` write one RELEASE or FORGET signal (consumer/quarantine/commands.py): a fresh event id, now,
the actor (--actor, or user@host), through the idempotent producer to the address's partition. Each is audited by
one JSON log line on stderr naming the event id, the actor and the address's keyed hash (address_ref), never the
address. Stdout gets the event id. With --wait, the tool then follows the address's partition of address.quarantine
until the stage shows the command applied: a status record decided by this release, or the address's tombstone. (A
later signal of the address that the stage applies in the same checkpoint decides the one record it publishes; the
wait then expires, exit 3, though the release was applied: `show` tells.)

Exit codes, besides the tools' own (cli/options.py: 0 done, 2 cannot run):
- 1 (NOT_ACCEPTED) show: address.quarantine holds no status for the address (never seen, forgotten or dropped);
  release, forget: Kafka did not acknowledge the signal;
- 3 (NOT_APPLIED) release, forget --wait: the signal was written (the stage will apply it) but address.quarantine
  did not show it applied within the wait.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer.cli.options import (
    ACK_TIMEOUT_S,
    NOT_ACCEPTED,
    ToolError,
    add,
    add_bootstrap,
    add_partitioner,
    aligned,
    connect,
    kafka_failure,
    producer,
    tool,
)
from consumer.codec.avro import AvroCodec
from consumer.codec.errors import DecodeError, InvalidEvent
from consumer.codec.schemas import ADDRESS_SIGNAL, ADDRESS_STATUS
from consumer.kafka.access import denial, reader_denial
from consumer.kafka.config import reader_config
from consumer.kafka.partitioners import partition_of
from consumer.kafka.topics import Topics
from consumer.ops import logging
from consumer.quarantine.commands import command_key, command_signal
from consumer.quarantine.intake import check_signal
from consumer.quarantine.privacy import address_ref
from consumer.quarantine.rules import DENYLISTED, ERRONEOUS, QUARANTINED, VALID
from consumer.quarantine.signals import FORGET, RELEASE

NOT_APPLIED = 3
READER_GROUP = "sendtrack-quarantine-reader"  # never joined: assigned partitions, no commits
STALL_S = 30.0  # reading address.quarantine to its end fails after this long without a record or a partition end
SEVERITY = (DENYLISTED, QUARANTINED, ERRONEOUS, VALID)  # the statuses, in the order of `show --all`

Latest = dict[bytes, bytes | None]  # key -> the value of its last record (None: a tombstone)


# -- flags ---------------------------------------------------------------------------------------------------------
def add_flags(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    show = _action(actions, "show", "an address's status and history, or every address by status (--all)")
    show.add_argument("address", nargs="?", help="the recipient address (any case)")
    show.add_argument("--all", action="store_true", help="every address address.quarantine holds, by status")
    show.add_argument("--status", choices=SEVERITY, default=None, help="with --all: only addresses in this status")
    show.add_argument("--json", action="store_true", help="the record as JSON (--all: one object per line)")
    for name, kind, applied in (
        ("release", RELEASE, "released"),
        ("forget", FORGET, "erased (its tombstone)"),
    ):
        command = _action(actions, name, f"write an audited {kind} signal for the address")
        command.add_argument("address", help="the recipient address (any case)")
        add(command, "--actor", default=None, help="who gives the command (default: the OS user@host)")
        command.add_argument(
            "--wait",
            type=float,
            default=None,
            metavar="SECONDS",
            help=f"then wait until address.quarantine shows the address {applied}; exit 3 if it does not in time",
        )


def _action(actions: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    sub = actions.add_parser(name, help=help_text, description=help_text)
    add_bootstrap(sub)
    add_partitioner(sub, Topics.address_signals)  # as address.signals' producers: it places the address
    for topic in ("address_signals", "address_quarantine"):
        add(sub, f"--topic-{topic.replace('_', '-')}", default=getattr(Topics, topic), help="topic name")
    return sub


@tool("quarantine")
def command(args: argparse.Namespace) -> int:
    if args.action == "show":
        return show_all(args) if args.all else show(args)
    return send(args, RELEASE if args.action == "release" else FORGET)


# -- reading address.quarantine ------------------------------------------------------------------------------------
class StatusReader:
    """Partitions of address.quarantine read from the start (committed records only), in offset order."""

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        self.config, self.topic = config, topic
        self._consumer = Consumer(reader_config(config, READER_GROUP))

    def __enter__(self) -> StatusReader:
        return self

    def __exit__(self, *_: object) -> None:
        self._consumer.close()

    def partition_count(self, topic: str) -> int:
        """The topic's partition count; a consumer's metadata request never creates a topic."""
        metadata = self._consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            denied = denial(metadata.error, topic, topic_operation="DESCRIBE")
            if denied is not None:
                raise denied
            raise ToolError(f"topic {topic!r} does not exist on Kafka at {self.config['bootstrap.servers']}")
        return len(metadata.partitions)

    def assign(self, partitions: list[int]) -> None:
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])

    def to_end(self, partitions: list[int], latest: Latest, key: bytes | None = None) -> None:
        """Read the assigned partitions to their end, keeping the last value of each key (of `key` only)."""
        remaining = set(partitions)
        stalled_at = time.monotonic() + STALL_S  # a big partition takes its time; one that stops answering fails
        while remaining:
            if time.monotonic() > stalled_at:
                raise TimeoutError(f"{self.topic} stopped answering before its end (nothing for {STALL_S:g} s)")
            for msg in self._messages(0.2):
                stalled_at = time.monotonic() + STALL_S
                if msg.error() is not None:  # the partition's end
                    remaining.discard(msg.partition())
                elif key is None or msg.key() == key:
                    latest[msg.key()] = msg.value()

    def follow(self, key: bytes, until: Callable[[bytes | None], bool], timeout_s: float) -> bool:
        """Read on (past the end) until a record of `key` satisfies `until`; False when timeout_s passes first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msg in self._messages(min(0.2, max(deadline - time.monotonic(), 0))):
                if msg.error() is None and msg.key() == key and until(msg.value()):
                    return True
        return False

    def _messages(self, timeout_s: float) -> Iterator[Message]:
        """Records, and partition ends as messages carrying _PARTITION_EOF; any other error raises."""
        for msg in self._consumer.consume(1000, timeout_s):
            error = msg.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise reader_denial(error, self.topic, READER_GROUP) or KafkaException(error)
            yield msg


@cache
def codec(schema: str) -> AvroCodec:
    return AvroCodec.named(schema)


def decode(value: bytes, where: str) -> dict[str, Any]:
    try:
        return codec(ADDRESS_STATUS).decode(value)
    except DecodeError as exc:
        raise ToolError(f"a record of {where} is no AddressStatus: {exc}") from None


def address_partition(reader: StatusReader, args: argparse.Namespace, key: bytes) -> int:
    """The partition of address.signals (and so of address.quarantine) the address's records go to."""
    return partition_of(key, reader.partition_count(args.topic_address_signals), args.partitioner)


def status_of(reader: StatusReader, partition: int, key: bytes) -> dict[str, Any] | None:
    """The address's last status in its partition; None if it has none or its last record is a tombstone."""
    latest: Latest = {}
    reader.assign([partition])
    reader.to_end([partition], latest, key)
    value = latest.get(key)
    return None if value is None else decode(value, f"{reader.topic}[{partition}]")


@contextmanager
def reading(config: dict[str, Any], topic: str) -> Iterator[None]:
    """A Kafka failure or a timeout while reading becomes the tool's one line."""
    try:
        yield
    except (KafkaException, TimeoutError) as exc:
        raise kafka_failure(config, f"reading {topic}", exc) from None


# -- show ----------------------------------------------------------------------------------------------------------
def show(args: argparse.Namespace) -> int:
    if not args.address or not args.address.strip():
        raise ToolError("show needs an ADDRESS, or --all")
    if args.status:
        raise ToolError("--status goes with --all")
    topic = args.topic_address_quarantine
    config = connect(args, topic)
    key = command_key(args.address)
    with reading(config, topic), StatusReader(config, topic) as reader:
        partition = address_partition(reader, args, key)
        record = status_of(reader, partition, key)
    if record is None:
        print(
            f"sendtrack quarantine: unknown address: {topic} has no status for it (partition {partition}, "
            f"placed by {args.partitioner}); never seen, forgotten or dropped",
            file=sys.stderr,
        )
        return NOT_ACCEPTED
    print(json.dumps(record, ensure_ascii=False) if args.json else describe(record))
    return 0


def show_all(args: argparse.Namespace) -> int:
    if args.address:
        raise ToolError("give an ADDRESS or --all, not both")
    topic = args.topic_address_quarantine
    config = connect(args, topic)
    latest: Latest = {}
    with reading(config, topic), StatusReader(config, topic) as reader:
        partitions = list(range(reader.partition_count(topic)))
        reader.assign(partitions)
        reader.to_end(partitions, latest)
    records = [decode(value, topic) for value in latest.values() if value is not None]
    records = [r for r in records if args.status in (None, r["status"])]
    records.sort(key=lambda r: (SEVERITY.index(r["status"]), r["address"]))
    if args.json:
        for record in records:
            print(json.dumps(record, ensure_ascii=False))
    else:
        print(overview(records))
    return 0


def when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def deciding(record: dict[str, Any]) -> str:
    signal = record["decided_by"]
    if signal is None:
        return "time (no signal)" if record["rule"] else "-"
    where = "".join(f", {name} {signal[f'{name}_id']}" for name in ("delivery", "message") if signal[f"{name}_id"])
    return f"{signal['kind']} at {when(signal['occurred_at'])} (event {signal['event_id']}{where})"


def describe(record: dict[str, Any]) -> str:
    """An address's status, then its history newest first."""
    fields = [
        ("address", record["address"]),
        ("status", record["status"]),
        ("error count", str(record["error_count"])),
        ("reason", record["reason"] or "-"),
        ("since", when(record["since"])),
        ("rule", record["rule"] or "-"),
        ("deciding event", deciding(record)),
        ("next change", when(record["next_change_at"]) if record["next_change_at"] else "none by time alone"),
        ("last signal", when(record["updated_at"])),
    ]
    history = sorted(record["history"], key=lambda m: m["occurred_at"], reverse=True)
    rows = [["first signal", "last signal", "delivery", "message", "status", "opened", "clicked"]]
    rows += [
        [
            when(m["occurred_at"]),
            when(m["updated_at"]),
            m["delivery_id"],
            m["message_id"],
            m["status"],
            "yes" if m["opened"] else "no",
            "yes" if m["clicked"] else "no",
        ]
        for m in history
    ]
    heading = f"\nhistory, newest first ({len(history)} messages)"
    return "\n".join([aligned([[name, value] for name, value in fields]), heading, aligned(rows)])


def overview(records: list[dict[str, Any]]) -> str:
    rows = [["address", "status", "errors", "reason", "since", "rule", "next change", "last signal"]]
    rows += [
        [
            r["address"],
            r["status"],
            str(r["error_count"]),
            r["reason"] or "-",
            when(r["since"]),
            r["rule"] or "-",
            when(r["next_change_at"]),
            when(r["updated_at"]),
        ]
        for r in records
    ]
    return aligned(rows)


# -- release, forget -----------------------------------------------------------------------------------------------
def os_actor() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):  # no login name for this uid
        raise ToolError("cannot tell who gives the command: pass --actor NAME") from None


def send(args: argparse.Namespace, kind: str) -> int:
    if args.wait is not None and args.wait < 0:
        raise ToolError(f"--wait {args.wait:g}: a number of seconds, 0 or more")
    now = int(time.time() * 1000)
    key = command_key(args.address)
    try:
        signal = command_signal(kind, args.address, args.actor or os_actor(), now, str(uuid.uuid4()))
        check_signal(signal, key, now)  # as the stage checks it: what it would dead-letter is refused here
    except (ValueError, InvalidEvent) as exc:
        raise ToolError(str(exc)) from None
    signals_topic, topic = args.topic_address_signals, args.topic_address_quarantine
    config = connect(args, signals_topic, "WRITE")
    if args.wait is not None:
        connect(args, topic)
    with reading(config, topic), StatusReader(config, topic) as reader:
        partition = address_partition(reader, args, key)
        before = status_of(reader, partition, key) if args.wait is not None else None
        if not written(config, signals_topic, partition, key, signal):
            return NOT_ACCEPTED
        print(signal["event_id"], flush=True)
        if args.wait is None:
            return 0
        return await_applied(reader, args.wait, key, signal, before)


def written(config: dict[str, Any], topic: str, partition: int, key: bytes, signal: dict[str, Any]) -> bool:
    """Produce the signal; its audit line says whether Kafka acknowledged it."""
    sender = producer(config)
    sender.produce(topic, codec(ADDRESS_SIGNAL).encode(signal), key, partition=partition)
    acknowledged = sender.unacknowledged(ACK_TIMEOUT_S) == 0
    logging.configure(json=True)
    log = logging.get("sendtrack.quarantine").bind(
        kind=signal["kind"],
        event_id=signal["event_id"],
        actor=signal["actor"],
        address_ref=address_ref(signal["address"]),
        topic=topic,
        partition=partition,
    )
    if acknowledged:
        log.info("address_command")
    else:
        log.error("address_command_not_acknowledged", timeout_s=ACK_TIMEOUT_S)
    return acknowledged


def await_applied(
    reader: StatusReader, wait_s: float, key: bytes, signal: dict[str, Any], before: dict[str, Any] | None
) -> int:
    """Follow the address's partition from where `status_of` left it until the stage shows the command applied."""
    if signal["kind"] == FORGET:
        if before is None:
            print("address.quarantine held no status for the address: nothing to wait for", file=sys.stderr)
            return 0
        applied, shown = reader.follow(key, lambda value: value is None, wait_s), "forgotten (tombstone)"
    else:
        decided: list[dict[str, Any]] = []  # the record this release decided

        def released(value: bytes | None) -> bool:
            record = decode(value, reader.topic) if value is not None else {}
            if (record.get("decided_by") or {}).get("event_id") == signal["event_id"]:
                decided.append(record)
            return bool(decided)

        applied = reader.follow(key, released, wait_s)
        shown = f"released: {decided[0]['status']} by {decided[0]['rule']}" if decided else ""
    if not applied:
        print(f"{signal['kind']} written, but not shown applied in {reader.topic} within {wait_s:g} s", file=sys.stderr)
        return NOT_APPLIED
    print(shown, file=sys.stderr)
    return 0
