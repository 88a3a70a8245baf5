"""The delivery stage's merge: a record seen twice, or an unstamped one from an uncommitted transaction, changes
nothing once the counters are recomputed."""

from __future__ import annotations

from consumer.core.processor import PartitionProcessor
from consumer.core.status import Bounce, MessageState
from consumer.delivery import records
from consumer.delivery.merge import join_messages, merge
from consumer.delivery.view import StateView
from consumer.state.changelog import CHANGELOG_OFFSET, ChangelogRecord, apply_changelog
from consumer.state.memory import MemoryStore
from tests.core.builders import delivery_event, mta, prepared


def checkpointed_changelog(events_batches: list[list[dict]]) -> list[ChangelogRecord]:
    """What a service would have written to the changelog, one checkpoint per batch."""
    store, log = MemoryStore(), []
    processor = PartitionProcessor(StateView(store))
    for events in events_batches:
        processor.apply(events)
        processor.take_output()
        changes = processor._state.stage()
        log += [ChangelogRecord(key, value, len(log) + i) for i, (key, value) in enumerate(changes.items())]
        store.write(changes, {})
    return log


def test_join_keeps_every_fact_and_the_right_bounces():
    first = MessageState(4, 1, None, Bounce(10, 0, "s1", "refused"), None)
    later = MessageState(5, 2, Bounce(20, 0, "h1", "user_unknown"), Bounce(30, 1, "s2", "mailbox_full"), None)
    assert (
        join_messages(first, later)
        == join_messages(later, first)
        == MessageState(5, 2, Bounce(20, 0, "h1", "user_unknown"), Bounce(30, 1, "s2", "mailbox_full"), None)
    )


def test_join_keeps_the_address_either_side_knows():
    addressed = MessageState(4, 1, None, Bounce(10, 0, "s1", "refused"), None, "a@example.com")
    older = MessageState(4, 1, None, Bounce(10, 0, "s1", "refused"), None)  # written before the address was kept
    assert join_messages(addressed, older).address == join_messages(older, addressed).address == "a@example.com"


def test_replaying_twice_or_with_a_zombie_transaction_restores_the_same_state():
    committed = [
        [prepared("d", efs=True), mta("d", "m1", "RELAYED"), mta("d", "m2", "RELAYED")],
        [mta("d", "m1", "DELIVERED"), mta("d", "m2", "SOFT_BOUNCE", reason="mailbox_full")],
    ]
    log = checkpointed_changelog(committed)
    # A crashed instance processed one more event; its records became visible although it never committed.
    zombie = checkpointed_changelog([*committed, [mta("d", "m2", "DELIVERED", attempt=1)]])[len(log) :]

    clean, messy = MemoryStore(), MemoryStore()
    apply_changelog(clean, log, merge)
    apply_changelog(messy, log[:3], merge)
    touched = apply_changelog(messy, log + zombie, merge).touched  # the first records again, then the zombie's
    assert {records.delivery_of(key) for key in touched} == {"d", None}  # None: the partition's watermark
    assert messy.offsets()[CHANGELOG_OFFSET] == len(log) + len(zombie)  # the next record to read

    # The zombie's facts are facts of real input events that will be replayed; recomputing the counters
    # from the messages makes the delivery consistent, and replaying the event then changes nothing.
    for store in (clean, messy):
        processor = PartitionProcessor(StateView(store))
        processor.compute_stats("d", publish=False)
        processor.apply([mta("d", "m2", "DELIVERED", attempt=1, event_id="late")])
        counters = processor.delivery("d").counters
        assert (counters.sent, counters.failed, counters.pending) == (2, 0, 0)
        assert processor.recompute("d") == counters
    assert records.decode_message(messy.get(records.message_key("d", "m2"))).facts & 2  # DELIVERED was merged in


def test_a_rejected_confirmation_and_an_open_sharing_an_event_id_are_both_restored():
    refused = delivery_event("d", "CONFIRMED", at=10, actor="intern", actor_roles=[], event_id="x")
    opened = mta("d", "m", "OPEN", event_id="x")
    log = checkpointed_changelog([[prepared("d", efs=False), mta("d", "m", "RELAYED"), opened], [refused]])
    store = MemoryStore()
    touched = apply_changelog(store, log, merge).touched
    assert {records.delivery_of(key) for key in touched} - {None} == {"d"}
    processor = PartitionProcessor(StateView(store))
    assert processor.compute_stats("d", publish=False) is True  # the recount from the records finds both
    counters = processor.delivery("d").counters
    assert (counters.opens_total, counters.confirmations_rejected) == (1, 1)
    processor.apply([opened, refused])  # redelivered after the restore: counted already
    assert processor.delivery("d").counters == counters
