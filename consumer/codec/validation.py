"""Contract rules beyond Avro types: sane ids, counts and sizes in range, key = delivery_id."""

from __future__ import annotations

import json
import re
from typing import Any

from fastavro.validation import ValidationError, validate

from consumer.codec.errors import FieldError, FutureEvent, KeyMismatch, MissingKey
from consumer.codec.schemas import Schema
from consumer.core.events import DELIVERY_EVENT_TYPES, MTA_EVENT_TYPES

MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 2_048
MAX_URL_CHARS = 8_192
MAX_TO_DELIVER = 1_000_000_000
MAX_ATTEMPT = 1_000
MAX_ROLES = 64
MAX_TIME_MS = 32_503_680_000_000  # year 3000: later is a unit mistake, not a date
_FIELD_IN_ERROR = re.compile(r"sendtrack\.\w+\.(\w+)")
_MTA_TYPES = frozenset(MTA_EVENT_TYPES)
_DELIVERY_TYPES = frozenset(DELIVERY_EVENT_TYPES)
NO_KEY_CHECK = object()  # for events that are not Kafka records yet (JSON lines before they are produced)


def check_event(event: dict[str, Any], key: bytes | object | None, latest_ms: int = MAX_TIME_MS) -> dict[str, Any]:
    """Raise an InvalidEvent naming the first field that breaks the contract; return the event.

    key is the Kafka record's key, which must be the delivery_id (None: a record without a key);
    latest_ms is the latest plausible event time (the wall clock plus the allowed skew).
    """
    if "message_id" in event and _plainly_valid_mta(event, key, latest_ms):
        return event
    for name in ("event_id", "delivery_id", "message_id"):
        if name in event:
            check_id(name, event[name])
    kind, types = event["type"], _MTA_TYPES if "message_id" in event else _DELIVERY_TYPES
    if kind not in types:
        raise FieldError("type", f"unknown symbol {kind!r}")
    _check_time("occurred_at", event["occurred_at"])
    if event["occurred_at"] > latest_ms:
        ahead_s = (event["occurred_at"] - latest_ms) / 1000
        raise FutureEvent("occurred_at", f"{event['occurred_at']} is {ahead_s:.0f} s beyond the allowed clock skew")
    check_key(key, event["delivery_id"])
    if "message_id" in event:
        _check_mta_fields(event)
    else:
        _check_delivery_fields(event)
    return event


def check_key(key: bytes | object | None, delivery_id: str) -> None:
    if key is NO_KEY_CHECK:
        return
    if key is None:
        raise MissingKey("key", "the record has no key; inputs are keyed by delivery_id")
    if key != delivery_id.encode():
        raise KeyMismatch("key", f"record key {key[:80]!r} is not delivery_id {delivery_id!r}")


def _plainly_valid_mta(event: dict[str, Any], key: bytes | object | None, latest_ms: int) -> bool:
    """The same rules as below in one expression: the hot path. Anything doubtful takes the slow path,
    which names the field at fault."""
    event_id, delivery_id, message_id = event["event_id"], event["delivery_id"], event["message_id"]
    reason, address, url = event.get("reason"), event.get("address"), event.get("url")
    return (
        0 < len(event_id) <= MAX_ID_CHARS
        and 0 < len(delivery_id) <= MAX_ID_CHARS
        and 0 < len(message_id) <= MAX_ID_CHARS
        and event_id.isascii()  # anything else is checked for UTF-8 encodability on the slow path
        and delivery_id.isascii()
        and message_id.isascii()
        and not (event_id.isspace() or delivery_id.isspace() or message_id.isspace())
        and "\x00" not in event_id
        and "\x00" not in delivery_id
        and "\x00" not in message_id
        and event["type"] in _MTA_TYPES
        and 0 <= event["occurred_at"] <= latest_ms
        and 0 <= event.get("attempt", 0) <= MAX_ATTEMPT
        and key == delivery_id.encode()
        and (reason is None or len(reason) <= MAX_TEXT_CHARS)
        and (address is None or len(address) <= MAX_TEXT_CHARS)
        and (url is None or len(url) <= MAX_URL_CHARS)
    )


def _check_mta_fields(event: dict[str, Any]) -> None:
    attempt = event.get("attempt", 0)
    if not 0 <= attempt <= MAX_ATTEMPT:
        raise FieldError("attempt", f"{attempt} is outside 0..{MAX_ATTEMPT}")
    _check_text("reason", event.get("reason"), MAX_TEXT_CHARS)
    _check_text("address", event.get("address"), MAX_TEXT_CHARS)
    _check_text("url", event.get("url"), MAX_URL_CHARS)


def _check_delivery_fields(event: dict[str, Any]) -> None:
    to_deliver = event.get("to_deliver")
    if to_deliver is not None and not 0 <= to_deliver <= MAX_TO_DELIVER:
        raise FieldError("to_deliver", f"{to_deliver} is outside 0..{MAX_TO_DELIVER}")
    for name in ("validity_end", "scheduled_at"):
        if event.get(name) is not None:
            _check_time(name, event[name])
    _check_text("actor", event.get("actor"), MAX_ID_CHARS)
    roles = event.get("actor_roles") or ()
    if len(roles) > MAX_ROLES:
        raise FieldError("actor_roles", f"{len(roles)} roles, more than {MAX_ROLES}")
    for role in roles:
        _check_text("actor_roles", role, MAX_ID_CHARS)


def check_id(name: str, value: Any) -> str:
    """An id: a non-blank string of at most MAX_ID_CHARS, no NUL, encodable as UTF-8 (no lone surrogate)."""
    if not isinstance(value, str) or not value or value.isspace():
        raise FieldError(name, "must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise FieldError(name, f"{len(value)} characters, more than {MAX_ID_CHARS}")
    if "\x00" in value:
        raise FieldError(name, "contains a NUL character")
    _check_utf8(name, value)
    return value


def _check_text(name: str, value: str | None, limit: int) -> None:
    if value is not None:
        if len(value) > limit:
            raise FieldError(name, f"{len(value)} characters, more than {limit}")
        _check_utf8(name, value)


def _check_utf8(name: str, value: str) -> None:
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise FieldError(name, "is not valid Unicode (a lone surrogate)") from None


def _check_time(name: str, value: int) -> None:
    if not 0 <= value <= MAX_TIME_MS:
        raise FieldError(name, f"{value} is not epoch milliseconds between 1970 and 3000")


def load_json(text: str | bytes, field: str) -> Any:
    """json.loads that fails only with a FieldError: deep nesting ('[' * 100_000) raises RecursionError."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError covers JSONDecodeError and bad UTF-8
        raise FieldError(field, f"not JSON: {type(exc).__name__}: {str(exc)[:200]}") from None


def parse_json_event(line: str, schema: Schema) -> dict[str, Any]:
    """An event in the contract's JSON form (epoch-millis times, enum symbols) as a checked record."""
    raw = load_json(line, "json")
    if not isinstance(raw, dict):
        raise FieldError("json", "an event must be a JSON object")
    record: dict[str, Any] = {}
    for spec in schema.definition["fields"]:
        name = spec["name"]
        if raw.get(name) is not None:
            record[name] = raw[name]
        elif "default" in spec:
            record[name] = spec["default"]
        else:
            raise FieldError(name, "required field is missing")
        _check_symbol(name, spec["type"], record[name])
    unknown = sorted(set(raw) - set(record))
    if unknown:
        raise FieldError(unknown[0], f"not a field of {schema.name}")
    try:
        validate(record, schema.plain, raise_errors=True)
    except ValidationError as exc:
        name = _field_of(exc)
        raise FieldError(name, f"wrong type: {raw.get(name)!r}") from None
    return check_event(record, NO_KEY_CHECK)


def _check_symbol(name: str, avro_type: Any, value: Any) -> None:
    if isinstance(avro_type, dict) and avro_type.get("type") == "enum" and value not in avro_type["symbols"]:
        raise FieldError(name, f"unknown symbol {value!r}; expected one of {', '.join(avro_type['symbols'])}")


def _field_of(exc: ValidationError) -> str:
    match = _FIELD_IN_ERROR.search(str(exc))
    return match.group(1) if match else "value"
