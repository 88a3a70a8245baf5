"""Scenarios beyond the seed tables: ordering, time, engagement, lifecycle, compute stats."""

from __future__ import annotations

from consumer.core.delivery import MISSING_ROLE_REASON
from tests import samples
from tests.core.builders import delivery_event, kpi_after, mta, prepared, processor


def test_retry_success_arriving_before_its_soft_bounce_stays_sent():
    events = [
        prepared("d", efs=True),
        mta("d", "m", "RELAYED"),
        mta("d", "m", "DELIVERED", at=3_000, attempt=1),
        mta("d", "m", "SOFT_BOUNCE", at=2_000, reason="mailbox_full"),
    ]
    kpi = kpi_after(events)
    assert (kpi["sent"], kpi["failed"], kpi["failures_by_reason"]) == (1, 0, {})


def test_late_hard_bounce_after_validity_end_lowers_delivered_and_bumps_version():
    p = processor()
    p.apply([prepared("d", efs=False, validity_end=5_000), mta("d", "m1", "RELAYED"), mta("d", "m2", "RELAYED")])
    p.advance_clock(6_000)
    first = p.take_output().kpis[0]
    assert (first["final"], first["state"], first["delivered_pct"]) == (True, "FINISHED", 100.0)
    p.apply([mta("d", "m1", "HARD_BOUNCE", at=7_000, reason="user_unknown")])
    late = p.take_output().kpis[0]
    assert late["delivered_pct"] == 50.0
    assert late["version"] == first["version"] + 1
    assert late["failures_by_reason"] == {"user_unknown": 1}


def test_validity_end_by_wall_clock_fails_soft_bounces_and_logs_the_change():
    p = processor()
    p.apply([prepared("d", efs=False, validity_end=5_000), mta("d", "m", "SOFT_BOUNCE", reason="mailbox_full")])
    assert p.take_output().kpis[0]["sent"] == 1
    p.advance_clock(5_000)
    out = p.take_output()
    assert (out.kpis[0]["failed"], out.kpis[0]["final"]) == (1, True)
    [log] = out.sending_logs
    assert (log["old_status"], log["new_status"], log["reason"], log["event_id"]) == (
        "SENT",
        "FAILED",
        "mailbox_full",
        None,
    )
    assert log["occurred_at"] == 5_000


def test_opens_and_clicks_unique_and_totals():
    events = [
        prepared("d", efs=False),
        *(mta("d", f"m{i}", "RELAYED") for i in range(4)),
        mta("d", "m0", "OPEN", event_id="o1"),
        mta("d", "m0", "OPEN", event_id="o2"),
        mta("d", "m0", "OPEN", event_id="o2"),  # a redelivery: not a second open
        mta("d", "m1", "CLICK", event_id="c1"),  # a click implies an open
        mta("d", "m1", "CLICK", event_id="c2"),
        mta("d", "m2", "OPEN", event_id="o3"),
        mta("d", "m2", "HARD_BOUNCE"),  # a Failed message counts in no rate
    ]
    kpi = kpi_after(events)
    assert (kpi["opens_unique"], kpi["clicks_unique"]) == (2, 1)
    assert (kpi["opens_total"], kpi["clicks_total"]) == (3, 2)
    assert kpi["sent"] == 3
    assert kpi["open_rate_pct"] == 100.0 * 2 / 3
    assert kpi["click_through_rate_pct"] == 100.0 / 3


def test_confirmation_without_the_role_is_rejected_and_reported():
    p = processor()
    refused = delivery_event("d", "CONFIRMED", at=10, actor="intern", actor_roles=["view_reports"])
    p.apply([prepared("d", efs=True, confirmation_required=True), refused, refused])
    out = p.take_output()
    assert [r.reason for r in out.rejections] == [MISSING_ROLE_REASON]
    assert out.rejections[0].actor == "intern"
    assert out.kpis[0]["state"] == "AWAITING_CONFIRMATION"
    assert out.kpis[0]["confirmations_rejected"] == 1
    p.apply([mta("d", "m", "RELAYED")])
    assert p.take_output().anomalies == 1  # applied, and flagged: the delivery is not confirmed
    p.apply([delivery_event("d", "CONFIRMED", at=20, actor="alice", actor_roles=["start_deliveries"])])
    p.apply([mta("d", "m2", "RELAYED")])
    out = p.take_output()
    assert (out.anomalies, out.kpis[0]["state"], out.kpis[0]["processed"]) == (0, "SENDING", 2)


def test_a_rejected_confirmation_and_an_engagement_sharing_an_event_id_both_count():
    # The deliveries topic's producers and mta.events' choose ids independently: an equal id is no redelivery.
    def refused(event_id: str) -> dict:
        return delivery_event("d", "CONFIRMED", at=10, actor="intern", actor_roles=[], event_id=event_id)

    p = processor()
    p.apply([prepared("d", efs=False), mta("d", "m", "RELAYED"), mta("d", "m", "OPEN", event_id="x"), refused("x")])
    p.take_output()
    p._state.store.write(p._state.stage(), {})  # x is read back from the store below, y from staged changes
    p.apply([refused("y"), mta("d", "m", "CLICK", event_id="y")])
    p.apply([mta("d", "m", "OPEN", event_id="x"), refused("x"), refused("y"), mta("d", "m", "CLICK", event_id="y")])
    kpi = p.take_output().kpis[-1]
    assert (kpi["opens_total"], kpi["clicks_total"], kpi["confirmations_rejected"]) == (1, 1, 2)
    assert p.recompute("d") == p.delivery("d").counters
    assert p.compute_stats("d", publish=False) is True


def test_mta_events_before_prepared_are_applied_and_reevaluated_when_efs_is_known():
    p = processor(efs_default=False)
    p.apply([mta("d", "m1", "RELAYED"), mta("d", "m2", "RELAYED"), mta("d", "m2", "DELIVERED")])
    out = p.take_output()
    assert out.anomalies == 3
    assert (out.kpis[0]["state"], out.kpis[0]["sent"], out.kpis[0]["to_deliver"]) == ("SENDING", 2, None)
    p.apply([prepared("d", efs=True, to_deliver=4)])
    kpi = p.take_output().kpis[0]
    assert (kpi["sent"], kpi["pending"], kpi["progress_pct"]) == (1, 1, 50.0)


def test_lifecycle_states():
    p = processor()
    p.apply([prepared("d", efs=False)])
    assert p.take_output().kpis[0]["state"] == "PREPARED"
    p.apply([delivery_event("d", "SCHEDULED", at=5, scheduled_at=99_000)])
    assert p.take_output().kpis[0]["state"] == "SCHEDULED"
    p.apply([mta("d", "m", "RELAYED")])
    assert p.take_output().kpis[0]["state"] == "SENDING"
    p.apply([delivery_event("d", "CANCELLED", at=6)])
    assert p.take_output().kpis[0]["state"] == "CANCELLED"


def test_failures_by_reason_uses_hard_bounce_then_last_soft_bounce():
    events = [
        prepared("d", efs=True),
        mta("d", "a", "SOFT_BOUNCE", at=10, attempt=0, reason="unreachable"),
        mta("d", "a", "SOFT_BOUNCE", at=30, attempt=2, reason="mailbox_full"),
        mta("d", "a", "SOFT_BOUNCE", at=20, attempt=1, reason="refused"),
        mta("d", "b", "SOFT_BOUNCE", reason="mailbox_full"),
        mta("d", "b", "HARD_BOUNCE", reason="user_unknown"),
        mta("d", "c", "RETRIES_EXHAUSTED"),
    ]
    assert kpi_after(events)["failures_by_reason"] == {"mailbox_full": 1, "unknown": 1, "user_unknown": 1}


def test_duplicates_change_nothing_and_are_counted_as_such():
    p = processor()
    event = mta("d", "m", "DELIVERED")
    p.apply([prepared("d", efs=True), event])
    p.take_output()
    p.apply([event])
    out = p.take_output()
    assert out.kpis == [] and out.sending_logs == []
    assert out.outcomes == {("DELIVERED", "duplicate"): 1}


def test_recompute_equals_incremental_counters():
    p = processor()
    p.apply([prepared("d", efs=False, validity_end=50), mta("d", "a", "SOFT_BOUNCE"), mta("d", "b", "OPEN")])
    p.take_output()  # part of the state is stored, part is staged
    p.apply([mta("d", "c", "CLICK"), mta("d", "a", "RELAYED", at=60)])
    assert p.recompute("d") == p.delivery("d").counters


def test_sending_log_ids_are_deterministic_per_message_change():
    p = processor()
    p.apply(
        [
            prepared("d", efs=True),
            mta("d", "m", "RELAYED", event_id="e1"),
            mta("d", "m", "DELIVERED", event_id="e2"),
        ]
    )
    logs = p.take_output().sending_logs
    assert [(log["log_id"], log["old_status"], log["new_status"]) for log in logs] == [
        ("d/m/1", None, "PENDING"),
        ("d/m/2", "PENDING", "SENT"),
    ]


def test_the_sample_delivery_gives_the_kpis_worked_out_by_hand():
    kpi = kpi_after(samples.all_events())
    assert {k: v for k, v in kpi.items() if k not in ("version", "updated_at")} == samples.EXPECTED_KPI


def test_sending_log_ids_of_different_messages_never_collide_even_when_ids_hold_slashes():
    """Ids may hold "/" (the separator: SES multi-recipient message ids do): delivery "a/b" with message "c" and
    delivery "a" with message "b/c" made the same log_id, and a consumer deduping by it dropped one."""
    p = processor()
    p.apply(
        [
            prepared("a/b", efs=False),
            prepared("a", efs=False),
            mta("a/b", "c", "RELAYED"),
            mta("a", "b/c", "RELAYED", event_id="x"),
        ]
    )
    ids = [log["log_id"] for log in p.take_output().sending_logs]
    assert len(set(ids)) == 2
    assert sorted(ids) == ["a%2Fb/c/1", "a/b%2Fc/1"]
    p.apply([prepared("100%", efs=False), mta("100%", "m", "RELAYED", event_id="y")])
    assert [log["log_id"] for log in p.take_output().sending_logs] == ["100%25/m/1"]  # "%" escaped first
