"""`sendtrack tail`: decode and print the committed records of any sendtrack topic.

The decoder comes from the topic's name (the `--topic-*` names of `run`), or is forced with `--as` or, for an
ingest source topic, `--format`. A record that does not decode is printed as such, with the reason and a preview
of its bytes: the tool never stops on one bad record.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer.cli.options import ToolError, add, add_bootstrap, connect, kafka_failure, tool
from consumer.codec.avro import HEADER_SIZE, MAGIC, AvroCodec
from consumer.codec.control import parse_control
from consumer.codec.schemas import (
    ADDRESS_SIGNAL,
    ADDRESS_STATUS,
    DELIVERY_EVENT,
    DELIVERY_KPI,
    MTA_EVENT,
    SENDING_LOG,
    Schema,
)
from consumer.codec.validation import load_json
from consumer.core.events import Fact
from consumer.core.status import MessageState
from consumer.delivery import records as state
from consumer.ingest.formats import FORMATS, make_format
from consumer.kafka.access import reader_denial
from consumer.kafka.config import reader_config
from consumer.kafka.topics import Topics
from consumer.quarantine import state_codec as quarantine_state
from consumer.quarantine.signals import normal_address

AVRO_SCHEMAS = (DELIVERY_EVENT, MTA_EVENT, DELIVERY_KPI, SENDING_LOG, ADDRESS_SIGNAL, ADDRESS_STATUS)
DECODERS = (
    *(f"avro:{name}" for name in AVRO_SCHEMAS),
    "control",
    "json",
    "changelog",
    "quarantine-changelog",
    "dlq",
    "raw",
)
# The decoder of each topic, by its field in Topics.
DECODER_OF = {
    "deliveries": f"avro:{DELIVERY_EVENT}",
    "mta_events": f"avro:{MTA_EVENT}",
    "control": "control",
    "kpis": f"avro:{DELIVERY_KPI}",
    "sending_logs": f"avro:{SENDING_LOG}",
    "dlq": "dlq",
    "changelog": "changelog",
    "address_signals": f"avro:{ADDRESS_SIGNAL}",
    "address_quarantine": f"avro:{ADDRESS_STATUS}",  # a null value: the address forgotten or dropped
    "quarantine_changelog": "quarantine-changelog",
}
ADDRESS_KEYED = {f"avro:{ADDRESS_SIGNAL}", f"avro:{ADDRESS_STATUS}"}
DLQ_PREFIX = "sendtrack."  # the headers a dead letter gains; the rest are the original record's
PREVIEW_BYTES = 64
READER_GROUP = "sendtrack-tail"  # never joined: assigned partitions, no commits


@dataclass(frozen=True)
class Record:
    """What a decoder sees of a Kafka record."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Decoded:
    schema: str  # what the value is: an Avro full name, a state record kind, ...
    wire: str  # how it is written: avro (single-object), json, changelog, raw, ...
    value: Any = None  # None: a null value (a tombstone), or undecodable
    fingerprint: str | None = None  # of an Avro frame, hex as it appears in the bytes
    error: str | None = None  # why the bytes did not decode
    raw: bytes | None = None  # the bytes that did not decode

    @property
    def label(self) -> str:
        return f"{self.wire}:{self.schema}" + (f" fp={self.fingerprint}" if self.fingerprint else "")

    def as_json(self) -> dict[str, Any]:
        body = {"schema": self.schema, "wire_format": self.wire, "fingerprint": self.fingerprint, "value": self.value}
        if self.error is not None:
            body["undecodable"] = {"reason": self.error, **preview(self.raw)}
        return body


Decoder = Callable[[Record], Decoded]


def preview(data: bytes | None) -> dict[str, Any]:
    """The start of some bytes as hex and base64, and their length."""
    head = (data or b"")[:PREVIEW_BYTES]
    return {"length": len(data or b""), "hex": head.hex(" "), "base64": base64.b64encode(head).decode()}


def text(data: bytes | None) -> str | None:
    """Bytes as readable text: UTF-8, with anything unprintable escaped (state keys hold NULs)."""
    if data is None:
        return None
    decoded = data.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in decoded)


def safely(schema: str, wire: str, decode: Callable[[Record], Any]) -> Decoder:
    """A decoder that shows a null value as such and turns any failure into an undecodable record."""

    def run(record: Record) -> Decoded:
        if record.value is None:
            return Decoded(schema, wire)
        try:
            return Decoded(schema, wire, decode(record))
        except Exception as exc:  # corrupt input raises many types; each one is only a reason to show
            return Decoded(schema, wire, error=f"{type(exc).__name__}: {exc}", raw=record.value)

    return run


def full_name(schema: Schema) -> str:
    return f"{schema.definition['namespace']}.{schema.definition['name']}"


def avro_decoder(name: str) -> Decoder:
    codec = AvroCodec.named(name)
    decode = safely(full_name(codec.schema), "avro", lambda record: codec.decode(record.value))

    def run(record: Record) -> Decoded:
        value = record.value or b""
        framed = value[:2] == MAGIC and len(value) >= HEADER_SIZE
        return replace(decode(record), fingerprint=value[2:HEADER_SIZE].hex() if framed else None)

    return run


def ingest_decoder(name: str) -> Decoder:
    """A source record of an MTA's own format, with the contract events it maps to (and the deciding rule)."""
    mapper = make_format(name)

    def decode(record: Record) -> dict[str, Any]:
        events = [{"rule": mapped.rule, "event": mapped.event} for mapped in mapper.map(record.value)]
        return {"maps_to": events, "source": load_json(record.value or b"", "value")}

    return safely(f"{name}->{full_name(AvroCodec.named(MTA_EVENT).schema)}", "json", decode)


def raw_value(record: Record) -> Any:
    """UTF-8 text as it is; other bytes as a preview."""
    try:
        return (record.value or b"").decode()
    except UnicodeDecodeError:
        return preview(record.value)


# -- the changelog: keys and values of consumer/delivery/records.py -----------------------------------
def message_state(message: MessageState) -> dict[str, Any]:
    bounces = {name: getattr(message, name) for name in ("hard", "soft", "exhausted")}
    return {
        "facts": [fact.name for fact in Fact if message.facts & fact],
        "changes": message.changes,
        **{name: bounce._asdict() if bounce else None for name, bounce in bounces.items()},
    }


# How each kind of state entry's value reads; a null value deletes the entry.
STATE_VALUES: dict[str, Callable[[bytes], Any]] = {
    "message": lambda value: message_state(state.decode_message(value)),
    "delivery": lambda value: asdict(state.decode_delivery(value)),
    "counted": bytes.decode,  # what was counted once: OPEN, CLICK or REJECTED_CONFIRMATION
    "watermark": int,
}


def state_entry(key: bytes) -> tuple[str, dict[str, str]]:
    """The kind of state entry a changelog key names, and the ids in it."""
    if key == state.WATERMARK:
        return "watermark", {}
    if key.startswith(state.DELIVERY):
        return "delivery", {"delivery_id": key[len(state.DELIVERY) :].decode()}
    if key.startswith((state.MESSAGE, state.COUNTED, state.REJECTED)):
        prefix, delivery_id, rest = state.split_key(key)
        if prefix == state.MESSAGE:
            return "message", {"delivery_id": delivery_id, "message_id": rest}
        return "counted", {"delivery_id": delivery_id, "event_id": rest}  # an engagement's or a rejection's
    raise ValueError(f"not a state key: {text(key)}")


def state_decoder(
    entry: Callable[[bytes], tuple[str, dict[str, Any]]], values: Mapping[str, Callable[[bytes], Any]], name: str
) -> Callable[[Record], Decoded]:
    """A stage changelog's decoder, from its key layout (`entry`: the kind of a key and what it holds) and how each
    kind's value reads; a record of no known layout is shown raw, with why, under `name`."""

    def decode(record: Record) -> Decoded:
        try:
            kind, held = entry(record.key or b"")
            value = None if record.value is None else values[kind](record.value)
        except Exception as exc:  # a key or value of no known layout
            raw = record.key if record.value is None else record.value
            return Decoded(name, "changelog", error=f"{type(exc).__name__}: {exc}", raw=raw)
        return Decoded(kind, "changelog", {"kind": kind, **held, "tombstone": record.value is None, "state": value})

    return decode


changelog_decoder = state_decoder(state_entry, STATE_VALUES, "state")


# -- the quarantine changelog: keys and values of consumer/quarantine/state_codec.py ----------------------------------
def quarantine_entry(key: bytes) -> tuple[str, dict[str, Any]]:
    """The kind of quarantine state entry a changelog key names, and what the key holds."""
    if key == quarantine_state.CLOCK:
        return "clock", {}
    if key.startswith(quarantine_state.ADDRESS):
        return "address", {"address": key[len(quarantine_state.ADDRESS) :].decode()}
    if key.startswith(quarantine_state.DEADLINE):
        try:
            due, address = quarantine_state.deadline_of(key)
        except struct.error:
            raise ValueError(f"a deadline key too short for its due time: {text(key)}") from None
        return "deadline", {"due": due, "address": address}
    if key.startswith(quarantine_state.STATUS_COUNT):
        return "status_count", {"status": key[len(quarantine_state.STATUS_COUNT) :].decode()}
    raise ValueError(f"not a quarantine state key: {text(key)}")


# How each kind's value reads: an address's state as its compact JSON, a count or a time as a number.
QUARANTINE_VALUES: dict[str, Callable[[bytes], Any]] = {
    "address": lambda value: load_json(value, "value"),
    "deadline": lambda value: None,  # the key is the entry
    "status_count": int,
    "clock": int,
}


quarantine_changelog_decoder = state_decoder(quarantine_entry, QUARANTINE_VALUES, "quarantine-state")


class Decoders:
    """Every decoder, built on first use; the topic names map to theirs."""

    def __init__(self, topics: Topics) -> None:
        self._of_topic = {getattr(topics, name): kind for name, kind in DECODER_OF.items()}
        self._built: dict[str, Decoder] = {}

    def kind_of(self, topic: str) -> str | None:
        return self._of_topic.get(topic)

    def get(self, kind: str) -> Decoder:
        if kind not in self._built:
            self._built[kind] = self._build(kind)
        return self._built[kind]

    def _build(self, kind: str) -> Decoder:
        if kind.startswith("avro:"):
            return avro_decoder(kind.removeprefix("avro:"))
        if kind.startswith("format:"):
            return ingest_decoder(kind.removeprefix("format:"))
        return {
            "control": safely("control-command", "json", lambda r: asdict(parse_control(r.value, r.key))),
            "json": safely("any", "json", lambda r: load_json(r.value or b"", "value")),
            "raw": safely("bytes", "raw", raw_value),
            "changelog": changelog_decoder,
            "quarantine-changelog": quarantine_changelog_decoder,
            "dlq": self._dead_letter,
        }[kind]

    def _dead_letter(self, record: Record) -> Decoded:
        """The original record, decoded as its source topic's records are, and why it was set aside."""
        added = {name.removeprefix(DLQ_PREFIX): text(v) for name, v in record.headers if name.startswith(DLQ_PREFIX)}
        original = Record(record.key, record.value, [h for h in record.headers if not h[0].startswith(DLQ_PREFIX)])
        source = added.get("source.topic") or ""
        decoded = self.get(self.kind_of(source) or "raw")(original)
        body = {
            "error": {name.removeprefix("error."): v for name, v in added.items() if name.startswith("error.")},
            "source": {
                "topic": source,
                "partition": added.get("source.partition"),
                "offset": added.get("source.offset"),
            },
            "original": decoded.as_json(),
            **{name: v for name, v in added.items() if name.startswith("value.")},  # truncated_from, dropped
        }
        return Decoded(decoded.label, "dlq", body)


# -- printing --------------------------------------------------------------------------------------
def as_json(topic: str, msg: Message, decoded: Decoded) -> str:
    _, timestamp = msg.timestamp()
    line = {
        "topic": topic,
        "partition": msg.partition(),
        "offset": msg.offset(),
        "key": text(msg.key()),
        "timestamp": timestamp,
        "headers": [[name, text(value)] for name, value in msg.headers() or []],
        **decoded.as_json(),
    }
    return json.dumps(line, ensure_ascii=False)


def pretty(topic: str, msg: Message, decoded: Decoded) -> str:
    _, timestamp = msg.timestamp()
    when = datetime.fromtimestamp(timestamp / 1000, UTC).isoformat(timespec="milliseconds") if timestamp > 0 else "-"
    lines = [f"{topic}[{msg.partition()}]@{msg.offset()} key={text(msg.key())} {decoded.label} at={when}"]
    lines += [f"  header {name}={text(value)}" for name, value in msg.headers() or []]
    if decoded.error is not None:
        shown = preview(decoded.raw)
        lines += [f"  UNDECODABLE: {decoded.error}", f"  {shown['length']} bytes, hex: {shown['hex']}"]
        lines.append(f"  base64: {shown['base64']}")
    elif decoded.value is None:
        lines.append("  (null value: a tombstone)")
    else:
        lines += ["  " + line for line in json.dumps(decoded.value, indent=2, ensure_ascii=False).splitlines()]
    return "\n".join(lines)


# -- reading ---------------------------------------------------------------------------------------
def consume(consumer: Consumer, topic: str, partitions: list[int], follow: bool) -> Iterator[Message]:
    """The records of the assigned partitions; without `follow`, until each partition's end. A missing
    permission ends it (Denied): librdkafka would retry for ever."""
    remaining = set(partitions)
    while follow or remaining:
        for msg in consumer.consume(500, 0.2):
            error = msg.error()
            if error is None:
                yield msg
            elif error.code() == KafkaError._PARTITION_EOF:
                remaining.discard(msg.partition())
            elif error.fatal():
                raise KafkaException(error)
            elif denied := reader_denial(error, topic, READER_GROUP):
                raise denied
            else:  # librdkafka retries by itself (a broker away for a while): say so and go on
                print(f"sendtrack tail: {error.str()}", file=sys.stderr)


def key_matches(kind: str, msg: Message, wanted: str) -> bool:
    """The record's key is `wanted` (an address in any case); a changelog record matches when its state entry
    belongs to that delivery (the quarantine's: to that address)."""
    key = msg.key()
    if key == (normal_address(wanted) if kind in ADDRESS_KEYED else wanted).encode():
        return True
    if key is None:
        return False
    try:
        if kind == "quarantine-changelog":
            return quarantine_entry(key)[1].get("address") == normal_address(wanted)
        return kind == "changelog" and state.delivery_of(key) == wanted
    except ValueError:  # a key of no known layout (or not UTF-8) belongs to nobody
        return False


def decoder_kind(args: argparse.Namespace, decoders: Decoders) -> str:
    if args.format:
        return f"format:{args.format}"
    kind = args.decoder or decoders.kind_of(args.topic)
    if kind is None:
        raise ToolError(f"which records are in {args.topic!r}? pass --as DECODER or --format FORMAT")
    return kind


def tail(args: argparse.Namespace, config: dict[str, Any], kind: str, decoder: Decoder) -> None:
    consumer = Consumer(reader_config(config, READER_GROUP))
    start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
    shown = 0
    try:
        partitions = sorted(consumer.list_topics(args.topic, timeout=10).topics[args.topic].partitions)
        consumer.assign([TopicPartition(args.topic, p, start) for p in partitions])
        for msg in consume(consumer, args.topic, partitions, args.follow or not args.from_beginning):
            if args.key is not None and not key_matches(kind, msg, args.key):
                continue
            decoded = decoder(Record(msg.key(), msg.value(), list(msg.headers() or [])))
            print((as_json if args.json else pretty)(args.topic, msg, decoded), flush=True)
            shown += 1
            if shown == args.max:
                return
    finally:
        consumer.close()


# -- the command -----------------------------------------------------------------------------------
def at_least_one(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is not a number of records")
    return number


def add_flags(parser: argparse.ArgumentParser) -> None:
    add_bootstrap(parser)
    parser.add_argument("topic", help="the topic to read")
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest record, not the end")
    parser.add_argument("--follow", action="store_true", help="keep waiting for new records (implied from the end)")
    parser.add_argument("--key", default=None, help="only records with this key (changelog: of this delivery)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--max", type=at_least_one, default=None, help="stop after this many records")
    forced = parser.add_mutually_exclusive_group()
    forced.add_argument("--as", dest="decoder", choices=DECODERS, default=None, help="decoder (default: by topic)")
    forced.add_argument("--format", choices=FORMATS, default=None, help="an ingest source topic of this format")
    for topic in fields(Topics):
        add(parser, f"--topic-{topic.name.replace('_', '-')}", default=topic.default, help="topic name")


@tool("tail")
def command(args: argparse.Namespace) -> int:
    decoders = Decoders(Topics(**{topic.name: getattr(args, f"topic_{topic.name}") for topic in fields(Topics)}))
    kind = decoder_kind(args, decoders)
    config = connect(args, args.topic)
    try:
        tail(args, config, kind, decoders.get(kind))
    except KafkaException as exc:
        raise kafka_failure(config, f"reading {args.topic}", exc) from None
    except BrokenPipeError:  # `| head` closed the pipe: that is an end, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
