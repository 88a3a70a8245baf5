"""The ingest benchmark's renderer and correctness check on a tiny workload, without a broker. No speed is asserted."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bench import ingest, sources
from consumer.cli.workload import WorkloadSpec, generate
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import MTA_EVENT
from consumer.ingest.formats import FORMATS, make_format

EVENTS = generate(WorkloadSpec.ending_now(deliveries=2, messages=400, seed=3)).mta_events
CODEC = AvroCodec.named(MTA_EVENT)


def mapped(fmt: str, rendered: sources.Rendered) -> list[dict]:
    mapper = make_format(fmt)
    return [item.event for _, value in rendered.records for item in mapper.map(value)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_rendered_record_maps_back_to_the_expected_events(fmt):
    rendered = sources.render(fmt, EVENTS)
    events = mapped(fmt, rendered)
    assert ingest.check(rendered.expected, [CODEC.encode(e) for e in events]) == []
    assert ingest.map_speed(fmt, rendered)["correct"]
    # The failures' reasons survive too: the rendered replies mean what the workload decided.
    carried = [(e, sources.expected_type(fmt, e["type"])) for e in EVENTS]
    wanted = Counter((e["message_id"], kind, e["reason"]) for e, kind in carried if kind and e["reason"])
    assert Counter((e["message_id"], e["type"], e["reason"]) for e in events if e["reason"]) == wanted


def test_each_format_carries_what_its_vendor_reports():
    kinds = Counter(e["type"] for e in EVENTS)
    assert {"OPEN", "CLICK", "HARD_BOUNCE", "SOFT_BOUNCE", "RETRIES_EXHAUSTED"} <= set(kinds)
    kumo, ses, sendgrid = (sources.render(fmt, EVENTS) for fmt in ("kumomta", "ses", "sendgrid"))
    assert kumo.events == len(EVENTS) - kinds["OPEN"] - kinds["CLICK"] == len(kumo.records)
    assert ses.events == len(EVENTS) == len(ses.records)
    assert sum(t == "RETRIES_EXHAUSTED" for _, _, t in ses.expected.elements()) == 0  # SES says it as a soft bounce
    posts = [json.loads(value) for _, value in sendgrid.records]
    assert sendgrid.events == len(EVENTS) == sum(len(post) for post in posts)
    assert {len(post) for post in posts[:-1]} == {sources.SENDGRID_BATCH}
    assert all(key == post[0]["delivery_id"].encode() for (key, _), post in zip(sendgrid.records, posts, strict=True))


def test_the_check_finds_a_lost_an_extra_and_a_foreign_record():
    rendered = sources.render("ses", EVENTS)
    values = [CODEC.encode(e) for e in mapped("ses", rendered)]
    lost, extra = ingest.check(rendered.expected, values[1:]), ingest.check(rendered.expected, [*values, values[0]])
    assert len(lost) == 1 and lost[0].startswith("1 events missing")
    assert len(extra) == 1 and extra[0].startswith("1 events extra")
    assert ingest.check(rendered.expected, [*values, b"{}"]) == ["1 records do not decode as MtaEvent"]


def test_the_report_reads_a_result_with_a_failed_run():
    failed = {"seconds": 30.0, "records_per_s": None, "events_per_s": None, "correct": False}
    run = {"format": "ses", "records": 10, "events": 10, "mapping": {"events_per_s": 5.0}, "limit": failed}
    run |= {"ingest": failed, "of_limit": None, "correct": False}
    lines = ingest.markdown_lines({"classify_cold_per_s": 1, "formats": [run]})
    assert "| ses | 10 | 10 | 5 | - | - | - | - | 30.00 | 0.00 / 0.00 | - | NO |" in lines
