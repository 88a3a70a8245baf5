from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from consumer.ingest.formats import IdKeys, UnmappableRecord, make_format
from tests.ingest.formats.support import assert_contract, map_json, sample_lines, summary

D = "spring-sale-2026"
TEAM = "team-note-1"

EXPECTED_SAMPLES = [
    [("RELAYED", "msg-0011", None, None)],
    [("DELIVERED", "msg-0011", None, None)],
    [("OPEN", "msg-0011", None, None)],
    [("CLICK", "msg-0011", None, None)],
    [("HARD_BOUNCE", "msg-0012", "user_unknown", "gmail.no-such-account")],
    [("SOFT_BOUNCE", "msg-0013", "mailbox_full", "text.mailbox-full")],
    [("HARD_BOUNCE", "msg-0014", "denylisted", "ses.suppression-list")],
    [
        ("RELAYED", f"{TEAM}/lead@corp.example", None, None),
        ("RELAYED", f"{TEAM}/ops@corp.example", None, None),
        ("RELAYED", f"{TEAM}/gone@corp.example", None, None),
    ],
    [
        ("HARD_BOUNCE", f"{TEAM}/gone@corp.example", "user_unknown", "rfc5321.mailbox-unavailable"),
        ("SOFT_BOUNCE", f"{TEAM}/ops@corp.example", "unknown", "fallback"),
    ],
    [("COMPLAINT", "msg-0011", None, None)],
    [("HARD_BOUNCE", "msg-0014", "denylisted", "ses.suppressed")],
    [("SOFT_BOUNCE", "msg-0013", "mailbox_full", "text.mailbox-full")],
    [("HARD_BOUNCE", "msg-0015", "refused", "ses.reject")],
    [("HARD_BOUNCE", "msg-0016", "unknown", "ses.rendering-failure")],
    [],  # Subscription
    [("DELIVERED", "msg-0011", None, None)],  # the Delivery again, wrapped in an SNS notification
]


def test_samples_map_as_documented():
    ses = make_format("ses")
    lines = sample_lines("ses")
    assert len(lines) == len(EXPECTED_SAMPLES)
    results = []
    for line, expected in zip(lines, EXPECTED_SAMPLES, strict=True):
        mapped = ses.map(line)
        assert_contract(mapped)
        assert summary(mapped) == expected, line[:80]
        assert all(m.event["delivery_id"] == D for m in mapped)
        results.append(mapped)
    assert results[-1][0].event == results[1][0].event  # SNS-wrapped or not, the same event
    assert results[3][0].event["url"] == "https://shop.example/spring?utm_source=email&utm_campaign=spring-sale"


def mail(destination: list[str] | None = None, tags: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "timestamp": "2026-01-01T00:00:01.120Z",
        "source": "news@shop.example",
        "messageId": "0102019a1b2c3d4e-5f6a7b8c-000000",
        "destination": destination or ["ana@gmail.com"],
        "tags": {"ses:configuration-set": ["spring"], "delivery_id": [D], "message_id": ["msg-1"]}
        if tags is None
        else tags,
    }


def bounce(bounce_type: str, subtype: str, recipients: list[dict[str, Any]], **mail_args: Any) -> dict[str, Any]:
    return {
        "eventType": "Bounce",
        "mail": mail(**mail_args),
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": subtype,
            "bouncedRecipients": recipients,
            "timestamp": "2026-01-01T00:00:04.020Z",
            "feedbackId": "0102019a1b2c3e60-000000",
        },
    }


def recipient(address: str = "ana@gmail.com", status: str | None = None, diagnostic: str | None = None) -> dict:
    return {"emailAddress": address, "action": "failed", "status": status, "diagnosticCode": diagnostic}


def test_ses_s_bounce_type_decides_hard_or_soft_and_the_classifier_the_reason():
    full = recipient(status="5.2.2", diagnostic="smtp; 552 5.2.2 Mailbox full")
    (permanent,) = map_json("ses", bounce("Permanent", "General", [full]))
    (transient,) = map_json("ses", bounce("Transient", "General", [full]))
    unknown_user = recipient(status="5.1.1", diagnostic="smtp; 550 5.1.1 user unknown")
    (transient_hard,) = map_json("ses", bounce("Transient", "General", [unknown_user]))
    (undetermined,) = map_json("ses", bounce("Undetermined", "Undetermined", [unknown_user]))
    assert summary([permanent, transient, transient_hard, undetermined]) == [
        ("HARD_BOUNCE", "msg-1", "mailbox_full", "text.mailbox-full"),
        ("SOFT_BOUNCE", "msg-1", "mailbox_full", "text.mailbox-full"),
        ("SOFT_BOUNCE", "msg-1", "user_unknown", "text.user-unknown"),
        ("HARD_BOUNCE", "msg-1", "user_unknown", "text.user-unknown"),
    ]
    assert permanent.event["occurred_at"] == 1767225604020


def test_bounce_subtypes_are_hints():
    (no_email,) = map_json("ses", bounce("Permanent", "NoEmail", [recipient()]))
    (too_large,) = map_json("ses", bounce("Transient", "MessageTooLarge", [recipient()]))
    assert (no_email.event["reason"], too_large.event["reason"]) == ("user_unknown", "text_too_long")


def test_one_event_per_recipient_with_a_message_id_per_recipient():
    destination = ["a@corp.example", "B@Corp.example", "c@corp.example"]
    record = bounce(
        "Permanent", "General", [recipient("a@corp.example"), recipient("b@corp.example")], destination=destination
    )
    mapped = map_json("ses", record)
    assert [m.event["message_id"] for m in mapped] == ["msg-1/a@corp.example", "msg-1/b@corp.example"]
    assert len({m.event["event_id"] for m in mapped}) == 2
    send = map_json("ses", {"eventType": "Send", "mail": mail(destination), "send": {}})
    assert [m.event["message_id"] for m in send][:2] == ["msg-1/a@corp.example", "msg-1/b@corp.example"]
    assert [m.event["address"] for m in send] == destination


def test_opens_and_clicks_of_a_message_to_several_recipients_cannot_be_attributed():
    record = {
        "eventType": "Open",
        "mail": mail(["a@x.example", "b@x.example"]),
        "open": {"timestamp": "2026-01-01T08:00:00Z", "ipAddress": "192.0.2.1", "userAgent": "UA"},
    }
    with pytest.raises(UnmappableRecord) as caught:
        map_json("ses", record)
    assert caught.value.field == "mail.destination"


def test_the_message_id_falls_back_to_ses_s_and_tags_are_configurable():
    tags = {"run": ["r-1"], "rcpt": ["x-9"]}
    record = {"eventType": "Send", "mail": mail(tags=tags), "send": {}}
    (event,) = [m.event for m in map_json("ses", record, ids=IdKeys("run", "rcpt"))]
    assert (event["delivery_id"], event["message_id"]) == ("r-1", "x-9")
    (event,) = [m.event for m in map_json("ses", record, ids=IdKeys("run", "absent"))]
    assert event["message_id"] == "0102019a1b2c3d4e-5f6a7b8c-000000"
    record["mail"]["tags"]["run"] = "r-2"  # a plain string is accepted too
    assert map_json("ses", record, ids=IdKeys("run", "rcpt"))[0].event["delivery_id"] == "r-2"


def test_records_without_event_publishing_use_notification_type():
    record = bounce("Permanent", "General", [recipient(status="5.1.1")])
    record["notificationType"] = record.pop("eventType")
    assert summary(map_json("ses", record)) == [("HARD_BOUNCE", "msg-1", "user_unknown", "rfc3463.5.1.1")]


def test_a_delay_is_a_soft_bounce_at_most():
    record = {
        "eventType": "DeliveryDelay",
        "mail": mail(),
        "deliveryDelay": {
            "timestamp": "2026-01-01T00:30:05+02:00",
            "delayType": "Undetermined",
            "delayedRecipients": [recipient(status="5.1.1", diagnostic="smtp; 550 5.1.1 unknown")],
        },
    }
    (event,) = [m.event for m in map_json("ses", record)]
    assert (event["type"], event["reason"]) == ("SOFT_BOUNCE", "user_unknown")
    assert event["occurred_at"] == 1767220205000  # 22:30:05 UTC the day before: the offset is honoured


def test_complaints_that_are_not_spam_change_nothing():
    record = {
        "eventType": "Complaint",
        "mail": mail(),
        "complaint": {
            "complainedRecipients": [{"emailAddress": "ana@gmail.com"}],
            "feedbackId": "f",
            "timestamp": "2026-01-02T10:00:00",
            "complaintFeedbackType": "not-spam",
        },
    }
    assert map_json("ses", record) == []
    record["complaint"]["complaintFeedbackType"] = "abuse"
    (event,) = [m.event for m in map_json("ses", record)]
    assert (event["type"], event["occurred_at"]) == ("COMPLAINT", 1767348000000)  # no zone: UTC


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("eventType",), "Teleport", "eventType"),
        (("mail",), None, "mail"),
        (("mail", "tags", "delivery_id"), None, "mail.tags.delivery_id"),
        (("mail", "tags"), None, "mail.tags.delivery_id"),
        (("mail", "tags", "delivery_id"), [D, "other"], "mail.tags.delivery_id"),
        (("mail", "tags", "delivery_id"), [], "mail.tags.delivery_id"),
        (("mail", "tags", "delivery_id"), [7.5], "mail.tags.delivery_id"),
        (("mail", "destination"), [], "mail.destination"),
        (("mail", "destination"), "ana@gmail.com", "mail.destination"),
        (("mail", "messageId"), None, "mail.messageId"),
        (("bounce", "timestamp"), "2026-13-01T00:00:00Z", "bounce.timestamp"),
        (("bounce", "timestamp"), "1969-12-31T23:59:59Z", "bounce.timestamp"),
        (("bounce", "timestamp"), 1767225604, "bounce.timestamp"),
        (("bounce", "bouncedRecipients"), [], "bounce.bouncedRecipients"),
        (("bounce", "bouncedRecipients"), [None], "bounce.bouncedRecipients[0]"),
        (("bounce", "bouncedRecipients", 0, "emailAddress"), None, "bounce.bouncedRecipients[0].emailAddress"),
        (("bounce", "bouncedRecipients", 0, "status"), 511, "bounce.bouncedRecipients[0].status"),
    ],
)
def test_unmappable_records_name_the_field(path, value, field):
    record = bounce("Permanent", "General", [recipient(status="5.1.1")])
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(UnmappableRecord) as caught:
        map_json("ses", record)
    assert caught.value.field == field


def test_a_derived_message_id_must_still_fit():
    long_id = "m" * 250
    record = bounce(
        "Permanent",
        "General",
        [recipient("a@corp.example")],
        destination=["a@corp.example", "b@corp.example"],
        tags={"delivery_id": [D], "message_id": [long_id]},
    )
    with pytest.raises(UnmappableRecord) as caught:
        map_json("ses", record)
    assert caught.value.field == "message_id"


def test_a_broken_sns_envelope_is_unmappable():
    envelope = {"Type": "Notification", "MessageId": "x", "Message": "{not json"}
    with pytest.raises(UnmappableRecord) as caught:
        map_json("ses", envelope)
    assert caught.value.field == "Message"


def test_event_ids_are_deterministic_and_distinct():
    record = bounce("Permanent", "General", [recipient(status="5.1.1")])
    first = map_json("ses", record)[0].event["event_id"]
    assert map_json("ses", copy.deepcopy(record))[0].event["event_id"] == first
    other_feedback = copy.deepcopy(record)
    other_feedback["bounce"]["feedbackId"] = "another"
    delivered = {
        "eventType": "Delivery",
        "mail": mail(),
        "delivery": {"timestamp": "2026-01-01T00:00:04.020Z", "recipients": ["ana@gmail.com"]},
    }
    clicks = [
        {"eventType": "Click", "mail": mail(), "click": {"timestamp": "2026-01-01T08:00:00Z", "link": link}}
        for link in ("https://a.example", "https://b.example")
    ]
    ids = {first, map_json("ses", other_feedback)[0].event["event_id"]}
    ids |= {map_json("ses", r)[0].event["event_id"] for r in (delivered, *clicks)}
    assert len(ids) == 5


def test_the_wrapped_and_the_bare_record_give_the_same_ids():
    record = {"eventType": "Send", "mail": mail(), "send": {}}
    envelope = {"Type": "Notification", "Message": json.dumps(record)}
    assert map_json("ses", envelope) == map_json("ses", record)
