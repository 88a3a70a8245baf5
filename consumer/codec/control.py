"""The control topic's contract: small JSON commands keyed by the delivery they concern."""

from __future__ import annotations

from dataclasses import dataclass

from consumer.codec.errors import FieldError
from consumer.codec.validation import check_id, check_key, load_json

COMPUTE_STATS = "compute-stats"
MAX_COMMAND_BYTES = 4_096  # a command is a few dozen bytes; bigger is not one (and bounds the JSON parser)


@dataclass(frozen=True)
class ControlCommand:
    command: str
    delivery_id: str


def parse_control(value: bytes | None, key: bytes | None) -> ControlCommand:
    """The command in a control record, or a FieldError / KeyMismatch naming what is wrong."""
    if not value:
        raise FieldError("value", "a control record must hold a JSON object")
    if len(value) > MAX_COMMAND_BYTES:
        raise FieldError("value", f"{len(value)} bytes, more than {MAX_COMMAND_BYTES} for a control command")
    command = load_json(value, "value")
    if not isinstance(command, dict) or command.get("command") != COMPUTE_STATS:
        raise FieldError("command", f"unknown control command; expected {{'command': '{COMPUTE_STATS}', ...}}")
    delivery_id = check_id("delivery_id", command.get("delivery_id"))
    check_key(key, delivery_id)
    return ControlCommand(COMPUTE_STATS, delivery_id)
