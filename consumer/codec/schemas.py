"""The Avro contract: schemas/*.avsc, parsed once, with their single-object fingerprints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

import consumer

DELIVERY_EVENT = "delivery_event"
MTA_EVENT = "mta_event"
DELIVERY_KPI = "delivery_kpi"
SENDING_LOG = "sending_log"
ADDRESS_SIGNAL = "address_signal"
ADDRESS_STATUS = "address_status"


def schemas_dir() -> Path:
    """schemas/ ships inside the wheel as consumer/schemas; in a source checkout it is the repo's."""
    packaged = Path(consumer.__file__).parent / "schemas"
    return packaged if packaged.is_dir() else Path(consumer.__file__).parent.parent / "schemas"


@dataclass(frozen=True)
class Schema:
    name: str
    definition: dict[str, Any]
    parsed: Any  # fastavro's parsed form, with logical types
    plain: Any  # the same without logical types: timestamps stay epoch millis, and it is faster
    fingerprint: bytes  # CRC-64-AVRO of the parsing canonical form
    # For decoding: `plain` with every enum read as its int index, because fastavro indexes the symbol list
    # with whatever it reads, so a corrupt negative index becomes a real symbol. The codec checks the range.
    wire: Any
    enum_fields: tuple[tuple[str, tuple[str, ...]], ...]  # (field, symbols) of the top-level enum fields


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def _enums_as_ints(definition: dict[str, Any]) -> tuple[dict[str, Any], tuple[tuple[str, tuple[str, ...]], ...]]:
    """The record with each top-level enum field (plain, or in a union) read as an int, and those fields."""
    symbols_of: dict[str, tuple[str, ...]] = {}
    swapped_enums: list[str] = []  # names of the enums swap() replaced, in order

    def swap(node: Any) -> Any:
        if isinstance(node, dict) and node.get("type") == "enum":
            symbols_of[node["name"]] = tuple(node["symbols"])
            swapped_enums.append(node["name"])
            return "int"
        if isinstance(node, str) and node in symbols_of:  # a reference to an enum named earlier
            swapped_enums.append(node)
            return "int"
        if isinstance(node, list):
            return [swap(branch) for branch in node]
        if isinstance(node, dict) and node.get("type") in ("array", "map", "record"):
            _refuse_nested_enums(node)
        return node

    fields, enum_fields = [], []
    for spec in definition["fields"]:
        swapped_enums.clear()
        fields.append({**spec, "type": swap(spec["type"])})
        if swapped_enums:
            enum_fields.append((spec["name"], symbols_of[swapped_enums[0]]))
    return {**definition, "fields": fields}, tuple(enum_fields)


def _refuse_nested_enums(node: dict[str, Any]) -> None:
    if '"enum"' in json.dumps(node):
        raise ValueError("enums are supported at the top level of a record only (the codec range-checks them)")


def build_schema(name: str, definition: dict[str, Any]) -> Schema:
    parsed = fastavro.parse_schema(definition)
    canonical = to_parsing_canonical_form(parsed)
    digest = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))  # little-endian, as Java frames it
    plain = _without_logical_types(definition)
    wire, enum_fields = _enums_as_ints(plain)
    return Schema(
        name,
        definition,
        parsed,
        fastavro.parse_schema(plain),
        digest,
        fastavro.parse_schema(wire),
        enum_fields,
    )


@cache
def load(name: str) -> Schema:
    path = schemas_dir() / f"{name}.avsc"
    return build_schema(name, json.loads(path.read_text()))


def previous(name: str) -> list[dict[str, Any]]:
    """Earlier versions of a schema (schemas/previous/<name>.<n>.avsc): records they wrote stay readable."""
    return [json.loads(path.read_text()) for path in sorted((schemas_dir() / "previous").glob(f"{name}.*.avsc"))]
