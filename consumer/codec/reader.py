"""Avro binary bodies of flat records, read by functions built once per schema: writer.py's counterpart.

fastavro's schemaless_reader costs about 3.6 us per MTA event, which the service pays once per input record. A record
of primitives, enums, null unions, maps and arrays is read here by one small function per field: the same values as
fastavro (the codec's tests compare them on generated records of every schema, and on corrupted bytes), logical types
read as their underlying type (the codec's `plain` schema). Stricter than fastavro where fastavro accepts what no
writer makes: an enum index outside the symbols, a union branch other than 0 or 1 (fastavro takes -1 as the last), a
boolean byte other than 0 or 1, a long beyond 64 bits, a negative length, a block count beyond the bytes left (a
10-byte count of -2**63 is an empty block to fastavro). Any other schema gets None, and the codec
keeps fastavro.

Every function takes (data, position) and returns (value, next position); a record's reader raises CorruptField,
naming the field, when its bytes are too short or hold no value of the type.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from consumer.codec.compile import Spec, compile_record

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
    (compile.py says which; also an array or map of nulls, whose corrupt count could spin for ever)."""
    return compile_record(definition, _Readers())


class _Readers:
    """How each kind of type is read: compile.py puts them together in a schema's shape."""

    primitives = _PRIMITIVES

    def record(self, fields: Sequence[tuple[Spec, Read]]) -> Read:
        read_fields = [(spec["name"], read is read_string, read) for spec, read in fields]

        def read_record(data: bytes, pos: int) -> tuple[dict[str, Any], int]:
            record = {}
            size = len(data)
            try:
                for name, is_string, read in read_fields:
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

    def enum(self, symbols: tuple[str, ...]) -> Read:
        def read_enum(data: bytes, pos: int) -> tuple[str, int]:
            index, pos = read_long(data, pos)
            if not 0 <= index < len(symbols):  # fastavro would index the list with it: -1 is the last symbol
                raise ValueError(f"enum index {index} is outside 0..{len(symbols) - 1}")
            return symbols[index], pos

        return read_enum

    def null_union(self, null_index: int, read: Read) -> Read:
        """The branch index, then the value."""
        null_byte, value_byte = null_index << 1, (1 - null_index) << 1  # the zigzag varints of 0 and 1

        def read_union(data: bytes, pos: int) -> tuple[Any, int]:
            byte = data[pos]
            if byte == null_byte:
                return None, pos + 1
            if byte == value_byte:
                return read(data, pos + 1)
            raise ValueError(f"a union branch byte of {byte}")

        return read_union

    def blocks(self, read_item: Read, keyed: bool) -> Read | None:
        """Blocks of items, each block's count first (negative: its size in bytes follows), until the empty block."""
        if read_item is read_null:  # every other item takes a byte at least, which bounds a corrupt count
            return None

        def read_blocks(data: bytes, pos: int) -> tuple[Any, int]:
            items: Any = {} if keyed else []
            while True:
                count, pos = read_long(data, pos)
                if count == 0:
                    return items, pos
                if count < 0:
                    count = -count
                    _size, pos = read_long(data, pos)
                if count > len(data) - pos:
                    raise ValueError(f"a block of {count} items in {len(data) - pos} bytes")
                for _ in range(count):
                    if keyed:
                        key, pos = read_string(data, pos)
                        items[key], pos = read_item(data, pos)
                    else:
                        item, pos = read_item(data, pos)
                        items.append(item)

        return read_blocks
