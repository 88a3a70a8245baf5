"""reader.py against fastavro: the same values from every schema's records, and never a value fastavro would not read
from corrupted bytes."""

from __future__ import annotations

import math
from io import BytesIO
from typing import Any

import pytest
from fastavro import schemaless_reader
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.codec.reader import CorruptField, read_long, record_reader
from consumer.codec.schemas import build_schema, load, previous
from consumer.codec.writer import record_writer
from tests.codec.test_writer import LONGS, SCHEMAS, _fastavro, _records


def _fastavro_read(definition: dict[str, Any], body: bytes) -> tuple[dict[str, Any], int]:
    buffer = BytesIO(body)
    record = schemaless_reader(buffer, build_schema("any", definition).plain, None)
    return record, buffer.tell()


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (a float field may hold one)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


def _definitions(name: str) -> list[dict[str, Any]]:
    return [load(name).definition, *previous(name)]


@pytest.mark.parametrize("name", SCHEMAS)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_reads_what_fastavro_reads(name, data):
    definitions = _definitions(name)
    definition = definitions[data.draw(st.integers(0, len(definitions) - 1))]
    read = record_reader(definition)
    assert read is not None, f"{name} should not need fastavro"
    body = _fastavro(definition, data.draw(_records(definition)))
    record, end = read(body, 0)
    assert end == len(body)
    assert _same(record, _fastavro_read(definition, body)[0])


@pytest.mark.parametrize("name", SCHEMAS)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_corrupted_bytes_give_fastavros_value_or_an_error(name, data):
    """Whatever the damage, a value read is the value fastavro reads from the same bytes; where fastavro reads one
    and this refuses, the bytes hold what no writer makes (the module's list)."""
    definition = _definitions(name)[0]
    body = bytearray(_fastavro(definition, data.draw(_records(definition))))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(body)))
        damage = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if damage == "flip" and at < len(body):
            body[at] = data.draw(st.integers(0, 255))
        elif damage == "cut":
            del body[at:]
        else:
            body[at:at] = data.draw(st.binary(min_size=1, max_size=3))
    read = record_reader(definition)
    assert read is not None
    refusal = None
    try:
        ours = read(bytes(body), 0)
    except CorruptField as exc:
        ours, refusal = None, exc
    try:
        theirs = _fastavro_read(definition, bytes(body))
    except Exception:
        theirs = None
    if ours is not None:
        assert theirs is not None and ours[1] == theirs[1] and _same(ours[0], theirs[0])
    elif theirs is not None:
        assert refusal is not None and any(word in refusal.reason for word in STRICTER), (refusal, bytes(body), theirs)


# Where fastavro reads a value from bytes no writer makes, and this refuses them.
STRICTER = (
    "enum index",
    "boolean byte",
    "union branch",
    "beyond 64 bits",
    "longer than",
    "a length of -",
    "a block of",
)


@settings(max_examples=500)
@given(LONGS)
def test_longs_as_fastavro_reads_them(value):
    definition = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]}
    body = _fastavro(definition, {"n": value})
    assert read_long(body, 0) == (value, len(body))


def test_bad_bytes_are_refused_naming_the_field():
    definition = load("sending_log").definition
    log = {"log_id": "d/m/1", "delivery_id": "d", "message_id": "m", "new_status": "SENT", "occurred_at": 0}
    write, read = record_writer(definition), record_reader(definition)
    assert write is not None and read is not None
    body = write(log)
    assert read(body, 0)[0]["log_id"] == "d/m/1"
    cases = {
        b"": ("log_id", "IndexError"),
        body[:3]: ("log_id", "a length of 5 at byte 1 of 3"),  # cut inside the first string's bytes
        b"\x01" + body[1:]: ("log_id", "a length of -1"),
        b"\x0a" + b"\xff" * 5: ("log_id", "UnicodeDecodeError"),
        b"\x80" * 11: ("log_id", "longer than a long"),
    }
    for bad, (field, reason) in cases.items():
        with pytest.raises(CorruptField, match=reason) as caught:
            read(bad, 0)
        assert caught.value.field == field


def test_a_block_count_beyond_the_bytes_left_is_refused_at_once():
    definition = {"type": "record", "name": "R", "fields": [{"name": "xs", "type": {"type": "array", "items": "long"}}]}
    read = record_reader(definition)
    assert read is not None
    with pytest.raises(CorruptField, match="a block of"):
        read(b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f", 0)  # 2**62 items in no bytes


def test_schemas_with_types_it_does_not_read_are_left_to_fastavro():
    recursive = {"name": "next", "type": ["null", "R"]}
    fixed = {"name": "f", "type": {"type": "fixed", "name": "F", "size": 4}}
    two_types = {"name": "u", "type": ["string", "long"]}
    nulls = {"name": "n", "type": {"type": "array", "items": "null"}}  # a corrupt count would spin
    for field in (recursive, fixed, two_types, nulls):
        assert record_reader({"type": "record", "name": "R", "fields": [field]}) is None


def test_a_block_count_of_minus_2_63_is_no_empty_block():
    """fastavro negates the count in 64 bits, where -2**63 stays negative, and reads an empty block (hypothesis found
    it: a flipped run of bytes in a KPI record's map)."""
    definition = {"type": "record", "name": "R", "fields": [{"name": "m", "type": {"type": "map", "values": "long"}}]}
    body = b"\xff" * 9 + b"\x01" + b"\x00" + b"\x00"  # count -2**63, block size 0, then the end
    assert _fastavro_read(definition, body) == ({"m": {}}, len(body))
    read = record_reader(definition)
    assert read is not None
    with pytest.raises(CorruptField, match="a block of 9223372036854775808 items"):
        read(body, 0)
