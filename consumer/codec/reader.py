"""Avro binary bodies of flat records, read by functions built once per schema: writer.py's counterpart.

fastavro's schemaless_reader costs about 3.6 us per MTA event, which the service pays once per input record. A record
of primitives, enums, null unions, maps and arrays is read here by one small function per field: the same values as
fastavro (the codec's tests compare them on generated records of every schema, and on corrupted bytes), logical types
read as their underlying type (the codec's `plain` schema). Stricter than fastavro where fastavro accepts what no
writer makes: an enum index outside the symbols, a union branch other than 0 or 1 (fastavro takes -1 as the last), a
boolean byte other than 0 or 1, a long beyond 64 bits, a negative length. Any other schema gets None, and the codec
keeps fastavro.

Every function takes (data, position) and returns (value, next position); a record's reader raises CorruptField,
naming the field, when its bytes are too short or hold no value of the type.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

Read = Callable[[bytes, int], tuple[Any, int]]


class CorruptField(ValueError):
    """A record's bytes do not hold a value of the schema: `field` names the top-level field where reading failed."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


_LONG_BITS = 64


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """Avro int and long: base-128 varint, then zigzag."""
    byte = data[pos]
    if byte < 0x80:  # most values on the wire: one byte
        return (byte >> 1) ^ -(byte & 1), pos + 1
    value, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift >= _LONG_BITS + 7:
            raise ValueError("a varint longer than a long")
    if value >> _LONG_BITS:
        raise ValueError("a varint beyond 64 bits")
    return (value >> 1) ^ -(value & 1), pos + 1


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """A length prefix and where its bytes end, checked against the data."""
    size, pos = read_long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise ValueError(f"a length of {size} at byte {pos} of {len(data)}")
    return end, pos


def read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    end, pos = _length(data, pos)
    return data[pos:end], end


def read_string(data: bytes, pos: int) -> tuple[str, int]:
    end, pos = _length(data, pos)
    return data[pos:end].decode(), end


def read_boolean(data: bytes, pos: int) -> tuple[bool, int]:
    byte = data[pos]
    if byte > 1:
        raise ValueError(f"a boolean byte of {byte}")
    return byte == 1, pos + 1


def read_null(_data: bytes, pos: int) -> tuple[None, int]:
    return None, pos


def _fixed_width(fmt: str) -> Read:
    unpack, size = struct.Struct(fmt).unpack_from, struct.calcsize(fmt)

    def read_number(data: bytes, pos: int) -> tuple[float, int]:
        return unpack(data, pos)[0], pos + size

    return read_number


_PRIMITIVES: dict[str, Read] = {
    "null": read_null,
    "boolean": read_boolean,
    "int": read_long,
    "long": read_long,
    "float": _fixed_width("<f"),
    "double": _fixed_width("<d"),
    "string": read_string,
    "bytes": read_bytes,
}


def record_reader(definition: Mapping[str, Any]) -> Read | None:
    """A function reading a record of this schema's body; None if the schema has a type this module does not read
    (fixed, a union of two non-null types, a recursive record)."""
    return _record(definition, _Names(definition.get("namespace")))


def _record(definition: Mapping[str, Any], names: _Names) -> Read | None:
    fields = []
    for spec in definition["fields"]:
        read = _reader(spec["type"], names)
        if read is None:
            return None
        fields.append((spec["name"], read is read_string, read))

    def read_record(data: bytes, pos: int) -> tuple[dict[str, Any], int]:
        record = {}
        size = len(data)
        try:
            for name, is_string, read in fields:
                # Most fields: a string shorter than 64 bytes is read here, without a call (0.6 us a record).
                if is_string:
                    byte = data[pos]
                    end = pos + 1 + (byte >> 1)
                    if byte < 0x80 and not byte & 1 and end <= size:
                        record[name] = data[pos + 1 : end].decode()
                        pos = end
                        continue
                record[name], pos = read(data, pos)
        except Exception as exc:  # the outermost record's field names it
            reason = exc.reason if isinstance(exc, CorruptField) else f"{type(exc).__name__}: {exc}"
            raise CorruptField(name, reason) from None
        return record, pos

    return read_record


class _Names:
    """The enums and records a schema has named so far, by short and full name (later fields may refer to them)."""

    def __init__(self, namespace: str | None) -> None:
        self._namespace = namespace
        self._readers: dict[str, Read] = {}

    def add(self, definition: Mapping[str, Any], read: Read) -> Read:
        name = definition["name"]
        namespace = definition.get("namespace", self._namespace)
        self._readers[name.rpartition(".")[2]] = read
        self._readers[name if "." in name or not namespace else f"{namespace}.{name}"] = read
        return read

    def get(self, name: str) -> Read | None:
        return self._readers.get(name)


def _reader(avro_type: Any, names: _Names) -> Read | None:
    if isinstance(avro_type, str):
        return _PRIMITIVES.get(avro_type) or names.get(avro_type)
    if isinstance(avro_type, list):
        return _null_union(avro_type, names)
    kind = avro_type.get("type")
    if kind == "enum":
        return names.add(avro_type, _enum(tuple(avro_type["symbols"])))
    if kind == "record":  # named once its fields are read: a record that contains itself is refused
        read_record = _record(avro_type, names)
        return None if read_record is None else names.add(avro_type, read_record)
    if kind in ("map", "array"):
        items = _reader(avro_type["values" if kind == "map" else "items"], names)
        # Items of no bytes (nulls) would let a corrupt count spin for ever: every other item takes a byte at least.
        return None if items in (None, read_null) else _blocks(items, kind == "map")
    if isinstance(kind, str) and kind in _PRIMITIVES:  # a logical type, read as its underlying type
        return _PRIMITIVES[kind]
    return None


def _enum(symbols: tuple[str, ...]) -> Read:
    def read_enum(data: bytes, pos: int) -> tuple[str, int]:
        index, pos = read_long(data, pos)
        if not 0 <= index < len(symbols):  # fastavro would index the list with it: -1 is the last symbol
            raise ValueError(f"enum index {index} is outside 0..{len(symbols) - 1}")
        return symbols[index], pos

    return read_enum


def _null_union(branches: list[Any], names: _Names) -> Read | None:
    """["null", T] or [T, "null"]: the branch index, then the value."""
    if len(branches) != 2 or "null" not in branches:
        return None
    null_index = branches.index("null")
    read = _reader(branches[1 - null_index], names)
    if read is None:
        return None
    null_byte, value_byte = null_index << 1, (1 - null_index) << 1  # the zigzag varints of 0 and 1

    def read_union(data: bytes, pos: int) -> tuple[Any, int]:
        byte = data[pos]
        if byte == null_byte:
            return None, pos + 1
        if byte == value_byte:
            return read(data, pos + 1)
        raise ValueError(f"a union branch byte of {byte}")

    return read_union


def _blocks(read_item: Read, keyed: bool) -> Read:
    """A map or an array: blocks of items, each block's count first (negative: its size in bytes follows), until
    the empty block."""

    def read_blocks(data: bytes, pos: int) -> tuple[Any, int]:
        items: Any = {} if keyed else []
        while True:
            count, pos = read_long(data, pos)
            if count == 0:
                return items, pos
            if count < 0:
                count = -count
                _size, pos = read_long(data, pos)
            if count > len(data) - pos:  # each item takes a byte at least
                raise ValueError(f"a block of {count} items in {len(data) - pos} bytes")
            for _ in range(count):
                if keyed:
                    key, pos = read_string(data, pos)
                    items[key], pos = read_item(data, pos)
                else:
                    item, pos = read_item(data, pos)
                    items.append(item)

    return read_blocks
