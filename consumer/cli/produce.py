"""`sendtrack produce`: JSON-lines events, validated and Avro-encoded, keyed by delivery_id; or, with --format,
an MTA's own records (one per line), checked by its mapper and sent as they are, unkeyed, to a source topic."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable

from confluent_kafka import Producer

from consumer.cli.options import (
    ACK_TIMEOUT_S,
    NOT_ACCEPTED,
    ToolError,
    add,
    add_bootstrap,
    add_partitioner,
    connect,
    producer,
    tool,
)
from consumer.codec.avro import AvroCodec
from consumer.codec.errors import InvalidEvent
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT
from consumer.codec.validation import parse_json_event
from consumer.ingest.formats import FORMATS, make_format
from consumer.kafka.producer import produce_waiting
from consumer.kafka.topics import Topics

SCHEMA_OF_TOPIC = {Topics.deliveries: DELIVERY_EVENT, Topics.mta_events: MTA_EVENT}


def add_flags(parser: argparse.ArgumentParser) -> None:
    add_bootstrap(parser)
    add(parser, "--topic", required=True, help="deliveries or mta.events (another name needs --schema)")
    add(parser, "--schema", choices=(DELIVERY_EVENT, MTA_EVENT), default=None, help="default: from the topic name")
    add(parser, "--format", choices=FORMATS, default=None, help="the lines are this MTA's records (an ingest source)")
    add_partitioner(parser)
    parser.add_argument("file", help="JSON-lines file, or - for standard input")


Record = tuple[bytes | None, bytes]  # key, value
Encoder = Callable[[str], Record]  # raises InvalidEvent


def encode_lines(lines: Iterable[str], encode: Encoder) -> tuple[list[Record], list[str]]:
    """(key, value) of each good line, and a message for each bad one, with its line number."""
    good, bad = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            good.append(encode(line))
        except InvalidEvent as exc:
            bad.append(f"line {number}: {exc}")
    return good, bad


def contract_encoder(codec: AvroCodec) -> Encoder:
    def encode(line: str) -> Record:
        event = parse_json_event(line, codec.schema)
        return event["delivery_id"].encode(), codec.encode(event)

    return encode


def source_encoder(format_name: str) -> Encoder:
    """The line as the MTA would publish it, once its mapper accepts it (the ingest stage keys the events)."""
    mapper = make_format(format_name)

    def encode(line: str) -> Record:
        value = line.rstrip("\r\n").encode()
        mapper.map(value)
        return None, value

    return encode


def send(producer: Producer, topic: str, records: Iterable[Record]) -> None:
    for key, value in records:
        produce_waiting(producer, topic, value, key)


@tool("produce")
def command(args: argparse.Namespace) -> int:
    if args.format:
        encode, what = source_encoder(args.format), f"{args.format} records"
    else:
        schema = args.schema or SCHEMA_OF_TOPIC.get(args.topic)
        if schema is None:
            raise ToolError(f"unknown topic {args.topic!r}: pass --schema or --format")
        encode, what = contract_encoder(AvroCodec.named(schema)), "events"
    good, bad = _encode_file(args.file, encode)  # local problems first: they need no broker
    config = connect(args, args.topic, "WRITE")
    for message in bad:
        print(message, file=sys.stderr)
    sender = producer(config, {"linger.ms": 20, "partitioner": args.partitioner})
    send(sender, args.topic, good)
    unacknowledged = sender.unacknowledged(ACK_TIMEOUT_S)
    lost = f" ({unacknowledged} not acknowledged by Kafka within {ACK_TIMEOUT_S:g} s)" if unacknowledged else ""
    print(
        f"sent {len(good) - unacknowledged} of {len(good)} {what} to {args.topic}{lost}; {len(bad)} bad lines",
        file=sys.stderr,
    )
    return NOT_ACCEPTED if bad or unacknowledged else 0


def _encode_file(path: str, encode: Encoder) -> tuple[list[Record], list[str]]:
    if path == "-":
        return encode_lines(sys.stdin, encode)
    try:
        with open(path, encoding="utf-8") as lines:
            return encode_lines(lines, encode)
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
