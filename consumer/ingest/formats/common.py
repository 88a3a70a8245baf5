"""What the formats share: the mapping API's types, JSON parsing with limits, typed field access that names the
field at fault, platform ids, and building contract events from a classification."""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from consumer.codec.errors import InvalidEvent
from consumer.codec.validation import MAX_ATTEMPT, MAX_ID_CHARS, MAX_TEXT_CHARS, MAX_TIME_MS, MAX_URL_CHARS
from consumer.ingest.classifier import Classification, Classifier, Kind

MAX_RECORD_BYTES = 4 * 1024 * 1024  # a source record larger than this is not an event batch but a mistake
# ARF feedback types that are not spam complaints (RFC 5965 / RFC 6591): they change nothing for us.
NOT_COMPLAINTS = frozenset({"not-spam", "auth-failure"})
_FAILURE_TYPES: dict[Kind, str] = {"hard": "HARD_BOUNCE", "soft": "SOFT_BOUNCE", "ignored": "IGNORED"}


class UnmappableRecord(InvalidEvent):
    """A source record that cannot become contract events; `field` names where it went wrong."""

    code = "unmappable"


class MapperBug(UnmappableRecord):
    """An unexpected exception inside a mapper, dead-lettered rather than crashing the stage.
    It means a bug here: the property tests assert that it never happens."""


@dataclass(frozen=True)
class IdKeys:
    """Where the platform's ids live in a source record (KumoMTA meta, SES tags, SendGrid custom args)."""

    delivery_id: str = "delivery_id"
    message_id: str = "message_id"

    def __post_init__(self) -> None:
        for key in (self.delivery_id, self.message_id):
            if not isinstance(key, str) or not key:
                raise ValueError(f"id keys must be non-empty strings, not {key!r}")


@dataclass(frozen=True)
class Mapped:
    event: dict[str, Any]  # a complete MtaEvent record: every field of schemas/mta_event.avsc, defaults filled
    rule: str | None = None  # the classifier rule that decided a bounce, "<id> over <id>" when it beat the code rule


class Format(Protocol):
    name: str

    def map(self, value: bytes | None) -> list[Mapped]: ...


@dataclass(frozen=True, slots=True)
class Ids:
    delivery_id: str
    message_id: str


class JsonFormat(ABC):
    """A format whose records are UTF-8 JSON. Subclasses map the parsed value."""

    name: ClassVar[str]

    def __init__(self, ids: IdKeys, classifier: Classifier) -> None:
        self.ids = ids
        self.classifier = classifier

    def map(self, value: bytes | None) -> list[Mapped]:
        try:
            return self.map_record(parse_json(value))
        except InvalidEvent:
            raise
        except Exception as exc:  # never crash the stage on one record; MapperBug marks it as ours to fix
            raise MapperBug("record", f"{self.name} mapper failed: {exc!r:.200}") from exc

    @abstractmethod
    def map_record(self, record: Any) -> list[Mapped]: ...

    def classify(self, code: int | None, enhanced: str | None, text: str | None, hint: str | None) -> Classification:
        return self.classifier.classify(code, enhanced, text, hint)


def parse_json(value: bytes | None, field: str = "value") -> Any:
    """Strict UTF-8 JSON (no NaN or Infinity) of bounded size; errors name `field`."""
    if not value:
        raise UnmappableRecord(field, "empty record (null or no bytes)")
    if len(value) > MAX_RECORD_BYTES:
        raise UnmappableRecord(field, f"{len(value)} bytes, more than {MAX_RECORD_BYTES}")
    try:
        return json.loads(value.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise UnmappableRecord(field, "JSON nested too deeply") from None
    except ValueError as exc:  # also UnicodeDecodeError and integers too long to parse
        raise UnmappableRecord(field, f"not UTF-8 JSON: {str(exc)[:200]}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# --- typed access -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """A JSON object and its path in the record, so that every error names the field at fault."""

    value: dict[str, Any]
    path: str = ""

    @classmethod
    def of(cls, value: Any, path: str) -> Node:
        if not isinstance(value, dict):
            raise UnmappableRecord(path or "value", f"expected a JSON object, not {_kind(value)}")
        return cls(value, path)

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.value.get(key) is not None

    def child(self, key: str) -> Node:
        return Node.of(self._required(key), self.where(key))

    def optional_child(self, key: str) -> Node | None:
        return self.child(key) if self.has(key) else None

    def children(self, key: str) -> list[Node]:
        """A required, non-empty list of objects."""
        return [Node.of(item, f"{self.where(key)}[{i}]") for i, item in enumerate(self._list(key))]

    def strings(self, key: str) -> list[str]:
        """A required, non-empty list of strings."""
        return [checked_text(item, f"{self.where(key)}[{i}]") for i, item in enumerate(self._list(key))]

    def text(self, key: str, limit: int | None = MAX_TEXT_CHARS) -> str | None:
        return checked_text(self.value[key], self.where(key), limit) if self.has(key) else None

    def required_text(self, key: str, limit: int | None = MAX_TEXT_CHARS) -> str:
        return checked_text(self._required(key), self.where(key), limit)

    def integer(self, key: str, low: int, high: int) -> int | None:
        """An integer in [low, high]; a string of digits counts (SendGrid sends some counts as strings)."""
        if not self.has(key):
            return None
        value = self.value[key]
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise UnmappableRecord(self.where(key), f"expected an integer, not {_kind(value)}")
        if not low <= value <= high:
            raise UnmappableRecord(self.where(key), f"{value} is outside {low}..{high}")
        return value

    def attempt(self, key: str) -> int:
        return self.integer(key, 0, MAX_ATTEMPT) or 0

    def epoch_seconds(self, key: str) -> int:
        """A required epoch-seconds timestamp, as epoch milliseconds."""
        value = self._required(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise UnmappableRecord(self.where(key), f"expected epoch seconds, not {_kind(value)}")
        if not 0 <= value <= MAX_TIME_MS / 1000:  # also rules out inf ("1e999" parses to it)
            raise UnmappableRecord(self.where(key), f"{value} is not epoch seconds between 1970 and 3000")
        return math.floor(value * 1000)

    def iso_time(self, key: str) -> int:
        """A required ISO-8601 timestamp (UTC when it names no zone), as epoch milliseconds."""
        text = self.required_text(key, 64)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise UnmappableRecord(self.where(key), f"{text!r} is not an ISO-8601 timestamp") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        millis = math.floor(moment.timestamp() * 1000)
        if not 0 <= millis <= MAX_TIME_MS:
            raise UnmappableRecord(self.where(key), f"{text!r} is not between 1970 and 3000")
        return millis

    def ident(self, key: str) -> str | None:
        return platform_id(self.value[key], self.where(key)) if self.has(key) else None

    def _required(self, key: str) -> Any:
        if not self.has(key):
            raise UnmappableRecord(self.where(key), "required field is missing")
        return self.value[key]

    def _list(self, key: str) -> list[Any]:
        value = self._required(key)
        if not isinstance(value, list) or not value:
            raise UnmappableRecord(self.where(key), f"expected a non-empty list, not {_kind(value)}")
        return value


def checked_text(value: Any, where: str, limit: int | None = MAX_TEXT_CHARS) -> str:
    """A string that Avro can encode (no lone surrogates), within `limit` characters."""
    if not isinstance(value, str):
        raise UnmappableRecord(where, f"expected a string, not {_kind(value)}")
    if limit is not None and len(value) > limit:
        raise UnmappableRecord(where, f"{len(value)} characters, more than {limit}")
    if not _encodable(value):
        raise UnmappableRecord(where, "not encodable as UTF-8 (lone surrogate)")
    return value


def platform_id(value: Any, where: str) -> str:
    """An id as the contract wants it; a JSON integer is accepted as its decimal form."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
        value = str(value)
    text = checked_text(value, where, MAX_ID_CHARS)
    if not text.strip():
        raise UnmappableRecord(where, "must not be empty")
    if "\x00" in text:
        raise UnmappableRecord(where, "contains a NUL character")
    return text


def require_ids(delivery_id: str | None, message_id: str | None, keys: IdKeys, where: str) -> Ids:
    """Both platform ids, or an error naming the key that was looked for."""
    if delivery_id is None:
        raise UnmappableRecord(f"{where}.{keys.delivery_id}", "the platform's delivery id is missing")
    if message_id is None:
        raise UnmappableRecord(f"{where}.{keys.message_id}", "the platform's message id is missing")
    return Ids(delivery_id, message_id)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# --- events -------------------------------------------------------------------------------------------------


def event(
    event_id: str,
    ids: Ids,
    event_type: str,
    occurred_at: int,
    *,
    attempt: int = 0,
    reason: str | None = None,
    url: str | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """A complete MtaEvent record (every schema field, in schema order). Over-long URLs are cut, not refused:
    a click is worth more than the tail of its tracking parameters."""
    return {
        "event_id": event_id,
        "delivery_id": ids.delivery_id,
        "message_id": ids.message_id,
        "type": event_type,
        "occurred_at": occurred_at,
        "attempt": attempt,
        "reason": reason,
        "url": url[:MAX_URL_CHARS] if url is not None else None,
        "address": address,
    }


def failure_type(classification: Classification, source_kind: Kind | None) -> str:
    """The event type of a failure. The source's own verdict wins when it has one: "hard" (it will never deliver)
    is a HARD_BOUNCE whatever the text; "soft" (it retries, or gave up on a temporary error) caps a hard
    classification at SOFT_BOUNCE but keeps IGNORED. Without a verdict, the classification decides."""
    if source_kind == "hard":
        return "HARD_BOUNCE"
    if source_kind == "soft" and classification.kind == "hard":
        return "SOFT_BOUNCE"
    return _FAILURE_TYPES[classification.kind]


def failure(
    event_id: str,
    ids: Ids,
    occurred_at: int,
    classification: Classification,
    *,
    source_kind: Kind | None = None,
    event_type: str | None = None,
    attempt: int = 0,
    address: str | None = None,
) -> Mapped:
    """A failure event carrying the classification's reason; `event_type` overrides the type (expirations)."""
    chosen = event_type or failure_type(classification, source_kind)
    record = event(event_id, ids, chosen, occurred_at, attempt=attempt, reason=classification.reason, address=address)
    return Mapped(record, classification.explained)


def unknown_type(where: str, value: str, known: Sequence[str]) -> UnmappableRecord:
    """Unknown record types are dead-lettered, not dropped: a new vendor type must be seen to be mapped."""
    return UnmappableRecord(where, f"unknown type {value[:80]!r}; known: {', '.join(sorted(known))}")
