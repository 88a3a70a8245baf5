"""Helpers for the format tests: sample records, contract checks, short summaries of mapped events."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import MTA_EVENT, load
from consumer.codec.validation import check_event
from consumer.ingest.formats import Mapped, make_format

SAMPLES = Path(__file__).parents[3] / "samples" / "ingest"


def sample_lines(name: str) -> list[bytes]:
    return [line for line in (SAMPLES / f"{name}.jsonl").read_bytes().splitlines() if line.strip()]


def sample_records(name: str) -> list[Any]:
    return [json.loads(line) for line in sample_lines(name)]


@cache
def codec() -> AvroCodec:
    return AvroCodec.named(MTA_EVENT)


def assert_contract(mapped: list[Mapped]) -> None:
    """Every event is a complete MtaEvent that passes the contract checks and encodes."""
    fields = [f["name"] for f in load(MTA_EVENT).definition["fields"]]
    for item in mapped:
        assert list(item.event) == fields
        check_event(item.event, item.event["delivery_id"].encode())
        codec().encode(item.event)


def map_json(name: str, record: Any, **kwargs: Any) -> list[Mapped]:
    mapped = make_format(name, **kwargs).map(json.dumps(record).encode())
    assert_contract(mapped)
    return mapped


def summary(mapped: list[Mapped]) -> list[tuple[Any, ...]]:
    """(type, message_id, reason, rule) per event: what most tests assert on."""
    return [(m.event["type"], m.event["message_id"], m.event["reason"], m.rule) for m in mapped]
