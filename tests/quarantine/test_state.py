"""The per-address state's limits, the processor's clock, forget, and the records against their schemas."""

from __future__ import annotations

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import load
from consumer.quarantine.records import status_record
from consumer.quarantine.rules import (
    ADDRESS_STATUSES,
    DAY_MS,
    DECIDING_RULES,
    ERRONEOUS,
    QUARANTINED,
    VALID,
    Rules,
    evaluate,
)
from consumer.quarantine.signals import (
    CLICK,
    DELIVERED,
    HARD_ERROR,
    OPEN,
    SIGNAL_KINDS,
    SOFT_ERROR,
    VALIDITY_END_FAILURE,
    Signal,
)
from consumer.quarantine.state import APPLIED, DUPLICATE, LATE, AddressState, Limits
from tests.quarantine.builders import new_processor, sig

D = DAY_MS
RULES = Rules()
ADDRESS = "someone@example.com"


def test_a_soft_error_older_than_the_horizon_is_late_and_changes_nothing():
    limits = Limits(horizon_ms=5 * D)
    state = AddressState.new(ADDRESS, limits)
    assert state.apply(sig(DELIVERED, 10), RULES, limits) == APPLIED
    before = state.status(10 * D, RULES)
    assert state.apply(sig(SOFT_ERROR, 5, "r", delivery_id="d9", message="m9"), RULES, limits) == LATE
    assert state.status(10 * D, RULES) == before
    assert state.apply(sig(SOFT_ERROR, 5 + 1 / D, "r"), RULES, limits) == APPLIED  # just inside


def test_a_redelivered_signal_is_a_duplicate():
    state = AddressState.new(ADDRESS, Limits())
    signal = sig(SOFT_ERROR, 0, "r")
    assert state.apply(signal, RULES, Limits()) == APPLIED
    assert state.apply(signal, RULES, Limits()) == DUPLICATE


def test_an_idle_valid_address_has_nothing_to_remember_a_quarantined_one_has():
    limits = Limits(idle_after_ms=100 * D)
    valid, quarantined = AddressState.new("v", limits), AddressState.new("q", limits)
    valid.apply(sig(SOFT_ERROR, 0, "r"), RULES, limits)
    quarantined.apply(sig(HARD_ERROR, 0, "user_unknown"), RULES, limits)
    assert not valid.forgettable(100 * D - 1, RULES, limits)
    assert valid.forgettable(100 * D, RULES, limits)
    assert not quarantined.forgettable(1000 * D, RULES, limits)


def test_the_recipient_history_shows_each_messages_status_and_engagement():
    state = AddressState.new(ADDRESS, Limits())
    for signal in (
        sig(DELIVERED, 0, message="m1"),
        sig(OPEN, 1, message="m1"),
        sig(CLICK, 1, message="m1"),
        sig(HARD_ERROR, 2, "user_unknown", message="m2"),
    ):
        state.apply(signal, RULES, Limits())
    history = status_record(state, 2 * D, RULES)["history"]
    assert [(m["message_id"], m["status"], m["opened"], m["clicked"]) for m in history] == [
        ("m2", "FAILED", False, False),
        ("m1", "SENT", True, True),
    ]
    assert history[1]["occurred_at"] == 0 and history[1]["updated_at"] == D


def test_records_encode_with_their_schemas_and_the_enums_match():
    status_schema, signal_schema = load("address_status"), load("address_signal")
    assert dict(status_schema.enum_fields) == {"status": ADDRESS_STATUSES, "rule": DECIDING_RULES}
    assert dict(signal_schema.enum_fields) == {"kind": SIGNAL_KINDS}
    state = AddressState.new(ADDRESS, Limits())
    state.apply(sig(SOFT_ERROR, 0, "mailbox_full"), RULES, Limits())
    record = status_record(state, 0, RULES)
    codec = AvroCodec.named("address_status")
    assert codec.decode(codec.encode(record)) == record
    assert record["next_change_at"] == 10 * D + 1
    signal = {
        "event_id": "e1",
        "address": ADDRESS,
        "kind": "SOFT_ERROR",
        "occurred_at": 5,
        "delivery_id": "d",
        "message_id": "m",
        "reason": "mailbox_full",
        "actor": None,
    }
    decoded = AvroCodec.named("address_signal").decode(AvroCodec.named("address_signal").encode(signal))
    assert Signal.from_record(decoded) == Signal("e1", SOFT_ERROR, 5, "d", "m", "mailbox_full")


def test_the_processor_republishes_what_time_changes_and_counts_transitions():
    processor = new_processor()
    processor.apply([(ADDRESS, sig(SOFT_ERROR, 0, "r"))])
    out = processor.take_output()
    assert [r["status"] for r in out.statuses] == [ERRONEOUS] and out.transitions == {(None, ERRONEOUS): 1}
    processor.advance_clock(10 * D)
    assert processor.take_output().statuses == []
    processor.advance_clock(10 * D + 1)
    out = processor.take_output()
    assert [(r["status"], r["rule"]) for r in out.statuses] == [(VALID, "COUNTER_RESET")]
    assert out.transitions == {(ERRONEOUS, VALID): 1}
    processor.advance_clock(20 * D)
    assert processor.take_output().statuses == []  # published once


def test_the_processor_does_not_let_a_future_signal_move_its_clock_past_the_wall_clock():
    processor = new_processor()
    processor.apply([(ADDRESS, sig(SOFT_ERROR, 100, "r"))], now_ms=D)
    assert processor.now == D


def test_forget_and_idle_addresses_leave_tombstones():
    processor = new_processor(Limits(idle_after_ms=200 * D))
    processor.apply([("a", sig(HARD_ERROR, 0, "user_unknown")), ("b", sig(DELIVERED, 0)), ("c", sig(DELIVERED, 0))])
    processor.take_output()
    assert processor.forget("a") and not processor.forget("unknown")
    processor.apply([("c", sig(DELIVERED, 150))])
    processor.advance_clock(200 * D)  # b idle and valid; c seen 50 days ago
    out = processor.take_output()
    assert out.tombstones == ["a", "b"] and processor.address("a") is None and processor.address("c") is not None
    assert out.transitions == {(QUARANTINED, None): 1, (VALID, None): 1}


def test_signals_sharing_a_millisecond_past_max_facts_are_not_late_in_order():
    """Hypothesis found it: the count limit folded whole milliseconds, so the next signal of the same millisecond,
    arriving in order, was refused as late."""
    limits = Limits(max_facts=2)
    state = AddressState.new(ADDRESS, limits)
    signals = [Signal(f"e{i}", HARD_ERROR, 0, "d1", "m0") for i in range(4)] + [Signal("e9", SOFT_ERROR, 0, "d1", "m0")]
    assert [state.apply(s, RULES, limits) for s in signals] == [APPLIED] * 5
    assert state.status(0, RULES).error_count == 1


def _apply(signals: list[Signal]) -> AddressState:
    state = AddressState.new("a@example.com", Limits())
    for signal in signals:
        state.apply(signal, Rules(), Limits())
    return state


def test_a_settled_message_s_validity_end_failure_is_void_whichever_arrives_first() -> None:
    # Read from a backlog, the delivery stage's clock passes the validity end before the retry's success (dated
    # earlier) is read: its failure comes first. The address must end as if it had never come.
    soft = sig(SOFT_ERROR, 0, "unreachable", message="m", event_id="soft")
    for settling in (DELIVERED, OPEN, HARD_ERROR):
        success = sig(settling, 0.1, "user_unknown" if settling == HARD_ERROR else None, message="m", event_id="ok")
        failure = sig(VALIDITY_END_FAILURE, 7, "unreachable", message="m", event_id="validity-end:d1/m")
        clean = _apply([soft, success]).status(20 * DAY_MS, Rules())
        assert _apply([soft, failure, success]).status(20 * DAY_MS, Rules()) == clean
        assert _apply([failure, success, soft]).status(20 * DAY_MS, Rules()) == clean
        assert evaluate([soft, failure, success], 20 * DAY_MS) == clean


def test_another_message_s_success_does_not_void_a_failure() -> None:
    failure = sig(VALIDITY_END_FAILURE, 7, "unreachable", message="m1")
    state = _apply([failure, sig(DELIVERED, 6, message="m2")])
    assert state.status(7 * DAY_MS, Rules()).error_count == 1
