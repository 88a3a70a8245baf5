"""The send of tests/ingest/sends.py through each source format and the core, without Kafka: every format leads to
the KPIs of the native events, a redelivered source record changes nothing, and the KPIs are the hand-worked ones."""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import Any

import pytest

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT
from consumer.codec.validation import check_event
from consumer.core.events import MTA_EVENT_TYPES
from consumer.core.processor import PartitionProcessor
from consumer.delivery.view import StateView
from consumer.ingest.formats import FORMATS, Mapped, make_format
from consumer.state.memory import MemoryStore
from tests.ingest import sends
from tests.ingest.formats.support import assert_contract

Event = dict[str, Any]
NEWS, PROMO = sends.NEWS_ID, sends.PROMO_ID
VALIDITY_OVER_MS = max(d.validity_end for d in sends.SEND.deliveries) * 1000
# (the service's EFS default, validity periods over). The newsletter's PREPARED turns EFS on and the promotion's
# leaves it to the default, so every mode has a delivery with EFS and, with the default off, one without.
MODES = {
    "efs-default-off": (False, False),
    "efs-default-on": (True, False),
    "efs-default-off-validity-over": (False, True),
    "efs-default-on-validity-over": (True, True),
}
# The event types whose attempt each format carries (SendGrid only on deferrals, SES never).
ATTEMPTS = {
    "kumomta": frozenset(MTA_EVENT_TYPES),
    "sendgrid": frozenset({"SOFT_BOUNCE", "IGNORED"}),
    "ses": frozenset(),
}


def kpis(events: list[Event], efs_default: bool, validity_over: bool) -> dict[str, dict[str, Any]]:
    """Apply the events in one batch; each delivery's KPI record."""
    processor = PartitionProcessor(StateView(MemoryStore()), efs_default=efs_default)
    processor.apply(events)
    if validity_over:
        processor.advance_clock(VALIDITY_OVER_MS)
    return {kpi["delivery_id"]: kpi for kpi in processor.take_output().kpis}


@cache
def mapped(format_name: str) -> tuple[Mapped, ...]:
    fmt = make_format(format_name)
    return tuple(item for record in sends.source_records(format_name) for item in fmt.map(record))


def via(format_name: str, mta_events: list[Event] | None = None) -> list[Event]:
    """What the core sees when the MTA is this vendor's: deliveries, mapped events, the platform's tracking."""
    if mta_events is None:
        mta_events = [item.event for item in mapped(format_name)]
    return [*sends.delivery_events(), *mta_events, *sends.tracking_events(format_name)]


def native() -> list[Event]:
    return [*sends.delivery_events(), *sends.native_events()]


def story(events: list[Event], attempts: frozenset[str] = ATTEMPTS["kumomta"]) -> Counter[tuple[Any, ...]]:
    """Every event but its id; attempts only for the types in `attempts` (0 for the others)."""
    return Counter(
        (
            e["delivery_id"],
            e["message_id"],
            e["type"],
            e["occurred_at"],
            e["attempt"] if e["type"] in attempts else 0,
            e["reason"],
            e["url"],
            e["address"],
        )
        for e in events
    )


def test_native_and_delivery_events_meet_the_contract():
    for schema, events in ((MTA_EVENT, sends.native_events()), (DELIVERY_EVENT, sends.delivery_events())):
        codec = AvroCodec.named(schema)
        for event in events:
            check_event(event, event["delivery_id"].encode())
            assert codec.decode(codec.encode(event)) == event
    ids = [e["event_id"] for e in native()]
    assert len(ids) == len(set(ids))


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format"):
        sends.source_records("postfix")


@pytest.mark.parametrize("format_name", FORMATS)
def test_every_record_maps_to_contract_events(format_name: str):
    fmt = make_format(format_name)
    for record in sends.source_records(format_name):
        items = fmt.map(record)
        assert items, record[:120]  # every record of the send says something about a message
        assert_contract(items)
    ids = [item.event["event_id"] for item in mapped(format_name)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("format_name", FORMATS)
def test_each_format_tells_the_native_story(format_name: str):
    """Same messages, types, times, reasons, URLs and addresses; attempts where the format carries them."""
    assert story(via(format_name)[len(sends.delivery_events()) :]) == story(
        sends.native_events(), ATTEMPTS[format_name]
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("format_name", FORMATS)
def test_each_format_gives_the_native_kpis(format_name: str, mode: str):
    efs_default, validity_over = MODES[mode]
    expected = kpis(native(), efs_default, validity_over)
    assert set(expected) == {NEWS, PROMO}
    assert kpis(via(format_name), efs_default, validity_over) == expected


@pytest.mark.parametrize("format_name", FORMATS)
def test_a_redelivered_record_changes_nothing(format_name: str):
    fmt = make_format(format_name)
    records = sends.source_records(format_name)
    again = [fmt.map(record) for record in records]
    assert [m for items in again for m in items] == list(mapped(format_name))  # same events, same ids
    replayed = [item.event for items in (*again, *again) for item in items]  # the whole stream, then again
    for efs_default, validity_over in MODES.values():
        assert kpis(via(format_name, replayed), efs_default, validity_over) == kpis(
            via(format_name), efs_default, validity_over
        )


# Worked out by hand from the stories in sends.SEND (validity periods running).
# Newsletter, EFS on by its PREPARED: 18 of 20 relayed.
#   sent 14: nl-0001 (opened twice, clicked), nl-0002 (deferred, then delivered; opened), nl-0005 (greylisted,
#            then delivered), nl-0007 (clicked only: a click proves the open), nl-0008 (opened, complained),
#            nl-0010..nl-0018 (9; nl-0010 and nl-0011 opened)
#   failed 3: nl-0003 and nl-0006 user_unknown (hard), nl-0004 mailbox_full (deferred: failed at once with EFS)
#   pending 1: nl-0009 (relayed only)
#   opens: unique 6 (0001, 0002, 0007, 0008, 0010, 0011), total 6 (0001 twice, 0002, 0008, 0010, 0011)
#   clicks 2 (0001, 0007), unique and total; complaints 1 (0008); last event: nl-0001's second open
NEWSLETTER_KPI = {
    "delivery_id": NEWS,
    "state": "SENDING",
    "efs": True,
    "to_deliver": 20,
    "processed": 18,
    "sent": 14,
    "failed": 3,
    "pending": 1,
    "delivered_pct": 100.0 * 14 / 18,
    "bounces_errors_pct": 100.0 * 3 / 18,
    "opens_unique": 6,
    "clicks_unique": 2,
    "opens_total": 6,
    "clicks_total": 2,
    "complaints": 1,
    "failures_by_reason": {"mailbox_full": 1, "user_unknown": 2},
    "open_rate_pct": 100.0 * 6 / 14,
    "click_through_rate_pct": 100.0 * 2 / 14,
    "progress_pct": 90.0,
    "confirmations_rejected": 0,
    "final": False,
    "archived": False,
    "version": 1,
    "updated_at": (sends.T_NEWS + 20_000) * 1000,
}
# Promotion, EFS off (the service default): 12 of 12 relayed.
#   sent 11: all but pr-0004 (account_disabled, hard); pr-0003 (deferred twice) and pr-0007 (relayed only) count
#            as sent until the validity end
#   opens: unique 3 (pr-0001, pr-0005 by its clicks, pr-0008), total 2 (pr-0001, pr-0008)
#   clicks: unique 1, total 2 (pr-0005, two links); complaints 1 (pr-0006, also the last event)
PROMO_KPI = {
    "delivery_id": PROMO,
    "state": "SENDING",
    "efs": False,
    "to_deliver": 12,
    "processed": 12,
    "sent": 11,
    "failed": 1,
    "pending": 0,
    "delivered_pct": 100.0 * 11 / 12,
    "bounces_errors_pct": 100.0 * 1 / 12,
    "opens_unique": 3,
    "clicks_unique": 1,
    "opens_total": 2,
    "clicks_total": 2,
    "complaints": 1,
    "failures_by_reason": {"account_disabled": 1},
    "open_rate_pct": 100.0 * 3 / 11,
    "click_through_rate_pct": 100.0 * 1 / 11,
    "progress_pct": 100.0,
    "confirmations_rejected": 0,
    "final": False,
    "archived": False,
    "version": 1,
    "updated_at": (sends.T_PROMO + 40_000) * 1000,
}
# With EFS (the default on): pr-0003 fails at once with its last deferral's reason (mailbox_full, not the first
# one's unreachable) and pr-0007 is pending: sent 9, failed 2, pending 1.
PROMO_WITH_EFS = {
    "efs": True,
    "sent": 9,
    "failed": 2,
    "pending": 1,
    "delivered_pct": 100.0 * 9 / 12,
    "bounces_errors_pct": 100.0 * 2 / 12,
    "failures_by_reason": {"account_disabled": 1, "mailbox_full": 1},
    "open_rate_pct": 100.0 * 3 / 9,
    "click_through_rate_pct": 100.0 * 1 / 9,
}


@pytest.mark.parametrize("source", ["native", *FORMATS])
def test_kpis_are_the_hand_worked_ones(source: str):
    events = native() if source == "native" else via(source)
    assert kpis(events, efs_default=False, validity_over=False) == {NEWS: NEWSLETTER_KPI, PROMO: PROMO_KPI}
    assert kpis(events, efs_default=True, validity_over=False)[PROMO] == {**PROMO_KPI, **PROMO_WITH_EFS}
