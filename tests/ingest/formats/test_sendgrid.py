from __future__ import annotations

import copy
from typing import Any

import pytest

from consumer.ingest.formats import IdKeys, UnmappableRecord, make_format
from tests.ingest.formats.support import assert_contract, map_json, sample_lines, summary

D = "spring-sale-2026"

EXPECTED_SAMPLES = [
    [
        ("RELAYED", "msg-0021", None, None),
        ("SOFT_BOUNCE", "msg-0021", "refused", "yahoo.deferred"),
        ("DELIVERED", "msg-0021", None, None),
        ("OPEN", "msg-0021", None, None),
        ("CLICK", "msg-0021", None, None),
    ],
    [
        ("HARD_BOUNCE", "msg-0022", "user_unknown", "gmail.no-such-account"),
        ("SOFT_BOUNCE", "msg-0023", "refused", "text.block-list"),
        ("HARD_BOUNCE", "msg-0024", "denylisted", "sendgrid.suppressed"),
        ("COMPLAINT", "msg-0021", None, None),
        # unsubscribe and group_unsubscribe: no status
    ],
    [("HARD_BOUNCE", "msg-0025", "user_unknown", "sendgrid.invalid-address")],
]


def test_samples_map_as_documented():
    sendgrid = make_format("sendgrid")
    lines = sample_lines("sendgrid")
    assert len(lines) == len(EXPECTED_SAMPLES)
    for line, expected in zip(lines, EXPECTED_SAMPLES, strict=True):
        mapped = sendgrid.map(line)
        assert_contract(mapped)
        assert summary(mapped) == expected, line[:80]
        assert all(m.event["delivery_id"] == D for m in mapped)


def sg(event: str, **fields: Any) -> dict[str, Any]:
    base = {
        "email": "ana@gmail.com",
        "timestamp": 1767225601,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": event,
        "category": "spring-sale",
        "sg_event_id": f"evt-{event}",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "delivery_id": D,
        "message_id": "msg-1",
    }
    base.update(fields)
    return base


def test_a_record_is_an_array_of_events_and_a_single_event_is_accepted():
    batch = [sg("processed"), sg("delivered", response="250 OK"), sg("open", sg_machine_open=False)]
    assert [m.event["type"] for m in map_json("sendgrid", batch)] == ["RELAYED", "DELIVERED", "OPEN"]
    assert [m.event["type"] for m in map_json("sendgrid", sg("spamreport"))] == ["COMPLAINT"]
    assert map_json("sendgrid", []) == []


def test_the_event_carries_the_payload_s_facts():
    (click,) = [m.event for m in map_json("sendgrid", [sg("click", url="https://shop.example/?a=1", timestamp=17)])]
    assert (click["type"], click["url"], click["occurred_at"], click["address"]) == (
        "CLICK",
        "https://shop.example/?a=1",
        17000,
        "ana@gmail.com",
    )
    (deferred,) = [m.event for m in map_json("sendgrid", [sg("deferred", response="451 4.3.0 later", attempt="5")])]
    # SendGrid's fifth attempt is the contract's attempt 4: it counts from 1, the contract from 0.
    assert (deferred["type"], deferred["attempt"], deferred["reason"]) == ("SOFT_BOUNCE", 4, "unreachable")
    (first,) = [m.event for m in map_json("sendgrid", [sg("deferred", response="451 4.3.0 later", attempt="1")])]
    assert first["attempt"] == 0


def test_bounce_types_decide_hard_or_soft():
    bounce = sg("bounce", type="bounce", status="5.2.2", reason="552 5.2.2 Mailbox full")
    blocked = sg("bounce", type="blocked", status="5.1.1", reason="550 5.1.1 user unknown")
    untyped = sg("bounce", status="5.0.0", reason="550 5.0.0 rejected")
    assert summary(map_json("sendgrid", [bounce, blocked, untyped])) == [
        ("HARD_BOUNCE", "msg-1", "mailbox_full", "text.mailbox-full"),
        ("SOFT_BOUNCE", "msg-1", "user_unknown", "text.user-unknown"),
        ("HARD_BOUNCE", "msg-1", "unknown", "class.5"),
    ]


def test_dropped_messages_are_hard_bounces_with_the_drop_reason():
    reasons = {
        "Bounced Address": "denylisted",
        "Unsubscribed Address": "denylisted",
        "Spam Reporting Address": "denylisted",
        "Invalid": "user_unknown",
        "Spam Content": "refused",
        "Recipient List over Package Quota": "unknown",
        None: "unknown",
    }
    for reason, expected in reasons.items():
        (event,) = [m.event for m in map_json("sendgrid", [sg("dropped", reason=reason)])]
        assert (event["type"], event["reason"]) == ("HARD_BOUNCE", expected), reason


def test_subscription_and_account_events_carry_no_status():
    events = [sg("unsubscribe"), sg("group_unsubscribe", asm_group_id=1), sg("group_resubscribe", asm_group_id=1)]
    events.append({"event": "account_status_change", "timestamp": 1767225601, "type": "compliance_suspend"})
    assert map_json("sendgrid", events) == []


def test_ids_come_from_custom_args_with_sendgrid_s_message_id_as_fallback():
    event = sg("delivered", run="r-7", recipient_key="k-9")
    (mapped,) = map_json("sendgrid", [event], ids=IdKeys("run", "recipient_key"))
    assert (mapped.event["delivery_id"], mapped.event["message_id"]) == ("r-7", "k-9")
    del event["recipient_key"]
    (mapped,) = map_json("sendgrid", [event], ids=IdKeys("run", "recipient_key"))
    assert mapped.event["message_id"] == "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event": "teleported"}, "[1].event"),
        ({"event": None}, "[1].event"),
        ({"delivery_id": None}, "[1].delivery_id"),
        ({"delivery_id": {"id": "x"}}, "[1].delivery_id"),
        ({"message_id": None, "sg_message_id": None}, "[1].message_id"),
        ({"timestamp": "1767225601"}, "[1].timestamp"),
        ({"timestamp": None}, "[1].timestamp"),
        ({"timestamp": 1e300}, "[1].timestamp"),
        ({"email": 42}, "[1].email"),
        ({"attempt": "many"}, "[1].attempt"),
        ({"sg_event_id": ["x"]}, "[1].sg_event_id"),
    ],
)
def test_one_unmappable_event_makes_the_record_unmappable_and_is_named(change, field):
    bad = sg("deferred", response="421 later")
    bad.update(change)
    with pytest.raises(UnmappableRecord) as caught:
        map_json("sendgrid", [sg("processed"), bad])
    assert caught.value.field == field


def test_a_record_that_is_no_event_is_unmappable():
    for record, field in (([1, 2], "[0]"), ("text", "[0]"), ([[]], "[0]")):
        with pytest.raises(UnmappableRecord) as caught:
            map_json("sendgrid", record)
        assert caught.value.field == field


def test_click_urls_are_required_and_long_ones_are_cut():
    with pytest.raises(UnmappableRecord, match="url"):
        map_json("sendgrid", [sg("click")])
    (event,) = [m.event for m in map_json("sendgrid", [sg("click", url="https://x.example/?" + "a" * 10_000)])]
    assert len(event["url"]) == 8_192


def test_event_ids_are_deterministic_and_distinct():
    events = [sg("processed"), sg("delivered"), sg("open")]
    ids = [m.event["event_id"] for m in map_json("sendgrid", events)]
    assert ids == [m.event["event_id"] for m in map_json("sendgrid", copy.deepcopy(events))]
    assert len(set(ids)) == 3
    # Without sg_event_id, the content identifies the event.
    old = [{k: v for k, v in e.items() if k != "sg_event_id"} for e in events]
    old_ids = [m.event["event_id"] for m in map_json("sendgrid", old)]
    assert old_ids == [m.event["event_id"] for m in map_json("sendgrid", copy.deepcopy(old))]
    assert len(set(old_ids) | set(ids)) == 6
