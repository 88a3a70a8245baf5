from __future__ import annotations

import json

from consumer.core.delivery import DeliveryState
from consumer.core.processor import REJECTED_CONFIRMATION
from consumer.core.status import Bounce, MessageState
from consumer.delivery import records
from consumer.delivery.view import StateView
from consumer.state.memory import MemoryStore
from tests.core.builders import mta, processor


def test_message_and_delivery_records_roundtrip():
    plain = MessageState(facts=3, changes=2)
    assert records.encode_message(plain) == b"3 2"
    bounced = MessageState(12, 1, Bounce(5, 0, "e1", "user_unknown"), Bounce(9, 2, "e2", None), None)
    for message in (plain, bounced):
        assert records.decode_message(records.encode_message(message)) == message
    delivery = DeliveryState("d", efs=True, prepared_rank=(5, "p"), to_deliver=10)
    delivery.counters.failures_by_reason["mailbox_full"] = 2
    assert records.decode_delivery(records.encode_delivery(delivery)) == delivery


def test_a_soft_bounced_message_keeps_its_address_and_older_records_read_without_one():
    soft = MessageState(5, 1, None, Bounce(9, 0, "s1", "mailbox_full"), None, "Jane@Example.com")
    encoded = records.encode_message(soft)
    assert records.decode_message(encoded) == soft
    assert records.decode_message(b'[5,1,null,[9,0,"s1","mailbox_full"],null]') == MessageState(
        5, 1, None, Bounce(9, 0, "s1", "mailbox_full"), None, None
    )  # written before addresses were kept
    without = records.encode_message(MessageState(5, 1, None, Bounce(9, 0, "s1", None), None))
    assert len(json.loads(without)) == 5  # as before: no address, no sixth element
    addressed_only = MessageState(1, 0, address="a@example.com")  # never made so, but never lost either
    assert records.decode_message(records.encode_message(addressed_only)) == addressed_only


def test_view_stages_each_change_once_and_reads_its_own_writes():
    store = MemoryStore()
    view = StateView(store)
    message = MessageState(1, 1)
    view.put_message("d", "m1", message)
    message.facts |= 2
    view.put_message("d", "m1", message)
    assert view.message("d", "m1") is message
    assert view.count_once("d", "o1", "OPEN") and not view.count_once("d", "o1", "OPEN")
    changes = view.stage()
    assert changes[records.message_key("d", "m1")] == b"3 1"
    assert view.stage() == {}
    store.write(changes, {})
    fresh = StateView(store)
    assert fresh.message("d", "m1") == MessageState(3, 1)
    assert not fresh.count_once("d", "o1", "OPEN")
    fresh.put_message("d", "m2", MessageState(1, 1))
    assert sorted(mid for mid, _ in fresh.messages("d")) == ["m1", "m2"]
    assert list(fresh.counted("d")) == ["OPEN"]


def test_rejections_and_engagements_are_counted_in_separate_key_spaces():
    view = StateView(MemoryStore())
    assert view.count_once("d", "x", "OPEN") and view.count_once("d", "x", REJECTED_CONFIRMATION)
    assert not view.count_once("d", "x", "CLICK") and not view.count_once("d", "x", REJECTED_CONFIRMATION)
    assert view.stage() == {
        records.counted_key("d", "x"): b"OPEN",
        records.rejected_key("d", "x"): b"REJECTED_CONFIRMATION",
    }


def test_a_rejection_stored_before_the_key_spaces_were_split_still_counts_once():
    store = MemoryStore()
    store.write({records.counted_key("d", "x"): b"REJECTED_CONFIRMATION"}, {})  # the old layout
    view = StateView(store)
    assert not view.count_once("d", "x", REJECTED_CONFIRMATION)  # a redelivery
    assert view.count_once("d", "x", "OPEN")  # moves the rejection to its own key
    assert sorted(view.counted("d")) == ["OPEN", "REJECTED_CONFIRMATION"]
    store.write(view.stage(), {})
    fresh = StateView(store)
    assert sorted(fresh.counted("d")) == ["OPEN", "REJECTED_CONFIRMATION"]
    assert not fresh.count_once("d", "x", REJECTED_CONFIRMATION) and not fresh.count_once("d", "x", "OPEN")


def test_an_idle_partition_stages_nothing():
    p = processor()
    p.apply([mta("d", "m", "RELAYED", at=5)])
    p.take_output()
    assert p._state.stage()  # the message, the delivery and the watermark
    p.advance_clock(6)
    p.take_output()
    assert p._state.stage() == {}  # nothing to write, so a checkpoint has nothing to commit
