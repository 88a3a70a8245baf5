"""Avro binary bodies of flat records, written by functions built once per schema.

fastavro's schemaless_writer costs a few microseconds per call whatever the record, which the service pays once per
status change (a sending log each). A record of primitives, enums, null unions, maps and arrays is written here by
one small function per field, joined: the same bytes as fastavro (the codec's tests compare them on generated
records of every schema), in a fraction of the time. Any other schema gets None, and the codec keeps fastavro.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

Write = Callable[[Any], bytes]

_ZIGZAG_TABLE_SIZE = 1 << 14  # every long whose zigzag varint takes one or two bytes


def _varint(zigzag: int) -> bytes:
    """Base-128, low group first, the continuation bit on every byte but the last: the tables' entries."""
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


_SHORT = tuple(_varint(z) for z in range(_ZIGZAG_TABLE_SIZE))
# The same 14 bits followed by more: both bytes carry the continuation bit. A timestamp is three of these steps
# instead of seven of the byte loop.
_CONTINUED = tuple(bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80)) for z in range(_ZIGZAG_TABLE_SIZE))


def _long_varint(zigzag: int) -> bytes:
    if zigzag >> 64:  # fastavro refuses what a 64-bit long cannot hold
        raise OverflowError(f"{zigzag} does not fit an Avro long")
    parts = []
    while zigzag >= _ZIGZAG_TABLE_SIZE:
        parts.append(_CONTINUED[zigzag & (_ZIGZAG_TABLE_SIZE - 1)])
        zigzag >>= 14
    parts.append(_SHORT[zigzag])
    return b"".join(parts)


_NULL = b"\x00"  # boolean false, or the empty block that closes a map or an array


def write_long(value: int) -> bytes:
    """Avro int and long: zigzag, then base-128 varint."""
    zigzag = (value << 1) ^ (value >> 63)
    return _SHORT[zigzag] if zigzag < _ZIGZAG_TABLE_SIZE else _long_varint(zigzag)


def write_string(value: str) -> bytes:
    data = value.encode()
    return write_long(len(data)) + data


def write_bytes(value: bytes) -> bytes:
    return write_long(len(value)) + value


def write_boolean(value: bool) -> bytes:
    return b"\x01" if value else _NULL


_DOUBLE = struct.Struct("<d").pack
_FLOAT = struct.Struct("<f").pack

_PRIMITIVES: dict[str, Write] = {
    "null": lambda _value: b"",
    "boolean": write_boolean,
    "int": write_long,
    "long": write_long,
    "float": _FLOAT,
    "double": _DOUBLE,
    "string": write_string,
    "bytes": write_bytes,
}


def record_writer(definition: Mapping[str, Any]) -> Write | None:
    """A function writing a record of this schema's body, logical types written as their underlying type (the codec's
    `plain` schema); None if the schema has a type this module does not write (fixed, a union of two non-null types,
    a recursive record)."""
    return _record(definition, _Names(definition.get("namespace")))


def _record(definition: Mapping[str, Any], names: _Names) -> Write | None:
    fields = []
    for spec in definition["fields"]:
        write = _writer(spec["type"], names)
        if write is None:
            return None
        # As fastavro: a missing field takes its default, or null if it may be null.
        optional = "default" in spec or (isinstance(spec["type"], list) and "null" in spec["type"])
        fields.append((spec["name"], optional, spec.get("default"), write))

    def write_record(record: Mapping[str, Any]) -> bytes:
        # A missing field that has no default is an error (KeyError), as in fastavro (ValueError).
        return b"".join(
            [
                write(record.get(name, default) if optional else record[name])
                for name, optional, default, write in fields
            ]
        )

    return write_record


class _Names:
    """The enums and records a schema has named so far, by short and full name (later fields may refer to them)."""

    def __init__(self, namespace: str | None) -> None:
        self._namespace = namespace
        self._writers: dict[str, Write] = {}

    def add(self, definition: Mapping[str, Any], write: Write) -> Write:
        name = definition["name"]
        namespace = definition.get("namespace", self._namespace)
        self._writers[name.rpartition(".")[2]] = write
        self._writers[name if "." in name or not namespace else f"{namespace}.{name}"] = write
        return write

    def get(self, name: str) -> Write | None:
        return self._writers.get(name)


def _writer(avro_type: Any, names: _Names) -> Write | None:
    if isinstance(avro_type, str):
        return _PRIMITIVES.get(avro_type) or names.get(avro_type)
    if isinstance(avro_type, list):
        return _null_union(avro_type, names)
    kind = avro_type.get("type")
    if kind == "enum":
        return names.add(avro_type, _enum(avro_type["symbols"]))
    if kind == "record":  # named once its fields are written: a record that contains itself is refused
        write_record = _record(avro_type, names)
        return None if write_record is None else names.add(avro_type, write_record)
    if kind in ("map", "array"):
        items = _writer(avro_type["values" if kind == "map" else "items"], names)
        return None if items is None else _blocks(items, kind == "map")
    if isinstance(kind, str) and kind in _PRIMITIVES:  # a logical type, written as its underlying type
        return _PRIMITIVES[kind]
    return None


def _enum(symbols: list[str]) -> Write:
    index = {symbol: write_long(i) for i, symbol in enumerate(symbols)}

    def write_enum(value: str) -> bytes:
        try:
            return index[value]
        except KeyError:
            raise ValueError(f"{value!r} is not a symbol of {symbols}") from None

    return write_enum


def _null_union(branches: list[Any], names: _Names) -> Write | None:
    """["null", T] or [T, "null"]: the branch index, then the value."""
    if len(branches) != 2 or "null" not in branches:
        return None
    null_index = branches.index("null")
    write = _writer(branches[1 - null_index], names)
    if write is None:
        return None
    null_branch, value_branch = write_long(null_index), write_long(1 - null_index)

    def write_union(value: Any) -> bytes:
        return null_branch if value is None else value_branch + write(value)

    return write_union


def _blocks(write_item: Write, keyed: bool) -> Write:
    """A map or an array as fastavro writes it: one block of every item, then the empty block."""

    def write_block(values: Any) -> bytes:
        if not values:
            return _NULL
        if keyed:
            parts = [write_string(key) + write_item(value) for key, value in values.items()]
        else:
            parts = [write_item(value) for value in values]
        return write_long(len(parts)) + b"".join(parts) + _NULL

    return write_block
