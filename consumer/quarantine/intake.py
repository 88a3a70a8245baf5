"""An AddressSignal record checked against the contract, as (normal address, Signal).

Error texts never quote the address (personal data): a dead letter's reason goes to the log.
"""

from __future__ import annotations

from typing import Any

from consumer.codec.errors import FieldError, FutureEvent, KeyMismatch, MissingKey
from consumer.codec.validation import MAX_ID_CHARS, MAX_TEXT_CHARS, MAX_TIME_MS, check_id
from consumer.quarantine.commands import COMMANDS
from consumer.quarantine.signals import Signal, normal_address


def check_signal(record: dict[str, Any], key: bytes | None, latest_ms: int) -> tuple[str, Signal]:
    """Raise an InvalidEvent naming the first field that breaks the contract; else the address and its signal.
    `key` must be the normal address (how the producers place a signal), `latest_ms` the latest plausible time."""
    address = normal_address(record["address"])
    if not address or len(address) > MAX_TEXT_CHARS:
        raise FieldError("address", f"must have 1 to {MAX_TEXT_CHARS} characters besides spaces")
    if key is None:
        raise MissingKey("key", "the record has no key; address signals are keyed by their normal address")
    try:
        normal_key = address.encode()
    except UnicodeEncodeError:
        raise FieldError("address", "is not valid Unicode (a lone surrogate)") from None
    if key != normal_key:
        raise KeyMismatch("key", "the record key is not the normal form of its address")
    check_id("event_id", record["event_id"])
    at = record["occurred_at"]
    if not 0 <= at <= MAX_TIME_MS:
        raise FieldError("occurred_at", f"{at} is not epoch milliseconds between 1970 and 3000")
    if at > latest_ms:
        raise FutureEvent("occurred_at", f"{at} is {(at - latest_ms) / 1000:.0f} s beyond the allowed clock skew")
    for name in ("delivery_id", "message_id"):
        if record.get(name) is not None:
            check_id(name, record[name])
    if record.get("reason") is not None and len(record["reason"]) > MAX_TEXT_CHARS:
        raise FieldError("reason", f"more than {MAX_TEXT_CHARS} characters")
    actor = record.get("actor")
    if record["kind"] in COMMANDS and not actor:
        raise FieldError("actor", f"a {record['kind']} names who gave it")
    if actor is not None and len(actor) > MAX_ID_CHARS:
        raise FieldError("actor", f"more than {MAX_ID_CHARS} characters")
    return address, Signal.from_record(record)
