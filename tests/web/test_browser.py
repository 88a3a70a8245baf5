"""The view in a real browser: what a campaign user sees and does, against a served WebApp over fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import ADDRESS_SIGNAL, DELIVERY_EVENT
from consumer.quarantine.rules import DAY_MS
from consumer.quarantine.signals import RELEASE, SOFT_ERROR, Signal
from consumer.web.auth import Auth, load_web_config
from tests.web.browser import screenshot
from tests.web.fakes import View, hard_bounced, kpi, write_web_config
from tests.web.serving import serve

ALICE = {"http_credentials": {"username": "alice", "password": "alice-pw"}}
BOB = {"http_credentials": {"username": "bob", "password": "bob-pw"}}
CAROL = {"http_credentials": {"username": "carol", "password": "carol-pw"}}  # view_addresses
DAVE = {"http_credentials": {"username": "dave", "password": "dave-pw"}}  # view_addresses, release_addresses


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
    view.owner_state.stored["spring-sale"] = {
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
    assert page.locator("#rows tr").count() == 4
    page.select_option("#state", "FINISHED")
    page.click("text=Show")
    page.wait_for_url("**/?q=&state=FINISHED")
    assert page.locator("#rows tr").count() == 1
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
    expect(page.locator("#rows tr").first).to_have_attribute("data-delivery", "new-launch")  # newest change first
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
    assert page.locator("table.messages tbody tr").first.inner_text().startswith("msg-0000003\tFAILED\tinvalid_domain")
    page.click("#compute-stats")
    page.wait_for_url("**/deliveries/spring-sale?notice=compute-stats")
    assert [(t, k) for t, k, _ in view.publisher.records] == [("sendtrack.control", b"spring-sale")]
    screenshot(page, "compute-stats")


def test_sending_logs_page_by_page_and_one_message(browser, site) -> None:
    _, url = site
    page = browser(**BOB).new_page()
    page.goto(url + "/deliveries/d1")
    assert page.locator("table.messages tbody tr").count() == 50
    page.click("a[rel=next]")
    assert page.locator("table.messages tbody tr").first.inner_text().startswith("m050")
    page.fill("#message", "m007")
    page.click("text=Look up")
    detail = page.locator("#message-detail").inner_text()
    assert "FAILED" in detail and "user_unknown" in detail and "HARD_BOUNCE" in detail
    screenshot(page, "sending-logs")


def test_an_address_is_searched_shown_and_released(browser, site) -> None:
    view, url = site
    now = 1_795_000_000_000
    view.addresses.state.learn(
        "jane@example.com",
        *(
            Signal(f"soft-{day}", SOFT_ERROR, now + day * DAY_MS, "spring-sale", f"msg-{day}", "mailbox_full")
            for day in range(0, 10, 2)
        ),  # the fifth counted error quarantines
    )
    bob = browser(**BOB).new_page()
    bob.goto(url + "/")
    assert bob.locator("#address").count() == 0  # no address search without view_addresses

    carol = browser(**CAROL).new_page()
    carol.goto(url + "/")
    carol.fill("#address", "Jane@Example.com")
    carol.click(".address-search button")
    carol.wait_for_url(url + "/addresses")  # the address is in no URL
    assert carol.locator("#address-status").inner_text() == "QUARANTINED"
    assert carol.locator("#release").count() == 0  # seeing is not releasing
    dave = browser(**DAVE).new_page()
    dave.goto(url + "/addresses")
    dave.fill("#address", "jane@example.com")
    dave.click(".address-search button")
    facts = dave.locator("section.panel").first.inner_text()
    assert "ERROR_THRESHOLD" in facts and "mailbox_full" in facts and "SOFT_ERROR" in facts
    rows = dave.locator("table.history tbody tr")
    assert rows.count() == 5 and rows.first.inner_text().startswith("spring-sale\tmsg-8\tFAILED")
    assert rows.first.locator("a").get_attribute("href") == "/deliveries/spring-sale"
    screenshot(dave, "address-page")
    dave.click("#release")
    assert "Release sent" in dave.get_by_role("status").inner_text()
    [(topic, key, value)] = view.publisher.records
    signal = AvroCodec.named(ADDRESS_SIGNAL).decode(value)
    assert (topic, key, signal["kind"], signal["actor"]) == ("address.signals", b"jane@example.com", "RELEASE", "dave")
    screenshot(dave, "address-released")
    view.addresses.state.learn(
        "jane@example.com",
        *(
            Signal(f"soft-{day}", SOFT_ERROR, now + day * DAY_MS, "spring-sale", f"msg-{day}", "mailbox_full")
            for day in range(0, 10, 2)
        ),
        Signal(signal["event_id"], RELEASE, signal["occurred_at"], actor="dave"),
    )  # the quarantine applied it
    dave.click("#show-again")
    assert dave.locator("#address-status").inner_text() == "VALID"
    assert "MANUAL_RELEASE" in dave.locator("section.panel").first.inner_text()


@pytest.fixture
def year(tmp_path: Path) -> Iterator[tuple[View, str]]:
    """A view over 1,002 deliveries (the fakes' d1 and d2 too), d1 with its send's history."""
    view = View(Auth(load_web_config(write_web_config(tmp_path))))
    for i in range(1000):
        view.kpis.apply(i % 4, kpi(f"campaign-{i:04}", state="FINISHED" if i % 5 else "SENDING", sent=i))
    start = 1_795_000_000_000
    for n in range(1, 13):
        figures = {"sent": n * 150, "failed": n * 12, "opens_unique": n * 40, "clicks_unique": n * 9}
        view.kpis.apply(0, kpi("d1", version=n + 1, to_deliver=2000, updated_at=start + n * 300_000, **figures))
    with serve(view.app) as url:
        yield view, url


def test_search_paging_and_a_live_update_of_a_visible_row(browser, year) -> None:
    view, url = year
    page = browser(**BOB).new_page()
    page.goto(url + "/")
    assert page.locator("#rows tr").count() == 50 and page.locator("#count").inner_text() == "1,002"
    page.click("a[rel=next]")
    expect(page.locator("#rows tr").first).to_have_attribute("data-delivery", "campaign-0950")
    page.fill("#q", "campaign-07")
    page.select_option("#state", "SENDING")
    page.click("text=Show")
    expect(page.locator("#rows tr")).to_have_count(20)
    expect(page.locator("#live-status")).to_contain_text("on")
    view.kpis.apply(0, kpi("campaign-0705", state="SENDING", version=2, sent=99_999, progress_pct=42.0))
    row = page.locator('tr[data-delivery="campaign-0705"]')
    expect(row.locator('[data-field="sent"]')).to_have_text("99,999")
    expect(page.locator("#rows tr").first).to_have_attribute("data-delivery", "campaign-0705")
    view.kpis.apply(0, kpi("campaign-0001", state="SENDING", version=2))  # no match: never sent to this page
    view.kpis.apply(0, kpi("campaign-0710", state="SENDING", version=2, sent=7))
    expect(page.locator("#rows tr").first).to_have_attribute("data-delivery", "campaign-0710")
    assert page.locator('tr[data-delivery="campaign-0001"]').count() == 0
    screenshot(page, "list-search-live")


def test_sending_logs_by_status_the_chart_and_the_csv_download(browser, year) -> None:
    view, url = year
    page = browser(**BOB, accept_downloads=True).new_page()
    page.goto(url + "/deliveries/d1")
    points = page.locator('[data-series="sent"]').get_attribute("points").split()
    assert len(points) == 13 and points[-1].startswith("600.0,")  # d1's first snapshot and 12 more
    expect(page.locator('[data-chart-latest="sent"]')).to_have_text("1,800")
    view.kpis.apply(0, kpi("d1", version=20, to_deliver=2000, sent=1950, updated_at=1_795_000_000_000 + 3_900_000))
    expect(page.locator('[data-chart-latest="sent"]')).to_have_text("1,950")
    assert len(page.locator('[data-series="sent"]').get_attribute("points").split()) == 14
    screenshot(page, "delivery-chart")
    page.click("nav.tabs >> text=Sent")
    expect(page.locator("table.messages tbody tr")).to_have_count(1)
    assert page.locator("table.messages tbody tr").inner_text().startswith("m200\tSENT")
    screenshot(page, "sending-logs-sent")
    with page.expect_download() as download:
        page.click("text=Export CSV")
    saved = download.value
    assert saved.suggested_filename == "sending-logs-d1.csv"
    lines = Path(saved.path()).read_text().splitlines()
    assert lines[0] == "message_id,status,reason,events,status_changes" and len(lines) == 1 + 121
