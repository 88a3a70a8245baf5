"""One walk over a record schema that writer.py and reader.py share: each says how to make its function for each kind
of type (a `Kit`), the walk puts them together in the schema's shape.

Covered: primitives, logical types (as their underlying type), enums, unions of null and one type, maps, arrays and
records, named types referred to by short or full name. Anything else (fixed, a union of two non-null types, a record
that contains itself) makes the walk give None: the codec keeps fastavro for that schema.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

F = TypeVar("F")
Spec = Mapping[str, Any]  # a field of a record, as the schema declares it


class Kit(Protocol[F]):
    primitives: Mapping[str, F]

    def enum(self, symbols: tuple[str, ...]) -> F: ...

    def null_union(self, null_index: int, branch: F) -> F | None: ...

    def blocks(self, items: F, keyed: bool) -> F | None:
        """A map (keyed) or an array of items; None if this kit does not do it."""
        ...

    def record(self, fields: Sequence[tuple[Spec, F]]) -> F: ...


def compile_record(definition: Spec, kit: Kit[F]) -> F | None:
    return _Walk(kit, definition.get("namespace")).record(definition)


class _Walk(Generic[F]):
    def __init__(self, kit: Kit[F], namespace: str | None) -> None:
        self._kit = kit
        self._namespace = namespace
        self._named: dict[str, F] = {}  # the enums and records named so far, by short and full name

    def record(self, definition: Spec) -> F | None:
        fields = []
        for spec in definition["fields"]:
            function = self.type(spec["type"])
            if function is None:
                return None
            fields.append((spec, function))
        return self._kit.record(fields)

    def type(self, avro_type: Any) -> F | None:
        kit = self._kit
        if isinstance(avro_type, str):
            return kit.primitives.get(avro_type) or self._named.get(avro_type)
        if isinstance(avro_type, list):
            return self._null_union(avro_type)
        kind = avro_type.get("type")
        if kind == "enum":
            return self._name(avro_type, kit.enum(tuple(avro_type["symbols"])))
        if kind == "record":  # named once its fields are done: a record that contains itself is refused
            function = self.record(avro_type)
            return None if function is None else self._name(avro_type, function)
        if kind in ("map", "array"):
            items = self.type(avro_type["values" if kind == "map" else "items"])
            return None if items is None else kit.blocks(items, kind == "map")
        if isinstance(kind, str) and kind in kit.primitives:  # a logical type, as its underlying type
            return kit.primitives[kind]
        return None

    def _null_union(self, branches: list[Any]) -> F | None:
        if len(branches) != 2 or "null" not in branches:
            return None
        null_index = branches.index("null")
        branch = self.type(branches[1 - null_index])
        return None if branch is None else self._kit.null_union(null_index, branch)

    def _name(self, definition: Spec, function: F) -> F:
        name = definition["name"]
        namespace = definition.get("namespace", self._namespace)
        self._named[name.rpartition(".")[2]] = function
        self._named[name if "." in name or not namespace else f"{namespace}.{name}"] = function
        return function
