"""Address commands: the AddressSignal record the CLI and the view both publish."""

from __future__ import annotations

import pytest

from consumer.codec.avro import AvroCodec
from consumer.quarantine.commands import command_key, command_signal
from consumer.quarantine.signals import FORGET, RELEASE, Signal

SIGNALS = AvroCodec.named("address_signal")


@pytest.mark.parametrize("kind", [RELEASE, FORGET])
def test_a_command_is_a_signal_of_the_normal_address_by_its_actor(kind: str) -> None:
    record = command_signal(kind, "  Jane@Example.COM ", "alice", 1_800_000_000_000, "id-1")
    assert SIGNALS.decode(SIGNALS.encode(record)) == record  # a complete record of the schema
    assert record["address"] == "jane@example.com"
    assert command_key(" Jane@Example.COM") == b"jane@example.com"
    signal = Signal.from_record(record)
    assert (signal.kind, signal.actor, signal.event_id, signal.delivery_id) == (kind, "alice", "id-1", None)


@pytest.mark.parametrize(
    ("kind", "address", "actor"),
    [("HARD_ERROR", "a@b.c", "alice"), (RELEASE, "  ", "alice"), (RELEASE, "a@b.c", "")],
)
def test_what_is_not_a_command_is_refused(kind: str, address: str, actor: str) -> None:
    with pytest.raises(ValueError):
        command_signal(kind, address, actor, 1, "id")
