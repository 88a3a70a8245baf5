"""Archiving in the loop: the archived KPI goes out marked, late input is a dead letter, memory holds live
deliveries only."""

from __future__ import annotations

import json

from consumer.codec.avro import AvroCodec
from consumer.codec.control import COMPUTE_STATS
from consumer.codec.schemas import MTA_EVENT
from tests.core.builders import mta, prepared
from tests.delivery.test_intake import DELIVERIES, control, relayed
from tests.runtime.fakes import NOW_S, LoopDriver

NOW_MS = int(NOW_S * 1000)
MTA = AvroCodec.named(MTA_EVENT)


def ended_send(driver: LoopDriver, delivery: str) -> None:
    """A send whose validity period ended an hour ago, seen to end by an event half an hour ago."""
    event = prepared(delivery, efs=False, validity_end=NOW_MS - 3_600_000, at=NOW_MS - 7_200_000)
    start = driver.message(driver.topics.deliveries, 0, delivery.encode(), DELIVERIES.encode(event))
    driver.poll([start, relayed(driver, delivery, "m1", at=NOW_MS - 1_800_000)])


def wall_clock_at(driver: LoopDriver, now_s: float) -> None:
    driver.runner._clock = lambda: now_s  # the fixed clock of the fakes, moved on


def test_a_delivery_past_its_retention_is_archived_and_late_input_is_a_dead_letter() -> None:
    driver = LoopDriver(state_retention_s=60.0)
    ended_send(driver, "old")
    driver.checkpoint()
    assert driver.kpis()["old"]["final"] and not driver.kpis()["old"]["archived"]  # final from now on
    wall_clock_at(driver, NOW_S + 60)
    driver.checkpoint()
    kpi = driver.kpis()["old"]
    assert kpi["archived"] and kpi["final"] and kpi["processed"] == 1
    assert driver.stage.published_kpis() == {}  # the instance's map keeps live deliveries only
    assert driver.stage.runtimes[0].processor.delivery_ids() == []

    late = MTA.encode(mta("old", "m1", "OPEN", at=NOW_MS - 1_000))
    driver.poll([driver.message(driver.topics.mta_events, 0, b"old", late)])
    driver.poll([control(driver, b"old", json.dumps({"command": COMPUTE_STATS, "delivery_id": "old"}).encode())])
    driver.checkpoint()
    [letter] = driver.dead_letters()
    assert letter["sendtrack.error.code"] == "delivery_archived"
    again = driver.kpis()["old"]
    assert again["version"] == kpi["version"] + 1  # compute-stats republished the final figures, unchanged
    assert {k: v for k, v in again.items() if k != "version"} == {k: v for k, v in kpi.items() if k != "version"}


def test_a_backlog_read_long_after_its_validity_end_is_kept_for_the_retention_from_then() -> None:
    """Replaying last year's send: its own later events end its validity period, but the retention counts from
    when it was read, so none of its events is refused while the backlog is read."""
    driver = LoopDriver(state_retention_s=60.0)
    year_ago = NOW_MS - 365 * 86_400_000
    event = prepared("replayed", efs=False, validity_end=year_ago, at=year_ago - 5_000)
    driver.poll([driver.message(driver.topics.deliveries, 0, b"replayed", DELIVERIES.encode(event))])
    driver.poll(
        [relayed(driver, "replayed", "m1", at=year_ago - 1_000), relayed(driver, "replayed", "m2", at=year_ago + 1)]
    )
    driver.checkpoint()
    wall_clock_at(driver, NOW_S + 30)
    driver.poll([relayed(driver, "replayed", "m1", kind="OPEN", at=year_ago + 86_400_000)])
    driver.checkpoint()
    kpi = driver.kpis()["replayed"]
    assert kpi["final"] and not kpi["archived"] and kpi["processed"] == 2
    assert driver.dead_letters() == []
    wall_clock_at(driver, NOW_S + 60)
    driver.checkpoint()
    assert driver.kpis()["replayed"]["archived"]


def test_without_a_retention_nothing_is_archived() -> None:
    driver = LoopDriver(state_retention_s=None)
    ended_send(driver, "kept")
    driver.checkpoint()
    assert not driver.kpis()["kept"]["archived"]
    assert driver.stage.runtimes[0].processor.delivery_ids() == ["kept"]
