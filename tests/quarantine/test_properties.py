"""Invariants over random histories: order, duplicates and incremental application never change the answer, and an
address's state stays bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.quarantine.records import status_record
from consumer.quarantine.rules import DAY_MS, Rules, evaluate
from consumer.quarantine.signals import (
    COMPLAINT,
    HARD_ERROR,
    SIGNAL_KINDS,
    SOFT_ERROR,
    VALIDITY_END_FAILURE,
    Signal,
)
from consumer.quarantine.state import AddressState, Limits

RULES = Rules()
# Soft errors and deliveries dominate, as in real mail, so counters climb, reset and quarantine.
KINDS = st.sampled_from((*SIGNAL_KINDS, SOFT_ERROR, SOFT_ERROR, SOFT_ERROR, "DELIVERED"))
REASONS = st.sampled_from((None, "mailbox_full", "mailbox_full", "unreachable", "user_unknown"))


@st.composite
def histories(
    draw: st.DrawFn, span_ms: int, max_size: int, messages: int = 6, kinds: st.SearchStrategy[str] = KINDS
) -> list[Signal]:
    size = draw(st.integers(0, max_size))
    out = []
    for i in range(size):
        kind = draw(kinds)
        at = draw(st.integers(0, span_ms))
        if kind == "RELEASE":
            out.append(Signal(f"e{i}", kind, at, actor="ops"))
        else:
            out.append(Signal(f"e{i}", kind, at, "d1", f"m{draw(st.integers(0, messages - 1))}", draw(REASONS)))
    return out


def apply_all(signals: list[Signal], limits: Limits) -> AddressState:
    state = AddressState.new("a@example.com", limits)
    for signal in signals:
        state.apply(signal, RULES, limits)
    return state


def shuffled_with_duplicates(signals: list[Signal], data: st.DataObject) -> list[Signal]:
    out = data.draw(st.permutations(signals))
    for extra in data.draw(st.lists(st.sampled_from(signals), max_size=10)) if signals else []:
        out.insert(data.draw(st.integers(0, len(out))), extra)
    return out


# Within the horizon and the fact limit, and without messages pushed out of the recipient history.
inside = histories(span_ms=25 * DAY_MS, max_size=60)
nows = st.integers(0, 60 * DAY_MS)


@settings(max_examples=300, deadline=None)
@given(inside, st.data(), nows)
def test_permutations_and_duplicates_give_the_same_status_and_history(signals, data, extra):
    now = max((s.occurred_at for s in signals), default=0) + extra
    a = apply_all(signals, Limits())
    b = apply_all(shuffled_with_duplicates(signals, data), Limits())
    assert status_record(a, now, RULES) == status_record(b, now, RULES)


@settings(max_examples=300, deadline=None)
@given(inside, st.data(), nows)
def test_incremental_application_equals_whole_history_evaluation(signals, data, extra):
    now = max((s.occurred_at for s in signals), default=0) + extra
    state = apply_all(shuffled_with_duplicates(signals, data), Limits())
    assert state.status(now, RULES) == evaluate(signals, now, RULES)


SMALL = Limits(horizon_ms=5 * DAY_MS, max_facts=8, history_size=5)
# Without validity-end failures: one is void when its message is delivered or hard-bounced, which the state can tell
# only within the horizon and the recipient history (test_a_settled_message_s_validity_end_failure_is_void_...).
long_histories = histories(
    span_ms=400 * DAY_MS, max_size=300, messages=40, kinds=KINDS.filter(lambda kind: kind != VALIDITY_END_FAILURE)
)


@settings(max_examples=150, deadline=None)
@given(long_histories, st.data())
def test_in_order_arrival_is_exact_past_the_horizon_and_late_latches_are_placed_exactly(signals, data):
    """Folding old signals into the base loses nothing when they come in event-time order; a hard error or a
    complaint is placed exactly however late it comes."""
    ordered = sorted(signals, key=lambda s: s.order)
    latches = [s for s in ordered if s.kind in (HARD_ERROR, COMPLAINT)]
    late = data.draw(st.lists(st.sampled_from(latches), unique=True)) if latches else []
    arrival = [s for s in ordered if s not in late]
    for signal in late:  # anywhere after its own place
        arrival.insert(data.draw(st.integers(arrival.index(_previous(arrival, signal)) + 1, len(arrival))), signal)
    now = max((s.occurred_at for s in signals), default=0) + data.draw(nows)
    assert apply_all(arrival, SMALL).status(now, RULES) == evaluate(signals, now, RULES)


def _previous(arrival: list[Signal], signal: Signal) -> Signal:
    """The last signal of `arrival` ordered before `signal` (the first one if none is)."""
    before = [s for s in arrival if s.order < signal.order]
    return before[-1] if before else arrival[0]


@settings(max_examples=100, deadline=None)
@given(long_histories, st.data())
def test_state_stays_bounded_in_any_order(signals, data):
    state = AddressState.new("a@example.com", SMALL)
    for signal in data.draw(st.permutations(signals)):
        state.apply(signal, RULES, SMALL)
        assert len(state.pending) <= SMALL.max_facts
        assert len(state.history.entries) <= SMALL.history_size


@st.composite
def slotted_histories(draw: st.DrawFn) -> list[Signal]:
    """Messages whose signals all fall in a slot of their own: how mail behaves when a message's events come within
    its send's lifetime and the next send is later."""
    out = []
    for m in range(draw(st.integers(0, 12))):
        for j in range(draw(st.integers(1, 4))):
            at = m * 10 * DAY_MS + draw(st.integers(0, 5 * DAY_MS))
            kind = draw(st.sampled_from(("DELIVERED", "OPEN", "CLICK", SOFT_ERROR, HARD_ERROR, "IGNORED_ERROR")))
            out.append(Signal(f"e{m}-{j}", kind, at, "d1", f"m{m}"))
    return out


@settings(max_examples=200, deadline=None)
@given(slotted_histories(), st.data())
def test_the_recipient_history_keeps_the_latest_messages_in_any_order(signals, data):
    limits = Limits(history_size=3)
    a = apply_all(signals, limits).history.latest()
    b = apply_all(shuffled_with_duplicates(signals, data), limits).history.latest()
    assert a == b
    newest = sorted({s.message_id for s in signals}, key=lambda m: int(m[1:]), reverse=True)[:3]
    assert [entry.message_id for entry in a] == newest
