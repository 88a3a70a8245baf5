"""Avro single-object encoding (spec: C3 01, 8-byte schema fingerprint, body): reader.py and writer.py read and
write the current schema's bodies, fastavro the rest.

Decoding looks the writer schema up by fingerprint: the current schema decodes directly
(the fast path); an older writer registered with `register_writer` is resolved against it.
Enum indexes are range-checked on every path: fastavro would turn a corrupt negative index
into a real symbol (a flipped byte made a RELAYED into a COMPLAINT).
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from consumer.codec import schemas
from consumer.codec.errors import DecodeError, UnknownSchema
from consumer.codec.reader import CorruptField, record_reader
from consumer.codec.schemas import Schema
from consumer.codec.writer import record_writer

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8


class AvroCodec:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._header = MAGIC + schema.fingerprint
        self._readers: dict[bytes, Schema] = {}  # older writers, by fingerprint
        self._write_body = record_writer(schema.definition)  # None: fastavro writes it
        self._read_body = record_reader(schema.definition)  # None: fastavro reads it

    @classmethod
    def named(cls, name: str) -> AvroCodec:
        """The current schema's codec; it also reads what the schema's earlier versions wrote."""
        codec = cls(schemas.load(name))
        for definition in schemas.previous(name):
            codec.register_writer(definition)
        return codec

    def register_writer(self, definition: dict[str, Any]) -> None:
        """Accept records written with an older (or newer) compatible schema version."""
        older = schemas.build_schema(self.schema.name, definition)
        self._readers[older.fingerprint] = older

    def encode(self, record: dict[str, Any]) -> bytes:
        if self._write_body is not None:
            return self._header + self._write_body(record)
        out = BytesIO()
        out.write(self._header)
        schemaless_writer(out, self.schema.plain, record)
        return out.getvalue()

    def decode(self, data: bytes | None) -> dict[str, Any]:
        if data and data[:HEADER_SIZE] == self._header:  # the current schema: the hot path
            if self._read_body is None:
                return _with_symbols(self._read(data, self.schema.wire), self.schema)
            return self._read_current(data)
        writer = self._writer_of(data)
        _with_symbols(self._read(data, writer.wire), writer)  # only checks the writer's enum indexes
        return self._read(data, writer.plain, self.schema.plain)

    def _read(self, data: bytes, writer: Any, reader: Any = None) -> dict[str, Any]:
        buffer = BytesIO(data)
        buffer.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(buffer, writer, reader)
        except Exception as exc:  # fastavro raises many types on corrupt input; all mean the same
            raise DecodeError("value", f"corrupt {self.schema.name}: {type(exc).__name__}: {exc}") from None
        if buffer.tell() != len(data):
            raise DecodeError("value", f"{len(data) - buffer.tell()} trailing bytes after the {self.schema.name}")
        return record

    def _read_current(self, data: bytes) -> dict[str, Any]:
        assert self._read_body is not None
        try:
            record, end = self._read_body(data, HEADER_SIZE)
        except CorruptField as exc:
            raise DecodeError(exc.field, f"corrupt {self.schema.name}: {exc.reason}") from None
        if end != len(data):
            raise DecodeError("value", f"{len(data) - end} trailing bytes after the {self.schema.name}")
        return record

    def _writer_of(self, data: bytes | None) -> Schema:
        if not data or data[:2] != MAGIC or len(data) < HEADER_SIZE:
            raise DecodeError("value", f"not an Avro single-object encoded {self.schema.name}")
        writer = self._readers.get(data[2:HEADER_SIZE])
        if writer is None:
            fingerprint = data[2:HEADER_SIZE].hex()
            raise UnknownSchema("value", f"unknown {self.schema.name} writer fingerprint {fingerprint}")
        return writer


def _with_symbols(record: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """Replace each enum index by its symbol, refusing an index outside the symbol list."""
    for name, symbols in schema.enum_fields:
        index = record[name]
        if index is None:
            continue
        if not 0 <= index < len(symbols):
            raise DecodeError(name, f"enum index {index} is outside 0..{len(symbols) - 1}")
        record[name] = symbols[index]
    return record
