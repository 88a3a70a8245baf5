"""Whatever the bytes, `map` returns contract-valid events or raises UnmappableRecord, never anything else, and
never MapperBug (the safety net that turns a mapper's own exception into a dead letter)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.ingest.formats import FORMATS, MapperBug, UnmappableRecord, make_format
from consumer.ingest.formats.common import MAX_RECORD_BYTES
from tests.ingest.formats.support import assert_contract, sample_records

# Text with lone surrogates and NULs: JSON can carry both.
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**40), 10**40),
    st.floats(allow_nan=False),
    any_text,
    st.sampled_from(["", " ", "\x00", "\ud800", "x" * 300, "2026-01-01T00:00:00Z", "5.1.1", "550 5.1.1 no"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=20,
)
formats = st.sampled_from(FORMATS)


def outcome(name: str, value: bytes | None) -> list[Any] | UnmappableRecord:
    """The mapped events (checked against the contract) or the UnmappableRecord raised."""
    mapper = make_format(name)
    try:
        mapped = mapper.map(value)
    except UnmappableRecord as exc:
        assert not isinstance(exc, MapperBug), exc.__cause__
        assert exc.field
        assert exc.code == "unmappable"
        str(exc).encode("utf-8")  # the stage puts it in a dead letter's headers
        return exc
    assert_contract(mapped)
    assert mapper.map(value) == mapped  # deterministic, ids included
    return mapped


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()  # lone surrogates become \ud800 escapes


@given(formats, st.binary(max_size=300))
def test_any_bytes(name, value):
    outcome(name, value)


@given(formats, json_values)
def test_any_json(name, value):
    outcome(name, dumps(value))


@given(
    formats,
    st.dictionaries(
        st.sampled_from(["type", "eventType", "event", "mail", "meta", "timestamp"]), json_values, max_size=6
    ),
)
def test_any_json_with_the_format_s_keys(name, value):
    outcome(name, dumps(value))
    outcome(name, dumps([value]))


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside a JSON value that a mutation can touch."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


def mutate(record: Any, path: tuple[Any, ...], action: str, replacement: Any) -> Any:
    parent = record
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return record


SAMPLES = {name: sample_records(name) for name in FORMATS}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(formats, st.data())
def test_mutated_realistic_records(name, data):
    record = json.loads(json.dumps(data.draw(st.sampled_from(SAMPLES[name]))))
    for _ in range(data.draw(st.integers(1, 3))):
        places = paths(record)
        if not places:
            break
        path = data.draw(st.sampled_from(places))
        action = data.draw(st.sampled_from(["delete", "replace"]))
        record = mutate(record, path, action, data.draw(json_values))
    outcome(name, dumps(record))


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"null",
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b"[" * 990 + b"]" * 990,
        b"1" * 5_000,
        b"-" + b"9" * 4_000,
        b'"\\ud800"',
        b"\xff\xfe\x00\x00",
        b"\xef\xbb\xbf{}",
        b"NaN",
        b"[Infinity]",
        b'{"timestamp": 1e999, "type": "Delivery", "eventType": "Send", "event": "processed"}',
        b" " * (MAX_RECORD_BYTES + 1),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_hostile_input(name, value):
    assert isinstance(outcome(name, value), UnmappableRecord)


@pytest.mark.parametrize("name", FORMATS)
def test_deeply_nested_content_in_a_realistic_record(name):
    record = json.loads(json.dumps(SAMPLES[name][0]))
    target = record[0] if isinstance(record, list) else record
    target.pop("sg_event_id", None)
    target["extra"] = json.loads("[" * 900 + "]" * 900)
    outcome(name, dumps(record))


@pytest.mark.parametrize("name", FORMATS)
def test_every_sample_maps_twice_to_the_same_events(name):
    for record in SAMPLES[name]:
        result = outcome(name, dumps(record))
        assert not isinstance(result, UnmappableRecord), record
