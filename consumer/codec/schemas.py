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


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def build_schema(name: str, definition: dict[str, Any]) -> Schema:
    parsed = fastavro.parse_schema(definition)
    canonical = to_parsing_canonical_form(parsed)
    digest = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))  # little-endian, as Java frames it
    return Schema(
        name,
        definition,
        parsed,
        fastavro.parse_schema(_without_logical_types(definition)),
        digest,
    )


@cache
def load(name: str) -> Schema:
    path = schemas_dir() / f"{name}.avsc"
    return build_schema(name, json.loads(path.read_text()))
