"""Contract rules beyond Avro types: sane ids, counts and sizes in range, key = delivery_id."""

from __future__ import annotations

import json
import re
from typing import Any

from fastavro.validation import ValidationError, validate

from consumer.codec.errors import FieldError, KeyMismatch
from consumer.codec.schemas import Schema

MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 2_048
MAX_URL_CHARS = 8_192
MAX_TO_DELIVER = 1_000_000_000
MAX_ATTEMPT = 1_000
MAX_ROLES = 64
MAX_TIME_MS = 32_503_680_000_000  # year 3000: later is a unit mistake, not a date
_FIELD_IN_ERROR = re.compile(r"sendtrack\.\w+\.(\w+)")


def check_event(event: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """Raise an InvalidEvent naming the first field that breaks the contract; return the event."""
    if "message_id" in event and _plainly_valid_mta(event, key):
        return event
    for name in ("event_id", "delivery_id", "message_id"):
        if name in event:
            _check_id(name, event[name])
    _check_time("occurred_at", event["occurred_at"])
    if key is not None and key != event["delivery_id"].encode():
        raise KeyMismatch("key", f"record key {key[:80]!r} is not delivery_id {event['delivery_id']!r}")
    if "message_id" in event:
        _check_mta_fields(event)
    else:
        _check_delivery_fields(event)
    return event


def _plainly_valid_mta(event: dict[str, Any], key: bytes | None) -> bool:
    """The same rules as below in one expression: the hot path. Anything doubtful takes the slow path,
    which names the field at fault."""
    event_id, delivery_id, message_id = event["event_id"], event["delivery_id"], event["message_id"]
    reason, address, url = event.get("reason"), event.get("address"), event.get("url")
    return (
        0 < len(event_id) <= MAX_ID_CHARS
        and 0 < len(delivery_id) <= MAX_ID_CHARS
        and 0 < len(message_id) <= MAX_ID_CHARS
        and not (event_id.isspace() or delivery_id.isspace() or message_id.isspace())
        and "\x00" not in event_id
        and "\x00" not in delivery_id
        and "\x00" not in message_id
        and 0 <= event["occurred_at"] <= MAX_TIME_MS
        and 0 <= event.get("attempt", 0) <= MAX_ATTEMPT
        and (key is None or key == delivery_id.encode())
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


def _check_id(name: str, value: str) -> None:
    if not value or value.isspace():
        raise FieldError(name, "must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise FieldError(name, f"{len(value)} characters, more than {MAX_ID_CHARS}")
    if "\x00" in value:
        raise FieldError(name, "contains a NUL character")


def _check_text(name: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise FieldError(name, f"{len(value)} characters, more than {limit}")


def _check_time(name: str, value: int) -> None:
    if not 0 <= value <= MAX_TIME_MS:
        raise FieldError(name, f"{value} is not epoch milliseconds between 1970 and 3000")


def parse_json_event(line: str, schema: Schema) -> dict[str, Any]:
    """An event in the contract's JSON form (epoch-millis times, enum symbols) as a checked record."""
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise FieldError("json", f"not JSON: {exc}") from None
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
    return check_event(record, None)


def _check_symbol(name: str, avro_type: Any, value: Any) -> None:
    if isinstance(avro_type, dict) and avro_type.get("type") == "enum" and value not in avro_type["symbols"]:
        raise FieldError(name, f"unknown symbol {value!r}; expected one of {', '.join(avro_type['symbols'])}")


def _field_of(exc: ValidationError) -> str:
    match = _FIELD_IN_ERROR.search(str(exc))
    return match.group(1) if match else "value"
