"""The store's value for an address: any state the rules can reach survives encode and decode unchanged."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.quarantine.rules import DAY_MS, Rules
from consumer.quarantine.signals import DELIVERED
from consumer.quarantine.state import AddressState, Limits
from consumer.quarantine.state_codec import (
    deadline_bound,
    deadline_key,
    deadline_of,
    decode_address,
    encode_address,
)
from tests.quarantine.builders import sig
from tests.quarantine.test_properties import histories

SMALL = Limits(horizon_ms=5 * DAY_MS, max_facts=8, history_size=5)


@settings(max_examples=200, deadline=None)
@given(
    histories(span_ms=60 * DAY_MS, max_size=60, messages=12),
    st.sampled_from((None, "VALID", "QUARANTINED")),
    st.one_of(st.none(), st.integers(0, 2**40)),
)
def test_an_address_state_round_trips(signals, published, due):
    state = AddressState.new("Someone@example.com", SMALL)
    for signal in signals:
        state.apply(signal, Rules(), SMALL)  # past the horizon and max_facts: a base, a bound, a full history
    state.published = published
    value = encode_address(state, due)
    assert decode_address(state.address, value, SMALL.history_size) == (state, due)


def test_a_lowered_history_size_keeps_the_latest_messages():
    limits = Limits(history_size=4)
    state = AddressState.new("a", limits)
    for day in range(4):
        state.apply(sig(DELIVERED, day, message=f"m{day}"), Rules(), limits)
    decoded, _ = decode_address("a", encode_address(state, None), 2)
    assert [entry.message_id for entry in decoded.history.latest()] == ["m3", "m2"]
    assert decoded.history.size == 2


@given(st.integers(0, 2**62), st.integers(0, 2**62), st.text(min_size=1, max_size=20))
def test_deadline_keys_sort_by_due_time_and_read_back(a, b, address):
    assert deadline_of(deadline_key(a, address)) == (a, address)
    assert (deadline_key(a, address) < deadline_key(b, address)) == (a < b)
    assert (deadline_key(a, address) < deadline_bound(b)) == (a <= b)
