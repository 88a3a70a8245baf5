"""Avro binary bodies of flat records, written by functions built once per schema.

fastavro's schemaless_writer costs a few microseconds per call whatever the record, which the service pays once per
status change (a sending log each). A record of primitives, enums, null unions, maps and arrays is written here by
one small function per field, joined: the same bytes as fastavro (the codec's tests compare them on generated
records of every schema), in a fraction of the time. Any other schema gets None, and the codec keeps fastavro.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from consumer.codec.compile import Spec, compile_record

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
    `plain` schema); None if the schema has a type this module does not write (compile.py says which)."""
    return compile_record(definition, _Writers())


class _Writers:
    """How each kind of type is written: compile.py puts them together in a schema's shape."""

    primitives = _PRIMITIVES

    def record(self, fields: Sequence[tuple[Spec, Write]]) -> Write:
        # As fastavro: a missing field takes its default, or null if it may be null.
        written = [
            (spec["name"], "default" in spec or _nullable(spec["type"]), spec.get("default"), write)
            for spec, write in fields
        ]

        def write_record(record: Mapping[str, Any]) -> bytes:
            # A missing field that has no default is an error (KeyError), as in fastavro (ValueError).
            return b"".join(
                [
                    write(record.get(name, default) if optional else record[name])
                    for name, optional, default, write in written
                ]
            )

        return write_record

    def enum(self, symbols: tuple[str, ...]) -> Write:
        index = {symbol: write_long(i) for i, symbol in enumerate(symbols)}

        def write_enum(value: str) -> bytes:
            try:
                return index[value]
            except KeyError:
                raise ValueError(f"{value!r} is not a symbol of {list(symbols)}") from None

        return write_enum

    def null_union(self, null_index: int, write: Write) -> Write:
        """The branch index, then the value."""
        null_branch, value_branch = write_long(null_index), write_long(1 - null_index)

        def write_union(value: Any) -> bytes:
            return null_branch if value is None else value_branch + write(value)

        return write_union

    def blocks(self, write_item: Write, keyed: bool) -> Write:
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


def _nullable(avro_type: Any) -> bool:
    return isinstance(avro_type, list) and "null" in avro_type
