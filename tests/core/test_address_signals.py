"""Address signals from the core: which MTA events give which signal, and the one validity-end failure per message."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.codec.schemas import load
from consumer.core.address_signals import SIGNAL_OF_TYPE, VALIDITY_END_FAILURE, validity_end_id
from consumer.core.processor import PartitionProcessor
from consumer.delivery.view import StateView
from consumer.state.memory import MemoryStore
from tests.core.builders import mta, prepared
from tests.core.test_properties import DELIVERIES, batchings, delivery_events

ADDRESS = "Jane.Doe@Example.com"  # as the MTA gave it: the stage publishes the normal form
END = 5_000  # the validity end


class Partition:
    """A processor with address signals over a memory store, checkpointed by hand (a restart reads the store)."""

    def __init__(self, retention_ms: int | None = None, signals: bool = True) -> None:
        self.store = MemoryStore()
        self.retention_ms = retention_ms
        self.signals = signals
        self.reopen()

    def reopen(self) -> None:
        self.view = StateView(self.store)
        self.processor = PartitionProcessor(self.view, retention_ms=self.retention_ms, address_signals=self.signals)

    def apply(self, *events: dict[str, Any]) -> list[dict[str, Any]]:
        """The signals the events gave, as the stage takes them after each apply."""
        self.processor.apply(list(events))
        return self.processor.take_address_signals()

    def checkpoint(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """The signals the checkpoint gives (the clock's), its state written to the store."""
        if now_ms is not None:
            self.processor.advance_clock(now_ms)
        signals = self.processor.take_output().address_signals
        self.store.write(self.view.stage(), {})
        return signals


def sending(efs: bool = False) -> Partition:
    partition = Partition()
    assert partition.apply(prepared("d", efs=efs, validity_end=END), mta("d", "m", "RELAYED", address=ADDRESS)) == []
    return partition


def signal(kind: str, event_id: str, at: int, reason: str | None = None, message_id: str = "m") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "address": ADDRESS,
        "kind": kind,
        "occurred_at": at,
        "delivery_id": "d",
        "message_id": message_id,
        "reason": reason,
        "actor": None,
    }


@pytest.mark.parametrize(
    ("kind", "reason", "expected_kind", "expected_reason"),
    [
        ("HARD_BOUNCE", "user_unknown", "HARD_ERROR", "user_unknown"),
        ("SOFT_BOUNCE", "mailbox_full", "SOFT_ERROR", "mailbox_full"),
        ("IGNORED", None, "IGNORED_ERROR", None),
        ("DELIVERED", None, "DELIVERED", None),
        ("OPEN", None, "OPEN", None),
        ("CLICK", None, "CLICK", None),
        ("COMPLAINT", None, "COMPLAINT", None),
    ],
)
def test_each_significant_event_with_an_address_gives_its_signal(kind, reason, expected_kind, expected_reason):
    partition = sending()
    event = mta("d", "m", kind, at=1_200, reason=reason, address=ADDRESS, event_id="e1")
    assert partition.apply(event) == [signal(expected_kind, "e1", 1_200, expected_reason)]


def test_retries_exhausted_gives_the_validity_end_failure_at_its_own_time():
    partition = sending()
    assert partition.apply(mta("d", "m", "RETRIES_EXHAUSTED", at=1_300, reason="unreachable", address=ADDRESS)) == [
        signal(VALIDITY_END_FAILURE, "validity-end:d/m", 1_300, "unreachable")
    ]


@pytest.mark.parametrize("kind", [*SIGNAL_OF_TYPE, "RETRIES_EXHAUSTED"])
@pytest.mark.parametrize("address", [None, "", "   "])
def test_an_event_without_an_address_gives_none(kind, address):
    partition = Partition()
    partition.apply(prepared("d", efs=False, validity_end=END), mta("d", "m", "RELAYED"))
    assert partition.apply(mta("d", "m", kind, at=1_200, address=address)) == []
    assert partition.checkpoint(now_ms=END) == []


def test_relayed_gives_none():
    assert Partition().apply(mta("d", "m", "RELAYED", address=ADDRESS)) == []


def test_signals_off_give_none_and_keep_no_address():
    partition = Partition(signals=False)
    partition.apply(prepared("d", efs=False, validity_end=END), mta("d", "m", "SOFT_BOUNCE", address=ADDRESS))
    assert partition.checkpoint(now_ms=END) == []
    assert partition.view.message("d", "m").address is None


def test_an_archived_delivery_refuses_the_event_and_gives_no_signal():
    partition = Partition(retention_ms=1_000)
    partition.apply(prepared("d", efs=False, validity_end=END), mta("d", "m", "DELIVERED", address=ADDRESS))
    partition.checkpoint(now_ms=END + 2_000)
    assert partition.checkpoint(now_ms=END + 4_000) == []
    assert partition.processor.archived("d") is not None
    assert partition.apply(mta("d", "m", "HARD_BOUNCE", at=END + 4_100, address=ADDRESS)) == []


def test_an_unknown_delivery_s_events_still_give_signals():
    # Its PREPARED may simply not be read yet: what the MTA saw of the address is true either way.
    partition = Partition()
    event = mta("unknown", "m", "HARD_BOUNCE", at=1_200, reason="user_unknown", address=ADDRESS, event_id="e1")
    assert [s["kind"] for s in partition.apply(event)] == ["HARD_ERROR"]
    assert partition.processor.take_output().anomalies == 1


def test_a_redelivery_repeats_its_signal_under_the_same_id():
    # The quarantine drops the repeat by its event id; the delivery core cannot tell a redelivery from an event that
    # only tells the message nothing new.
    partition = sending()
    bounce = mta("d", "m", "SOFT_BOUNCE", at=1_200, reason="mailbox_full", address=ADDRESS)
    first_open = mta("d", "m", "OPEN", at=2_000, address=ADDRESS)
    first = partition.apply(bounce, first_open)
    assert partition.apply(dict(bounce), dict(first_open)) == first
    assert [s["kind"] for s in partition.apply(mta("d", "m", "OPEN", at=2_100, address=ADDRESS))] == ["OPEN"]


def test_an_older_soft_bounce_read_after_a_newer_one_still_gives_its_signal():
    # Retries of one message bounce on different days: each is an error of its day to the quarantine, whatever the
    # order they are read in.
    partition = sending()
    newer = mta("d", "m", "SOFT_BOUNCE", at=END - 100, attempt=2, reason="mailbox_full", address=ADDRESS, event_id="e2")
    older = mta("d", "m", "SOFT_BOUNCE", at=1_200, attempt=1, reason="mailbox_full", address=ADDRESS, event_id="e1")
    assert [s["event_id"] for s in partition.apply(newer)] == ["e2"]
    assert [(s["event_id"], s["occurred_at"]) for s in partition.apply(older)] == [("e1", 1_200)]


@pytest.mark.parametrize("efs", [False, True])
def test_the_validity_end_fails_a_soft_bounced_message_once_with_its_soft_bounce_s_reason(efs):
    partition = sending(efs)
    partition.apply(mta("d", "m", "SOFT_BOUNCE", at=1_200, reason="mailbox_full", address=ADDRESS))
    partition.checkpoint()
    partition.reopen()  # the address is kept in the store, not only in memory
    assert partition.checkpoint(now_ms=END + 10) == [
        signal(VALIDITY_END_FAILURE, "validity-end:d/m", END, "mailbox_full")
    ]
    # The MTA's own report, later: the same failure, already told.
    assert partition.apply(mta("d", "m", "RETRIES_EXHAUSTED", at=END + 20, address=ADDRESS)) == []
    assert partition.checkpoint(now_ms=END + 30) == []


def test_the_mta_giving_up_before_the_validity_end_is_the_one_failure():
    partition = sending()
    partition.apply(mta("d", "m", "SOFT_BOUNCE", at=1_200, reason="mailbox_full", address=ADDRESS))
    [failure] = partition.apply(mta("d", "m", "RETRIES_EXHAUSTED", at=1_300, reason="mailbox_full", address=ADDRESS))
    assert failure == signal(VALIDITY_END_FAILURE, validity_end_id("d", "m"), 1_300, "mailbox_full")
    assert partition.checkpoint(now_ms=END + 10) == []


def test_a_soft_bounce_after_the_validity_end_fails_the_message_at_the_end():
    partition = sending()
    partition.checkpoint(now_ms=END + 10)
    bounce = mta("d", "m", "SOFT_BOUNCE", at=END - 100, reason="refused", address=ADDRESS, event_id="late")
    assert partition.apply(bounce) == [
        signal("SOFT_ERROR", "late", END - 100, "refused"),
        signal(VALIDITY_END_FAILURE, "validity-end:d/m", END, "refused"),
    ]


def test_a_message_delivered_after_its_soft_bounce_does_not_fail_at_the_validity_end():
    partition = sending()
    partition.apply(
        mta("d", "m", "SOFT_BOUNCE", at=1_200, address=ADDRESS), mta("d", "m", "DELIVERED", at=1_300, address=ADDRESS)
    )
    assert partition.checkpoint(now_ms=END + 10) == []


def test_the_core_s_signal_kinds_are_the_schema_s():
    [kinds] = [f["type"]["symbols"] for f in load("address_signal").definition["fields"] if f["name"] == "kind"]
    assert {*SIGNAL_OF_TYPE.values(), VALIDITY_END_FAILURE} <= set(kinds)


# -- the property: batching and redeliveries change no signal ------------------------------------------------------
MESSAGES = ("m1", "m2", "m3", "m4")
ADDRESSES = {"m1": "a@example.com", "m2": "A@Example.com", "m3": None, "m4": "b@example.com"}  # one per message


@st.composite
def mta_events(draw: st.DrawFn, index: int) -> dict[str, Any]:
    message_id = draw(st.sampled_from(MESSAGES))
    return mta(
        draw(st.sampled_from(DELIVERIES)),
        message_id,
        draw(st.sampled_from(("RELAYED", "SOFT_BOUNCE", "SOFT_BOUNCE", "RETRIES_EXHAUSTED", *SIGNAL_OF_TYPE))),
        at=draw(st.integers(0, 200)),
        event_id=f"mta-{index}",
        attempt=draw(st.integers(0, 3)),
        reason=draw(st.sampled_from((None, "mailbox_full", "user_unknown"))),
        address=ADDRESSES[message_id],
    )


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    events = [draw(mta_events(i)) for i in range(draw(st.integers(0, 40)))]
    for delivery_id in DELIVERIES:
        events += draw(delivery_events(delivery_id))
    return draw(st.permutations(events))


def signal_ids(events: list[dict[str, Any]], batch_sizes: list[int], restarts: bool = False) -> Counter[str]:
    """Every signal's id, applying in batches, checkpointing (and, with restarts, reopening) between them."""
    partition = Partition()
    ids: Counter[str] = Counter()
    start, sizes = 0, iter(batch_sizes)
    while start < len(events):
        size = next(sizes, len(events))
        ids.update(s["event_id"] for s in partition.apply(*events[start : start + size]))
        ids.update(s["event_id"] for s in partition.checkpoint())
        if restarts:
            partition.reopen()
        start += size
    return ids


def settled_in_the_end(events: list[dict[str, Any]]) -> set[str]:
    """The validity-end ids of messages a hard bounce or a delivery settles in the end: whether their failure was
    told first depends on when the clock passed the validity end, as their status did meanwhile."""
    return {validity_end_id(e["delivery_id"], e["message_id"]) for e in events if e["type"] in SETTLING}


SETTLING = ("HARD_BOUNCE", "DELIVERED", "OPEN", "CLICK")


@settings(max_examples=300, deadline=None)
@given(histories(), st.data(), batchings, st.booleans())
def test_the_signals_do_not_depend_on_batching_or_redeliveries(events, data, batches, restarts):
    redelivered = list(events)
    for event in data.draw(st.lists(st.sampled_from(events), max_size=15)) if events else []:
        after = redelivered.index(event) + 1  # a redelivery comes after the event
        redelivered.insert(data.draw(st.integers(after, len(redelivered))), dict(event))
    expected, actual = signal_ids(events, []), signal_ids(redelivered, batches, restarts)
    # Each MTA event naming an address gives its signal, whatever the order (the histories are permutations) and
    # however often it is redelivered; the repeats carry its id, for the quarantine to drop.
    assert {i for i in actual if i.startswith("mta-")} == {e["event_id"] for e in events if signalled(e)}
    assert all(actual[e["event_id"]] == redelivered.count(e) for e in events if signalled(e))
    validity_ends = {i: n for i, n in (*expected.items(), *actual.items()) if i.startswith("validity-end:")}
    assert set(validity_ends.values()) <= {1}  # a message fails at its validity end once, ever
    timing = settled_in_the_end(events)
    assert {i for i in actual if i not in timing} == {i for i in expected if i not in timing}


def signalled(event: dict[str, Any]) -> bool:
    return event["type"] in SIGNAL_OF_TYPE and event["address"] is not None
