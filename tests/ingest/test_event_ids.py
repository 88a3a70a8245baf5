from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.ingest.event_ids import event_id

parts = st.lists(st.one_of(st.none(), st.integers(), st.text(st.characters(exclude_categories=()))), max_size=5)


def test_ids_are_short_and_name_their_format():
    value = event_id("ses", "0102019a", "Bounce", "a@b.example", 1767225604020)
    assert value.startswith("ses-")
    assert len(value) == len("ses-") + 32
    assert value == event_id("ses", "0102019a", "Bounce", "a@b.example", 1767225604020)


def test_parts_do_not_run_into_each_other():
    assert event_id("x", "ab", "c") != event_id("x", "a", "bc")
    assert event_id("x", None) != event_id("x", "") != event_id("x", "\x00")
    assert event_id("x", "a") != event_id("x", "a", None)


@given(parts, parts)
def test_different_identities_give_different_ids(a, b):
    assert (event_id("p", *a) == event_id("p", *b)) == ([_norm(x) for x in a] == [_norm(x) for x in b])


def _norm(part):
    return None if part is None else str(part)  # an int and its decimal string are the same identity part
