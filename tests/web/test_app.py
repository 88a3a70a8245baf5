"""The whole view through `handle`: routes, reading rights, live updates, actions, and the owner's pages."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT
from consumer.ops.exchange import Response
from consumer.web.auth import Auth, load_web_config
from consumer.web.csrf import FORM
from consumer.web.owners import Owners
from tests.web.fakes import View, basic, hard_bounced, kpi, request, write_web_config
from tests.web.serving import serve

HTML = {"accept": "text/html,application/xhtml+xml"}
ALICE = basic("alice", "alice-pw")  # start_deliveries
BOB = basic("bob", "bob-pw")  # viewer


@pytest.fixture(scope="module")
def web_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_web_config(tmp_path_factory.mktemp("web"))


@pytest.fixture
def view(web_config: Path) -> View:
    return View(Auth(load_web_config(web_config)))


@pytest.fixture
def open_view() -> View:
    return View(Auth())


def text(response: Response) -> str:
    assert isinstance(response.body, bytes)
    return response.body.decode()


# -- reading ------------------------------------------------------------------------------------------------------
def test_the_list_shows_every_delivery_with_its_figures(open_view: View) -> None:
    page = text(open_view.get("/", HTML))
    assert 'data-delivery="d1"' in page and 'data-delivery="d2"' in page
    assert "90.00 %" in page and "2,000,000" in page
    assert "Read-only view" in page
    filtered = text(open_view.get("/", HTML, state="AWAITING_CONFIRMATION"))
    assert 'data-delivery="d2"' in filtered and 'data-delivery="d1"' not in filtered
    assert open_view.get("/", HTML, state="NOT_A_STATE").status == 400


def test_a_delivery_as_json_is_the_kpi_record_exactly(open_view: View) -> None:
    response = open_view.get("/deliveries/d1")  # no Accept: scripts and today's clients get JSON
    assert (response.status, response.content_type) == (200, "application/json")
    assert json.loads(text(response)) == kpi(
        "d1", processed=10, sent=9, failed=1, delivered_pct=90.0, bounces_errors_pct=10.0
    )
    assert open_view.get("/deliveries/nope").status == 404
    open_view.owner_state.kpis["fresh"] = kpi("fresh")  # published here, not yet read back from the topic
    assert json.loads(text(open_view.get("/deliveries/fresh"))) == kpi("fresh")
    listed = json.loads(text(open_view.get("/api/deliveries", state="SENDING")))
    assert [d["delivery_id"] for d in listed["deliveries"]] == ["d1"]


def test_reading_needs_a_user_with_a_role_once_users_are_configured(view: View) -> None:
    refused = view.get("/", HTML)
    assert refused.status == 401 and ("WWW-Authenticate", 'Basic realm="sendtrack", charset="UTF-8"') in refused.headers
    assert view.get("/deliveries/d1").status == 401
    assert view.get("/events").status == 401
    assert view.get("/", HTML | basic("alice", "wrong")).status == 401
    assert view.get("/", HTML | BOB).status == 200
    page = text(view.get("/", HTML | ALICE))
    assert "Signed in as <strong>alice</strong>" in page


def test_public_paths_and_paths_that_are_not_ours(view: View) -> None:
    instance = json.loads(text(view.get("/api/instance")))
    assert instance == {"url": "http://me.test", "partitions": [0], "address_partitions": [0, 1, 2, 3]}
    assert view.get("/static/app.css").status == 200
    assert view.app.handle(request("/static/nope.js")) is None
    assert view.app.handle(request("/metrics-not")) is None
    wrong = view.app.handle(request("/api/deliveries/d1/confirm", headers=ALICE))
    assert wrong is not None and wrong.status == 405 and ("Allow", "POST") in wrong.headers


def test_pollers_get_the_changes_after_their_cursor(open_view: View) -> None:
    first = json.loads(text(open_view.get("/events")))
    assert {c["delivery_id"] for c in first["changes"]} == {"d1", "d2"}
    assert json.loads(text(open_view.get("/events", cursor=first["cursor"])))["changes"] == []
    open_view.kpis.apply(0, kpi("d1", version=2, progress_pct=55.5))
    later = json.loads(text(open_view.get("/events", cursor=first["cursor"])))
    assert [(c["delivery_id"], c["display"]["progress_pct"]) for c in later["changes"]] == [("d1", "55.50 %")]


def test_the_event_stream_pushes_changes_of_the_deliveries_asked_for(open_view: View) -> None:
    cursor = open_view.kpis.cursor()
    response = open_view.get("/events", {"accept": "text/event-stream"}, cursor=cursor, delivery="d2")
    assert response.content_type == "text/event-stream"
    stream = response.body
    assert next(stream) == b"retry: 2000\n\n"
    assert next(stream) == b": keep-alive\n\n"  # nothing changed within a heartbeat
    open_view.kpis.apply(0, kpi("d1", version=2))  # not asked for
    open_view.kpis.apply(1, kpi("d2", version=2, state="CONFIRMED"))
    events = b"".join(next(stream) for _ in range(2)).decode()
    [event] = [e for e in events.split("\n\n") if e.startswith("id:")]
    fields = dict(line.split(": ", 1) for line in event.splitlines())
    assert fields["event"] == "kpi" and fields["id"] == open_view.kpis.cursor()
    assert json.loads(fields["data"])["state"] == "CONFIRMED"
    stream.close()


# -- the owner's pages --------------------------------------------------------------------------------------------
def test_the_owner_shows_failed_messages_a_page_at_a_time(open_view: View) -> None:
    page = text(open_view.get("/deliveries/d1", HTML))
    assert page.count("user_unknown") == 25 and page.count("mailbox_full") == 25
    assert "?status=FAILED&amp;after=m049" in page
    assert open_view.owner_state.calls == [("messages", "d1", "FAILED", None, 50)]  # one page, never the delivery
    nxt = text(open_view.get("/deliveries/d1", HTML, after="m049"))
    assert "m050" in nxt and "m049<" not in nxt
    last = text(open_view.get("/deliveries/d1", HTML, after="m099"))
    assert "m119" in last and 'rel="next"' not in last


EVENTS = ["RELAYED", "HARD_BOUNCE"]


def test_one_message_can_be_looked_up(open_view: View) -> None:
    page = text(open_view.get("/deliveries/d1", HTML, message="m007"))
    assert "Message m007" in page and "HARD_BOUNCE" in page and "user_unknown" in page
    assert "No message ghost" in text(open_view.get("/deliveries/d1", HTML, message="ghost"))
    api = json.loads(text(open_view.get("/api/deliveries/d1/messages", message_id="m200")))
    assert (api["status"], api["facts"], api["changes"]) == ("SENT", ["RELAYED", "DELIVERED"], 2)
    assert open_view.get("/api/deliveries/d1/messages", message_id="ghost").status == 404
    failed = json.loads(text(open_view.get("/api/deliveries/d1/failed", limit="2", after="m010")))
    assert failed == {
        "delivery_id": "d1",
        "failed": [
            {"message_id": "m011", "status": "FAILED", "reason": "user_unknown", "events": EVENTS, "changes": 1},
            {"message_id": "m012", "status": "FAILED", "reason": "mailbox_full", "events": EVENTS, "changes": 1},
        ],
        "next_after": "m012",
    }


def test_a_non_owner_forwards_to_the_owner(open_view: View) -> None:
    owner = View(Auth(), owned={0})
    with serve(owner.app) as owner_url:
        here = View(Auth(), owners=Owners(lambda: {0: owner_url}), owned=set())
        page = text(here.get("/deliveries/d1", HTML))
        assert "m000" in page and "user_unknown" in page
        assert owner.owner_state.calls and not here.owner_state.calls
        api = json.loads(text(here.get("/api/deliveries/d1/failed", limit="1")))
        assert api["failed"][0]["message_id"] == "m000"


def test_a_page_whose_owner_is_elsewhere_is_made_here_so_its_forms_work_here(web_config: Path) -> None:
    """Each instance keys its form tokens with its own secret when no sendtrack_secret_file is shared: a page the
    owner made (forwarded whole) carried tokens that this instance, which the form posts to, refused (403), and
    the confirmation was never published. The page is made here; only its sending logs are the owner's."""
    owner = View(Auth(load_web_config(web_config)), owned={0, 1})
    with serve(owner.app) as owner_url:
        here = View(Auth(load_web_config(web_config)), owners=Owners(lambda: {0: owner_url, 1: owner_url}), owned=set())
        response = form(here, "confirm", ALICE, csrf_of(here, ALICE))
        assert response.status == 303 and len(here.publisher.records) == 1
        page = text(here.get("/deliveries/d2", HTML | ALICE))
        assert f'data-cursor="{here.kpis.cursor()}"' in page  # live updates follow this instance's own view
        assert "Confirmation sent" in text(here.get("/deliveries/d2", HTML | ALICE, notice="confirm"))
        assert ("messages", "d2", "FAILED", None, 50) in owner.owner_state.calls and not here.owner_state.calls


def test_the_owners_sending_logs_on_a_page_made_here(open_view: View) -> None:
    owner = View(Auth(), owned={0})
    with serve(owner.app) as owner_url:
        here = View(Auth(), owners=Owners(lambda: {0: owner_url}), owned=set())
        sent = text(here.get("/deliveries/d1", HTML, status="ALL", after="m118"))
        assert "m119" in sent and "m200" in sent and "m118<" not in sent and 'rel="next"' not in sent
        page = text(here.get("/deliveries/d1", HTML, message="m007"))
        assert "Message m007" in page and "HARD_BOUNCE" in page and "user_unknown" in page and "<td>hard</td>" in page
        assert "No message ghost" in text(here.get("/deliveries/d1", HTML, message="ghost"))
        owner.owner_state.partitions = set()  # the owner lost the partition: the KPIs still show, and say so
        moved = text(here.get("/deliveries/d1", HTML))
        assert "could not be read here just now" in moved and "90.00 %" in moved


def test_an_unreachable_owner_means_a_redirect_and_a_routed_request_is_answered_where_it_lands() -> None:
    with serve(View(Auth()).app) as gone:
        pass
    here = View(Auth(), owners=Owners(lambda: {0: gone}), owned=set())
    redirected = here.get("/deliveries/d1", HTML, after="m010")
    location = dict(redirected.headers)["Location"]
    assert redirected.status == 307 and location.startswith(gone) and "routed=1" in urlsplit(location).query
    routed = text(here.get("/deliveries/d1", HTML, routed="1"))
    assert "not here" in routed and "90.00 %" in routed  # the KPIs still show
    nobody = View(Auth(), owners=Owners(dict), owned=set())
    answer = nobody.get("/api/deliveries/d1/failed")
    assert answer.status == 503 and ("Retry-After", "1") in answer.headers


# -- actions -------------------------------------------------------------------------------------------------------
def csrf_of(view: View, headers: dict, action: str = "confirm") -> str:
    page = text(view.get("/deliveries/d2", HTML | headers))
    form = page.split(f'action="/deliveries/d2/{action}"', 1)[1]
    return form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def form(view: View, action: str, headers: dict, token: str | None = None, **extra: str) -> Response:
    body = f"csrf_token={token}".encode() if token else b""
    return view.post(
        f"/deliveries/d2/{action}", body, headers | {"content-type": FORM, "origin": "http://view.test"} | extra
    )


def test_an_authorised_user_confirms_from_the_page(view: View) -> None:
    response = form(view, "confirm", ALICE, csrf_of(view, ALICE))
    assert response.status == 303 and dict(response.headers)["Location"] == "/deliveries/d2?notice=confirm"
    [(topic, key, value)] = view.publisher.records
    event = AvroCodec.named(DELIVERY_EVENT).decode(value)
    assert (topic, key, event["actor"], event["actor_roles"]) == ("deliveries", b"d2", "alice", ["start_deliveries"])
    assert "Confirmation sent" in text(view.get("/deliveries/d2", HTML | ALICE, notice="confirm"))


def test_the_confirm_button_is_only_live_for_the_role(view: View, open_view: View) -> None:
    assert '<button type="submit" id="confirm">' in text(view.get("/deliveries/d2", HTML | ALICE))
    assert '<button type="submit" id="confirm" disabled>' in text(view.get("/deliveries/d2", HTML | BOB))
    assert '<button type="submit" id="confirm" disabled>' in text(open_view.get("/deliveries/d2", HTML))


def test_refused_form_actions_are_counted(view: View, open_view: View) -> None:
    assert form(view, "confirm", BOB, csrf_of(view, BOB)).status == 403
    assert view.denied("confirm", "missing_role") == 1
    assert form(view, "confirm", ALICE).status == 403  # no token
    assert form(view, "confirm", ALICE, csrf_of(view, BOB)).status == 403  # someone else's token
    assert view.denied("confirm", "csrf_token") == 2
    assert form(view, "confirm", ALICE, csrf_of(view, ALICE), origin="https://evil.test").status == 403
    assert view.denied("confirm", "csrf_origin") == 1
    unauthenticated = form(view, "compute-stats", {})
    assert unauthenticated.status == 401 and any(h == "WWW-Authenticate" for h, _ in unauthenticated.headers)
    assert view.denied("compute-stats", "unauthenticated") == 1
    assert form(open_view, "compute-stats", {}).status == 403
    assert open_view.denied("compute-stats", "read_only") == 1
    assert [e for e in view.publisher.records if e[0] == "deliveries"] == view.publisher.records[:1]  # bob's refusal


def test_compute_stats_from_the_page_and_the_api(view: View) -> None:
    assert form(view, "compute-stats", BOB, csrf_of(view, BOB, "compute-stats")).status == 303
    api = view.post("/api/deliveries/d1/compute-stats", b"{}", BOB | {"content-type": "application/json"})
    assert api.status == 202 and json.loads(text(api))["status"] == "accepted"
    assert [(t, k) for t, k, _ in view.publisher.records] == [
        ("sendtrack.control", b"d2"),
        ("sendtrack.control", b"d1"),
    ]


def test_the_api_confirms_with_json_only(view: View) -> None:
    as_form = view.post("/api/deliveries/d2/confirm", b"x=1", ALICE | {"content-type": FORM})
    assert as_form.status == 415 and view.publisher.records == []
    assert view.denied("confirm", "content_type") == 1
    answer = view.post("/api/deliveries/d2/confirm", b"{}", ALICE | {"content-type": "application/json; charset=utf-8"})
    body = json.loads(text(answer))
    assert answer.status == 202 and body["event_id"] and body["delivery_id"] == "d2"
    refused = view.post("/api/deliveries/d2/confirm", b"{}", {"content-type": "application/json"})
    assert refused.status == 401 and json.loads(text(refused))["error"] == "unauthenticated"


# -- a year of deliveries, sending logs by status, the export, the chart --------------------------------------------
def test_the_list_is_a_page_with_search_filter_and_older_pages(open_view: View) -> None:
    for i in range(120):
        open_view.kpis.apply(i % 4, kpi(f"spring-{i:03}", state="FINISHED" if i % 2 else "SENDING"))
    page = text(open_view.get("/", HTML))
    assert page.count('<tr data-delivery="spring') == 50 and 'data-delivery="spring-119"' in page
    assert 'rel="next" href="?q=&amp;state=&amp;before=' in page and "FINISHED (60)" in page
    searched = text(open_view.get("/", HTML, q="SPRING-11", state="FINISHED"))
    assert searched.count('<tr data-delivery="spring') == 5 and 'rel="next"' not in searched
    api = json.loads(text(open_view.get("/api/deliveries", limit="100")))
    rest = json.loads(text(open_view.get("/api/deliveries", limit="100", cursor=api["next_cursor"])))
    assert len(api["deliveries"]) == 100 and len(rest["deliveries"]) == 22 and rest["next_cursor"] is None
    listed = [k["delivery_id"] for k in api["deliveries"] + rest["deliveries"]]
    assert listed[0] == "spring-119" and len(set(listed)) == 122
    assert open_view.get("/api/deliveries", cursor="x").status == 400


def test_sending_logs_by_status_and_one_page_of_every_message(open_view: View) -> None:
    sent = text(open_view.get("/deliveries/d1", HTML, status="SENT"))
    assert "m200" in sent and "m000" not in sent and 'aria-current="page">Sent<' in sent
    api = json.loads(text(open_view.get("/api/deliveries/d1/messages", status="SENT")))
    assert [(m["message_id"], m["status"]) for m in api["messages"]] == [("m200", "SENT")]
    every = json.loads(text(open_view.get("/api/deliveries/d1/messages", limit="500")))
    assert len(every["messages"]) == 121 and every["next_after"] is None
    assert open_view.get("/api/deliveries/d1/messages", status="LOST").status == 400


def test_the_export_streams_every_message_as_csv(open_view: View, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("consumer.web.app.EXPORT_PAGE", 7)  # many reads of a bounded size
    open_view.owner_state.stored["d1"]["=cmd"] = hard_bounced("refused")
    response = open_view.get("/deliveries/d1/sending-logs.csv")
    assert response.content_type == "text/csv; charset=utf-8" and not isinstance(response.body, bytes)
    assert ("Content-Disposition", 'attachment; filename="sending-logs-d1.csv"') in response.headers
    rows = list(csv.reader(io.StringIO(b"".join(response.body).decode())))
    assert rows[0] == ["message_id", "status", "reason", "events", "status_changes"]
    assert rows[1] == ["'=cmd", "FAILED", "refused", "RELAYED HARD_BOUNCE", "1"]  # never a spreadsheet formula
    assert len(rows) == 1 + 122 and rows[-1][:2] == ["m200", "SENT"]
    assert {call[4] for call in open_view.owner_state.calls} == {7}


def test_a_non_owner_streams_the_owners_export() -> None:
    owner = View(Auth(), owned={0})
    with serve(owner.app) as owner_url:
        here = View(Auth(), owners=Owners(lambda: {0: owner_url}), owned=set())
        response = here.get("/deliveries/d1/sending-logs.csv")
        assert not isinstance(response.body, bytes)  # passed on as it comes, never held whole
        assert b"".join(response.body).decode().count("\r\n") == 1 + 121


def test_the_chart_follows_the_snapshots_and_comes_with_live_changes(open_view: View) -> None:
    start = 1_795_000_000_000
    for n in range(1, 5):
        open_view.kpis.apply(0, kpi("d1", version=n + 1, sent=n * 100, failed=n, updated_at=start + n * 60_000))
    page = text(open_view.get("/deliveries/d1", HTML))
    assert 'data-series="sent" points="' in page and "1,000" in page  # the scale: to deliver
    cursor = open_view.kpis.cursor()
    open_view.kpis.apply(0, kpi("d1", version=9, sent=900, updated_at=start + 600_000))
    [change] = json.loads(text(open_view.get("/events", cursor=cursor, delivery="d1")))["changes"]
    assert change["chart"]["points"] == 6 and change["chart"]["series"]["sent"].endswith(",20.0")
    assert "chart" not in json.loads(text(open_view.get("/events", cursor=cursor)))["changes"][0]  # the list
