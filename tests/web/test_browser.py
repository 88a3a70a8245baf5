"""The view in a real browser: what a campaign user sees and does, against a served WebApp over fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT
from consumer.web.auth import Auth, load_web_config
from tests.web.browser import screenshot
from tests.web.fakes import View, hard_bounced, kpi, write_web_config
from tests.web.serving import serve

ALICE = {"http_credentials": {"username": "alice", "password": "alice-pw"}}
BOB = {"http_credentials": {"username": "bob", "password": "bob-pw"}}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[View, str]]:
    view = View(Auth(load_web_config(write_web_config(tmp_path))))
    view.kpis.apply(
        0,
        kpi(
            "spring-sale",
            processed=1_234_567,
            sent=1_200_000,
            failed=34_567,
            to_deliver=2_000_000,
            delivered_pct=97.20008715946585,
            bounces_errors_pct=2.7999128405341507,
            open_rate_pct=23.456,
            click_through_rate_pct=4.5678,
            progress_pct=61.72835,
            failures_by_reason={"user_unknown": 30_000, "mailbox_full": 4_567},
        ),
    )
    view.kpis.apply(
        3,
        kpi(
            "welcome-series",
            state="FINISHED",
            processed=500,
            sent=500,
            to_deliver=500,
            delivered_pct=100.0,
            progress_pct=100.0,
            final=True,
            open_rate_pct=41.2,
        ),
    )
    reasons = ("user_unknown", "mailbox_full", "user_unknown", "invalid_domain", "refused")
    view.owner_state.messages["spring-sale"] = {
        f"msg-{i:07}": hard_bounced(reasons[i % len(reasons)]) for i in range(3, 3000, 37)
    }
    with serve(view.app) as url:
        yield view, url


def cells(page, delivery_id: str) -> dict[str, str]:
    row = page.locator(f'tr[data-delivery="{delivery_id}"]')
    return {
        field: row.locator(f'[data-field="{field}"]').inner_text()
        for field in (
            "state",
            "to_deliver",
            "sent",
            "delivered_pct",
            "bounces_errors_pct",
            "open_rate_pct",
            "click_through_rate_pct",
            "progress_pct",
        )
    }


def test_the_list_shows_the_deliveries_with_the_numbers_given(browser, site) -> None:
    _, url = site
    page = browser(**BOB).new_page()
    page.goto(url + "/")
    assert cells(page, "spring-sale") == {
        "state": "SENDING",
        "to_deliver": "2,000,000",
        "sent": "1,200,000",
        "delivered_pct": "97.20 %",
        "bounces_errors_pct": "2.80 %",
        "open_rate_pct": "23.46 %",
        "click_through_rate_pct": "4.57 %",
        "progress_pct": "61.73 %",
    }
    assert page.locator('tr[data-delivery="spring-sale"] [data-field="delivered_pct"]').get_attribute("title") == (
        "97.20008715946585"
    )
    assert page.locator("tbody tr").count() == 4
    page.select_option("#state", "FINISHED")
    page.click("text=Filter")
    page.wait_for_url("**/?state=FINISHED")
    assert page.locator("tbody tr").count() == 1
    screenshot(page, "list-filtered")


@pytest.mark.parametrize("transport", ["events", "polling"])
def test_a_live_update_moves_a_progress_bar(browser, site, transport: str) -> None:
    view, url = site
    context = browser(**BOB)
    if transport == "polling":  # a browser (or proxy) without server-sent events
        context.add_init_script("delete window.EventSource")
    page = context.new_page()
    page.goto(url + "/")
    expect(page.locator("#live-status")).to_contain_text({"events": "on", "polling": "polling"}[transport])
    bar = page.locator('tr[data-delivery="spring-sale"] progress')
    assert bar.evaluate("el => el.value") == pytest.approx(61.72835)
    view.kpis.apply(2, kpi("spring-sale", version=2, processed=1_700_000, to_deliver=2_000_000, progress_pct=85.0))
    view.kpis.apply(1, kpi("new-launch", state="SCHEDULED", version=1))
    expect(bar).to_have_js_property("value", 85)
    assert cells(page, "spring-sale")["progress_pct"] == "85.00 %"
    page.locator('tr[data-delivery="new-launch"]').wait_for()
    expect(page.locator("#count")).to_have_text("5")
    assert cells(page, "new-launch")["state"] == "SCHEDULED"
    screenshot(page, f"live-update-{transport}")


def test_an_authorised_user_confirms_a_send(browser, site) -> None:
    view, url = site
    page = browser(**ALICE).new_page()
    page.goto(url + "/deliveries/d2")
    page.click("#confirm")
    page.wait_for_url("**/deliveries/d2?notice=confirm")
    assert "Confirmation sent" in page.get_by_role("status").inner_text()
    [(topic, key, value)] = view.publisher.records
    event = AvroCodec.named(DELIVERY_EVENT).decode(value)
    assert (topic, key, event["type"], event["actor"], event["actor_roles"]) == (
        "deliveries",
        b"d2",
        "CONFIRMED",
        "alice",
        ["start_deliveries"],
    )
    view.kpis.apply(1, kpi("d2", state="CONFIRMED", version=2))  # the core applied it: the button goes
    page.locator("#confirm").wait_for(state="hidden")
    screenshot(page, "confirmed")


def test_an_unauthorised_user_is_refused_and_counted(browser, site) -> None:
    view, url = site
    page = browser(**BOB).new_page()
    page.goto(url + "/deliveries/d2")
    assert page.locator("#confirm").is_disabled()
    assert "Needs the Start deliveries role" in page.locator(".actions").inner_text()
    page.locator("#confirm").evaluate("button => button.disabled = false")  # a tampered page
    page.click("#confirm")
    page.wait_for_load_state()
    assert "403" in page.locator("h1").inner_text() and "needs the Start deliveries role" in page.content()
    assert view.denied("confirm", "missing_role") == 1
    [(_, _, value)] = view.publisher.records  # recorded by the core as a rejected confirmation
    event = AvroCodec.named(DELIVERY_EVENT).decode(value)
    assert (event["actor"], event["actor_roles"]) == ("bob", ["viewer"])
    screenshot(page, "refused")


def test_compute_stats_publishes_the_command(browser, site) -> None:
    view, url = site
    page = browser(**BOB).new_page()
    page.goto(url + "/deliveries/spring-sale")
    assert "user_unknown" in page.locator(".columns").inner_text()
    assert page.locator("table.failed tbody tr").first.inner_text() == "msg-0000003\tinvalid_domain"
    page.click("#compute-stats")
    page.wait_for_url("**/deliveries/spring-sale?notice=compute-stats")
    assert [(t, k) for t, k, _ in view.publisher.records] == [("sendtrack.control", b"spring-sale")]
    screenshot(page, "compute-stats")


def test_sending_logs_page_by_page_and_one_message(browser, site) -> None:
    _, url = site
    page = browser(**BOB).new_page()
    page.goto(url + "/deliveries/d1")
    assert page.locator("table.failed tbody tr").count() == 50
    page.click("a[rel=next]")
    assert page.locator("table.failed tbody tr").first.inner_text().startswith("m050")
    page.fill("#message", "m007")
    page.click("text=Look up")
    detail = page.locator("#message-detail").inner_text()
    assert "FAILED" in detail and "user_unknown" in detail and "HARD_BOUNCE" in detail
    screenshot(page, "sending-logs")
