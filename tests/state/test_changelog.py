"""Generic changelog records: the input offsets a change came from, and restore's check against the committed ones."""

from __future__ import annotations

from consumer.state.changelog import (
    CHANGELOG_OFFSET,
    ChangelogRecord,
    apply_changelog,
    changelog_position,
    origin_of,
    stamp,
    was_committed,
)
from consumer.state.memory import MemoryStore


def test_a_stamp_reads_back_as_the_offsets_it_was_made_of():
    assert origin_of(stamp({"mta.events": 41, "deliveries": 7})) == {"mta.events": 41, "deliveries": 7}
    assert origin_of([("other", b"x")]) is None and origin_of(None) is None  # written before records were stamped


def test_a_record_counts_as_committed_only_when_the_group_is_at_or_past_every_offset_it_stamped():
    committed = {"mta.events": 40, "deliveries": 7}
    assert was_committed({"mta.events": 40}, committed)
    assert was_committed({}, committed)  # a checkpoint that consumed nothing (the clock moved): nothing to check
    assert was_committed(None, committed)  # unstamped: as before, the merge alone keeps it safe
    assert not was_committed({"mta.events": 41, "deliveries": 7}, committed)
    assert not was_committed({"sendtrack.control": 1}, committed)  # never committed at all


def test_restore_skips_the_records_of_a_checkpoint_that_never_committed():
    first, uncommitted = {"in": 10}, {"in": 20}
    log = [
        ChangelogRecord(b"k", b"v1", 0, first),
        ChangelogRecord(b"k", b"v2", 1, uncommitted),  # produced, then the commit failed (at-least-once)
        ChangelogRecord(b"j", b"x", 2, uncommitted),
        ChangelogRecord(b"old", b"o", 3),  # unstamped, from before stamping
    ]
    store = MemoryStore()
    applied = apply_changelog(store, log, committed={"in": 10})
    assert (store.get(b"k"), store.get(b"j"), store.get(b"old")) == (b"v1", None, b"o")
    assert applied.skipped == 2 and applied.touched == {b"k", b"old"}
    assert store.offsets()[CHANGELOG_OFFSET] == 4  # past the skipped records too: they stay skipped

    later = MemoryStore()  # once the group committed past them (the redo committed), they are applied
    apply_changelog(later, log, committed={"in": 20})
    assert (later.get(b"k"), later.get(b"j")) == (b"v2", b"x")


def test_a_store_written_before_the_position_was_renamed_restores_from_where_it_was():
    assert changelog_position({"changelog": 12, "mta.events": 40}, -2) == 12
    assert changelog_position({"@changelog": 15, "changelog": 12}, -2) == 15  # a topic may be named "changelog"
    assert changelog_position({"mta.events": 40}, -2) == -2
