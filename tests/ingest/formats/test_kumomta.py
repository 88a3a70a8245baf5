from __future__ import annotations

import copy
from typing import Any

import pytest

from consumer.ingest.formats import IdKeys, UnmappableRecord, make_format
from tests.ingest.formats.support import assert_contract, map_json, sample_lines, summary

D = "spring-sale-2026"

EXPECTED_SAMPLES = [
    [("RELAYED", "msg-0001", None, None)],
    [("SOFT_BOUNCE", "msg-0001", "refused", "gmail.unsolicited")],
    [("DELIVERED", "msg-0001", None, None)],
    [("HARD_BOUNCE", "msg-0002", "user_unknown", "gmail.no-such-account")],
    [("SOFT_BOUNCE", "msg-0003", "mailbox_full", "outlook.quota")],
    [("IGNORED", "msg-0004", "error_ignored", "benign.greylisting")],
    [("RETRIES_EXHAUSTED", "msg-0004", "unreachable", "rfc3463.x.4")],
    [("HARD_BOUNCE", "msg-0005", "user_unknown", "text.user-unknown")],
    [("COMPLAINT", "msg-0006", None, None)],
    [("SOFT_BOUNCE", "msg-0007", "refused", "kumomta.admin-bounce")],
    [],  # Rejection: an inbound SMTP rejection
    [],  # Delay: why a message waits in the scheduled queue
    [("DELIVERED", "9f8dc0716e5c11ef8f0250ebf67f93bd", None, None)],  # no message id in meta: the spool id
]


def test_samples_map_as_documented():
    kumo = make_format("kumomta")
    lines = sample_lines("kumomta")
    assert len(lines) == len(EXPECTED_SAMPLES)
    for line, expected in zip(lines, EXPECTED_SAMPLES, strict=True):
        mapped = kumo.map(line)
        assert_contract(mapped)
        assert summary(mapped) == expected, line[:80]
        assert all(m.event["delivery_id"] == D for m in mapped)


def record(record_type: str = "Delivery", **fields: Any) -> dict[str, Any]:
    base = {
        "type": record_type,
        "id": "1d98076abbbc11ed940250ebf67f93bd",
        "sender": "bounces@news.shop.example",
        "recipient": "ana.lima@gmail.com",
        "queue": "spring-sale@shop.example",
        "site": "",
        "size": 1047,
        "response": {"code": 250, "enhanced_code": {"class": 2, "subject": 0, "detail": 0}, "content": "OK"},
        "timestamp": 1767225601,
        "created": 1767225600,
        "num_attempts": 0,
        "bounce_classification": "Uncategorized",
        "meta": {"delivery_id": D, "message_id": "msg-1"},
        "headers": {},
    }
    base.update(fields)
    return base


def response(code: int, enhanced: tuple[int, int, int] | None, content: str) -> dict[str, Any]:
    parts = None if enhanced is None else dict(zip(("class", "subject", "detail"), enhanced, strict=True))
    return {"code": code, "enhanced_code": parts, "content": content, "command": "RCPT TO"}


def one(rec: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    (mapped,) = map_json("kumomta", rec, **kwargs)
    return mapped.event


def test_the_event_carries_the_record_s_facts():
    event = one(record("TransientFailure", num_attempts=3, response=response(451, (4, 3, 0), "try later")))
    assert event["type"] == "SOFT_BOUNCE"
    assert event["occurred_at"] == 1767225601000
    assert event["attempt"] == 3
    assert event["address"] == "ana.lima@gmail.com"
    assert event["reason"] == "unreachable"
    assert event["event_id"].startswith("kumo-")


def test_a_transient_failure_is_never_hard_but_can_be_ignored():
    hard_text = response(550, (5, 1, 1), "user unknown")  # a 5xx during retries: KumoMTA retries anyway
    assert one(record("TransientFailure", response=hard_text))["type"] == "SOFT_BOUNCE"
    greylisted = response(450, (4, 2, 0), "Greylisted, see http://postgrey.schweikert.ch/help/x.html")
    assert one(record("TransientFailure", response=greylisted))["type"] == "IGNORED"


@pytest.mark.parametrize("record_type", ["Bounce", "OOB", "AdminBounce"])
def test_final_failures_are_classified(record_type):
    hard = response(550, (5, 1, 1), "<x@example.org>... User unknown")
    soft = response(552, (5, 2, 2), "Mailbox full")
    benign = response(250, None, "Out of office until Monday")
    assert one(record(record_type, response=hard))["type"] == "HARD_BOUNCE"
    assert one(record(record_type, response=soft))["type"] == "SOFT_BOUNCE"
    assert one(record(record_type, response=benign))["type"] == "IGNORED"


def test_kumomta_s_bounce_classification_is_a_hint():
    vague = response(550, None, "rejected")
    assert one(record("Bounce", response=vague))["reason"] == "unknown"
    assert one(record("Bounce", response=vague, bounce_classification="InactiveMailbox"))["reason"] == (
        "inactive_mailbox"
    )


def test_an_expiration_exhausts_retries_whatever_the_response():
    event = one(record("Expiration", response=response(551, (5, 4, 7), "Next delivery time would exceed expiry")))
    assert (event["type"], event["reason"]) == ("RETRIES_EXHAUSTED", "unreachable")
    assert one(record("Expiration", response=None))["reason"] == "unknown"


def test_feedback_reports_are_complaints_unless_they_are_not_spam():
    report = {"feedback_type": "abuse", "supplemental_trace": {"recipient": "who@yahoo.com", "message_id": "m-9"}}
    rec = record("Feedback", recipient="fbl@shop.example", meta={"delivery_id": D}, feedback_report=report)
    event = one(rec)
    assert (event["type"], event["message_id"], event["address"]) == ("COMPLAINT", "m-9", "who@yahoo.com")
    for feedback_type in ("not-spam", "auth-failure", "Not-Spam"):
        rec["feedback_report"]["feedback_type"] = feedback_type
        assert map_json("kumomta", rec) == []


def test_feedback_ids_can_come_from_the_decoded_trace_header_alone():
    report = {"feedback_type": "abuse", "supplemental_trace": {"recipient": "a@b.example", "delivery_id": D}}
    event = one(record("Feedback", meta={}, feedback_report=report))
    assert (event["delivery_id"], event["message_id"]) == (D, "1d98076abbbc11ed940250ebf67f93bd")


def test_ids_come_from_configurable_meta_keys():
    rec = record(meta={"campaign_run": "run-7", "recipient_key": 12345})
    event = one(rec, ids=IdKeys(delivery_id="campaign_run", message_id="recipient_key"))
    assert (event["delivery_id"], event["message_id"]) == ("run-7", "12345")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"meta": {"message_id": "m"}}, "meta.delivery_id"),
        ({"meta": None}, "meta.delivery_id"),
        ({"meta": "oops"}, "meta"),
        ({"meta": {"delivery_id": ""}}, "meta.delivery_id"),
        ({"meta": {"delivery_id": "d" * 257}}, "meta.delivery_id"),
        ({"meta": {"delivery_id": "a\x00b"}}, "meta.delivery_id"),
        ({"meta": {"delivery_id": "\ud800"}}, "meta.delivery_id"),
        ({"meta": {"delivery_id": True}}, "meta.delivery_id"),
        ({"type": "Teleported"}, "type"),
        ({"type": None}, "type"),
        ({"id": None}, "id"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": -1}, "timestamp"),
        ({"timestamp": 10**20}, "timestamp"),
        ({"num_attempts": -1}, "num_attempts"),
        ({"num_attempts": 1.5}, "num_attempts"),
        ({"recipient": ["a@b.example"]}, "recipient"),
        ({"recipient": "x" * 3000}, "recipient"),
    ],
)
def test_unmappable_records_name_the_field(change, field):
    rec = record()
    rec.update(change)
    with pytest.raises(UnmappableRecord) as caught:
        map_json("kumomta", rec)
    assert caught.value.field == field
    assert caught.value.code == "unmappable"


def test_bad_response_fields_name_the_field():
    rec = record("Bounce", response={"code": "5xx", "content": "x"})
    with pytest.raises(UnmappableRecord, match=r"response\.code"):
        map_json("kumomta", rec)
    rec = record("Bounce", response={"code": 550, "enhanced_code": {"class": "five", "subject": 1, "detail": 1}})
    with pytest.raises(UnmappableRecord, match=r"response\.enhanced_code\.class"):
        map_json("kumomta", rec)


def test_optional_fields_may_be_missing_or_null():
    rec = record("Bounce", response=None, bounce_classification=None, num_attempts=None, recipient=None)
    event = one(rec)
    assert (event["type"], event["reason"], event["attempt"], event["address"]) == ("SOFT_BOUNCE", "unknown", 0, None)
    minimal = {"type": "Reception", "id": "x1", "timestamp": 1767225601.25, "meta": {"delivery_id": D}}
    event = one(minimal)
    assert (event["message_id"], event["occurred_at"]) == ("x1", 1767225601250)


def test_event_ids_are_deterministic_and_distinct():
    first = record("TransientFailure", num_attempts=1)
    again = copy.deepcopy(first)
    second_attempt = record("TransientFailure", num_attempts=2)
    later = record("TransientFailure", num_attempts=1, timestamp=1767225602)
    delivered = record("Delivery", num_attempts=1)
    ids = [one(r)["event_id"] for r in (first, again, second_attempt, later, delivered)]
    assert ids[0] == ids[1]
    assert len(set(ids)) == 4
