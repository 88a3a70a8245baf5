from __future__ import annotations

from typing import Any

import pytest

from consumer.codec.errors import InvalidEvent
from consumer.ingest.classifier import Classification, default_classifier
from consumer.ingest.formats import FORMATS, IdKeys, Mapped, MapperBug, UnmappableRecord, make_format
from consumer.ingest.formats.common import JsonFormat, Node, failure_type, parse_json, platform_id


def test_the_registry():
    assert FORMATS == ("kumomta", "ses", "sendgrid")
    for name in FORMATS:
        assert make_format(name).name == name
    with pytest.raises(ValueError, match="unknown format 'postfix'"):
        make_format("postfix")


def test_id_keys_must_name_something():
    assert IdKeys() == IdKeys("delivery_id", "message_id")
    with pytest.raises(ValueError):
        IdKeys(delivery_id="")


def test_unmappable_records_are_invalid_events_with_their_own_code():
    error = UnmappableRecord("mail.tags.delivery_id", "missing")
    assert isinstance(error, InvalidEvent)
    assert (error.code, error.field, str(error)) == (
        "unmappable",
        "mail.tags.delivery_id",
        "mail.tags.delivery_id: missing",
    )


class Broken(JsonFormat):
    name = "broken"

    def map_record(self, record: Any) -> list[Mapped]:
        return [record["missing"]]


def test_a_mapper_s_own_exception_becomes_a_dead_letter_marked_as_a_bug():
    with pytest.raises(MapperBug) as caught:
        Broken(IdKeys(), default_classifier()).map(b"{}")
    assert isinstance(caught.value, UnmappableRecord)
    assert isinstance(caught.value.__cause__, KeyError)
    assert caught.value.field == "record"


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (None, "empty record"),
        (b"", "empty record"),
        (b"{", "not UTF-8 JSON"),
        (b"\xc3\x28", "not UTF-8 JSON"),
        (b"[" * 50_000, "nested too deeply"),
        (b"[NaN]", "NaN is not a JSON number"),
        (b"9" * 5_000, "not UTF-8 JSON"),
        (b" " * (4 * 1024 * 1024 + 1), "more than"),
    ],
)
def test_parse_json_refuses_what_is_not_a_reasonable_json_record(value, detail):
    with pytest.raises(UnmappableRecord, match=detail) as caught:
        parse_json(value)
    assert caught.value.field == "value"


def test_timestamps():
    node = Node({"s": 1767225601.5, "iso": "2026-01-01T00:00:01.5Z", "naive": "2026-01-01T00:00:01", "big": 1e999})
    assert node.epoch_seconds("s") == 1767225601500
    assert node.iso_time("iso") == 1767225601500
    assert node.iso_time("naive") == 1767225601000
    with pytest.raises(UnmappableRecord, match="between 1970 and 3000"):
        node.epoch_seconds("big")


def test_platform_ids():
    assert platform_id("m-1", "x") == "m-1"
    assert platform_id(42, "x") == "42"
    for bad in ("", "   ", "a\x00", "\udcff", "x" * 257, 1.5, True, None, 10**30, ["a"]):
        with pytest.raises(UnmappableRecord):
            platform_id(bad, "x")


@pytest.mark.parametrize(
    ("classified", "source", "expected"),
    [
        ("hard", None, "HARD_BOUNCE"),
        ("soft", None, "SOFT_BOUNCE"),
        ("ignored", None, "IGNORED"),
        ("hard", "soft", "SOFT_BOUNCE"),
        ("soft", "soft", "SOFT_BOUNCE"),
        ("ignored", "soft", "IGNORED"),
        ("hard", "hard", "HARD_BOUNCE"),
        ("soft", "hard", "HARD_BOUNCE"),
        ("ignored", "hard", "HARD_BOUNCE"),
    ],
)
def test_the_source_s_verdict_and_the_classification(classified, source, expected):
    assert failure_type(Classification(classified, "unknown", "r"), source) == expected
