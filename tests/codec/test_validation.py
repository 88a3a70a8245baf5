from __future__ import annotations

import pytest

from consumer.codec.errors import FieldError, KeyMismatch
from consumer.codec.schemas import MTA_EVENT, load
from consumer.codec.validation import check_event, parse_json_event
from tests import samples
from tests.core.builders import delivery_event, mta, prepared


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (mta("", "m", "RELAYED"), "delivery_id"),
        (mta("d", " ", "RELAYED"), "message_id"),
        (mta("d", "m", "RELAYED", event_id=""), "event_id"),
        (mta("d", "m" * 300, "RELAYED"), "message_id"),
        (mta("d", "m", "RELAYED", attempt=-1), "attempt"),
        (mta("d", "m", "RELAYED", at=-5), "occurred_at"),
        (mta("d", "m", "CLICK", url="x" * 10_000), "url"),
        (prepared("d", efs=True, to_deliver=-3), "to_deliver"),
        (prepared("d", efs=True, to_deliver=10**12), "to_deliver"),
        (delivery_event("d", "CONFIRMED", actor_roles=["r"] * 100), "actor_roles"),
    ],
)
def test_contract_violations_name_their_field(event, field):
    with pytest.raises(FieldError) as caught:
        check_event(event, event["delivery_id"].encode())
    assert caught.value.field == field


def test_key_must_be_the_delivery_id():
    with pytest.raises(KeyMismatch):
        check_event(mta("d", "m", "RELAYED"), b"other")


def test_json_form_fills_defaults_and_checks_types_and_symbols():
    schema = load(MTA_EVENT)
    line = '{"event_id": "e", "delivery_id": "d", "message_id": "m", "type": "OPEN", "occurred_at": 5}'
    assert parse_json_event(line, schema)["attempt"] == 0
    cases = {
        '{"event_id": "e", "delivery_id": "d", "message_id": "m", "type": "BOUNCED", "occurred_at": 5}': "type",
        '{"event_id": "e", "delivery_id": "d", "type": "OPEN", "occurred_at": 5}': "message_id",
        '{"event_id": "e", "delivery_id": "d", "message_id": "m", "type": "OPEN", "occurred_at": "now"}': "occurred_at",
        '{"event_id": "e", "delivery_id": "d", "message_id": "m", "type": "OPEN", "occurred_at": 5, "x": 1}': "x",
        "[1, 2]": "json",
        "{oops": "json",
    }
    for text, field in cases.items():
        with pytest.raises(FieldError) as caught:
            parse_json_event(text, schema)
        assert caught.value.field == field, text


def test_sample_files_are_valid():
    assert {e["delivery_id"] for e in samples.all_events()} == {samples.DELIVERY_ID}
