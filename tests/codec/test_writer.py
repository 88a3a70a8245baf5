from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.codec.schemas import build_schema, load, previous, schemas_dir
from consumer.codec.writer import record_writer, write_long

SCHEMAS = sorted(path.stem for path in schemas_dir().glob("*.avsc"))
LONGS = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)  # lone surrogates are not UTF-8


def _values(avro_type: Any, enums: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    """Values fastavro accepts for a (plain) schema type."""
    if isinstance(avro_type, list):
        return st.one_of(*(_values(branch, enums) for branch in avro_type))
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind == "enum":
            enums[avro_type["name"]] = avro_type["symbols"]
            return st.sampled_from(avro_type["symbols"])
        if kind == "map":
            return st.dictionaries(TEXT, _values(avro_type["values"], enums), max_size=5)
        if kind == "array":
            return st.lists(_values(avro_type["items"], enums), max_size=5)
        if kind == "record":
            return _records(avro_type, enums)
        return _values(kind, enums)
    if avro_type in enums:
        return st.sampled_from(enums[avro_type])
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": LONGS,
        "float": st.floats(width=32),
        "double": st.floats(),
        "string": TEXT,
        "bytes": st.binary(max_size=300),
    }[avro_type]


def _records(
    definition: dict[str, Any], enums: dict[str, list[str]] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Records of the schema, with some fields that have a default left out."""
    enums = {} if enums is None else enums
    fields = {spec["name"]: (_values(spec["type"], enums), "default" in spec) for spec in definition["fields"]}
    required = {name: values for name, (values, optional) in fields.items() if not optional}
    optional = {name: values for name, (values, optional) in fields.items() if optional}
    return st.fixed_dictionaries(required, optional=optional)


def _fastavro(definition: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = BytesIO()
    schemaless_writer(out, build_schema("any", definition).plain, record)
    return out.getvalue()


@pytest.mark.parametrize("name", SCHEMAS)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_writes_the_bytes_fastavro_writes(name, data):
    definitions = [load(name).definition, *previous(name)]
    definition = definitions[data.draw(st.integers(0, len(definitions) - 1))]
    write = record_writer(definition)
    assert write is not None, f"{name} should not need fastavro"
    record = data.draw(_records(definition))
    assert write(record) == _fastavro(definition, record)


@settings(max_examples=500)
@given(LONGS)
def test_longs_as_fastavro_writes_them(value):
    definition = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]}
    assert write_long(value) == _fastavro(definition, {"n": value})


def test_a_long_beyond_64_bits_and_an_unknown_symbol_are_refused():
    write = record_writer(load("sending_log").definition)
    log = {"log_id": "d/m/1", "delivery_id": "d", "message_id": "m", "new_status": "SENT", "occurred_at": 0}
    assert write(log)
    with pytest.raises(OverflowError):
        write({**log, "occurred_at": 2**63})
    with pytest.raises(ValueError, match="NOT_A_STATUS"):
        write({**log, "new_status": "NOT_A_STATUS"})
    with pytest.raises(KeyError):  # a field without a default must be there
        write({k: v for k, v in log.items() if k != "message_id"})


def test_schemas_with_types_it_does_not_write_are_left_to_fastavro():
    recursive = {"name": "next", "type": ["null", "R"]}
    fixed = {"name": "f", "type": {"type": "fixed", "name": "F", "size": 4}}
    two_types = {"name": "u", "type": ["string", "long"]}
    for field in (recursive, fixed, two_types):
        assert record_writer({"type": "record", "name": "R", "fields": [field]}) is None
