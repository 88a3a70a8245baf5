"""Address pages: who may see and release one, what the page shows, and where its record comes from."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from structlog.testing import capture_logs

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import ADDRESS_SIGNAL
from consumer.ops.exchange import Response
from consumer.quarantine.privacy import address_ref
from consumer.quarantine.signals import DELIVERED, HARD_ERROR, OPEN, RELEASE, Signal
from consumer.web.addresses import AddressPlacement
from consumer.web.auth import Auth, load_web_config
from consumer.web.csrf import FORM, JSON, Csrf
from consumer.web.owners import FORWARDED_HEADER, KeyPartitions, Owners
from consumer.web.pages import moment
from tests.web.fakes import (
    FakeAddressState,
    View,
    address_partition,
    address_placement,
    basic,
    request,
    write_web_config,
)
from tests.web.serving import serve

HTML = {"accept": "text/html"}
BOB = basic("bob", "bob-pw")  # viewer: deliveries only
CAROL = basic("carol", "carol-pw")  # view_addresses
DAVE = basic("dave", "dave-pw")  # view_addresses, release_addresses
ADDRESS = "jane@example.com"
T0 = 1_795_000_000_000


@pytest.fixture(scope="module")
def web_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_web_config(tmp_path_factory.mktemp("web"))


@pytest.fixture
def view(web_config: Path) -> View:
    view = View(Auth(load_web_config(web_config)))
    quarantined(view.addresses.state)
    return view


def quarantined(state: FakeAddressState, address: str = ADDRESS) -> dict:
    """A hard error on d1's message (a delivery the view lists), then an open of an older, unlisted delivery's."""
    return state.learn(
        address,
        Signal("e-open", OPEN, T0 - 1_000, "spring-old", "m-old"),
        Signal("e-hard", HARD_ERROR, T0, "d1", "m007", "user_unknown"),
    )


def search(view: View, address: str, headers: dict) -> Response:
    return view.post("/addresses", urlencode({"address": address}).encode(), headers | HTML | {"content-type": FORM})


def release_form(
    view: View, headers: dict, token: str | None, address: str = ADDRESS, origin: str = "http://view.test"
) -> Response:
    fields = {"address": address} | ({"csrf_token": token} if token else {})
    body = urlencode(fields).encode()
    return view.post("/addresses/release", body, headers | HTML | {"content-type": FORM, "origin": origin})


def token_of(page: str) -> str:
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def text(response: Response) -> str:
    assert isinstance(response.body, bytes)
    return response.body.decode()


# -- who may ------------------------------------------------------------------------------------------------------
def test_address_pages_need_the_view_addresses_role(view: View) -> None:
    assert search(view, ADDRESS, {}).status == 401
    refused = search(view, ADDRESS, BOB)
    assert refused.status == 403 and "View addresses role" in text(refused)
    assert view.get("/addresses", HTML | BOB).status == 403
    api = view.post("/api/addresses/status", json.dumps({"address": ADDRESS}).encode(), BOB | {"content-type": JSON})
    assert api.status == 403
    assert view.addresses.state.asked == []  # nothing was looked up for them
    assert search(view, ADDRESS, CAROL).status == 200
    assert view.get("/addresses", HTML | CAROL).status == 200


def test_the_search_box_shows_only_for_the_role(view: View) -> None:
    assert 'action="/addresses"' not in text(view.get("/", HTML | BOB))
    listed = text(view.get("/", HTML | CAROL))
    assert 'method="post" action="/addresses"' in listed  # a POST: the address never is in a URL


def test_without_a_web_config_nobody_sees_an_address() -> None:
    """As with start_deliveries: roles are held by verified users, and the open view has none."""
    open_view = View(Auth())
    quarantined(open_view.addresses.state)
    assert search(open_view, ADDRESS, {}).status == 403
    assert 'action="/addresses"' not in text(open_view.get("/", HTML))
    assert release_form(open_view, {}, None).status == 403
    assert open_view.publisher.records == [] and open_view.denied("release", "read_only") == 1


# -- the page -------------------------------------------------------------------------------------------------------
def test_the_page_shows_the_status_and_the_recipient_history(view: View) -> None:
    response = search(view, "  Jane@Example.COM ", CAROL)  # the normal address is the one looked up
    page = text(response)
    assert response.status == 200 and ("Cache-Control", "no-store") in response.headers
    assert view.addresses.state.asked == [ADDRESS]
    assert 'id="address-status">QUARANTINED<' in page
    for shown in ("HARD_ERROR", "user_unknown", moment(T0), "none by time alone", "e-hard"):
        assert shown in page
    rows = page.split('<table class="history">', 1)[1].split("</table>", 1)[0].split("<tr>")[2:]
    assert len(rows) == 2  # newest first: d1's message, then the older delivery's
    assert '<a href="/deliveries/d1">d1</a>' in rows[0] and "FAILED" in rows[0]
    assert "spring-old" in rows[1] and "<a " not in rows[1]  # the view lists no such delivery: no link
    assert [cell in rows[1] for cell in ("<td>yes</td>", "<td>no</td>")] == [True, True]  # opened, not clicked


def test_an_address_nobody_knows_is_a_no_record_page(view: View) -> None:
    response = search(view, "nobody@example.com", CAROL)
    assert response.status == 404 and 'id="no-record"' in text(response)
    assert ("Cache-Control", "no-store") in response.headers
    api = view.post(
        "/api/addresses/status", json.dumps({"address": "nobody@example.com"}).encode(), CAROL | {"content-type": JSON}
    )
    assert api.status == 404


def test_the_json_api_answers_the_record(view: View) -> None:
    body = json.dumps({"address": "JANE@example.com"}).encode()
    answer = view.post("/api/addresses/status", body, CAROL | {"content-type": JSON})
    assert answer.status == 200 and json.loads(text(answer)) == view.addresses.state.records[ADDRESS]
    assert view.post("/api/addresses/status", b"address=x", CAROL | {"content-type": FORM}).status == 415


@pytest.mark.parametrize("address", ["", "   ", "x" * 321 + "@example.com"])
def test_a_search_without_a_usable_address_is_a_400(view: View, address: str) -> None:
    assert search(view, address, CAROL).status == 400


# -- release --------------------------------------------------------------------------------------------------------
def test_the_release_button_shows_only_for_the_role(view: View) -> None:
    assert 'id="release"' not in text(search(view, ADDRESS, CAROL))
    assert 'id="release"' in text(search(view, ADDRESS, DAVE))
    view.addresses.state.learn("fine@example.com", Signal("e-ok", DELIVERED, T0, "d1", "m200"))
    assert 'id="release"' not in text(search(view, "fine@example.com", DAVE))  # a valid address: nothing to release


def test_a_release_publishes_the_signal_and_audits_the_address_only_by_its_hash(view: View) -> None:
    token = token_of(text(search(view, ADDRESS, DAVE)))
    with capture_logs() as logged:
        response = release_form(view, DAVE, token, address="Jane@Example.com")
    assert response.status == 200 and "Release sent" in text(response)
    assert ("Cache-Control", "no-store") in response.headers
    [(topic, key, value)] = view.publisher.records
    signal = AvroCodec.named(ADDRESS_SIGNAL).decode(value)
    assert (topic, key) == ("address.signals", ADDRESS.encode())
    assert (signal["kind"], signal["address"], signal["actor"]) == (RELEASE, ADDRESS, "dave")
    [done] = [line for line in logged if line["event"] == "web_action"]
    assert done["address_ref"] == address_ref(ADDRESS) and done["event_id"] == signal["event_id"]
    assert ADDRESS not in repr(logged) and "Jane" not in repr(logged)


def test_a_release_is_refused_without_the_role_or_a_good_token(view: View) -> None:
    dave = token_of(text(search(view, ADDRESS, DAVE)))
    assert release_form(view, CAROL, dave).status == 403  # dave's token is not carol's
    carol = Csrf(view.app.auth.secret).token(view.app.auth.identify(CAROL), "release", ADDRESS)  # a token of her own
    with capture_logs() as logged:
        refused = release_form(view, CAROL, carol)  # checked here, whatever the page showed
    assert refused.status == 403 and "Release addresses role" in text(refused)
    [line] = [line for line in logged if line["event"] == "web_action_denied"]
    assert (line["user"], line["reason"], line["address_ref"]) == ("carol", "missing_role", address_ref(ADDRESS))
    assert release_form(view, DAVE, None).status == 403  # no token
    assert release_form(view, DAVE, dave, address="other@example.com").status == 403  # another address's token
    assert (view.denied("release", "csrf_token"), view.denied("release", "missing_role")) == (3, 1)
    assert view.publisher.records == []


def test_a_release_form_from_another_site_is_refused(view: View) -> None:
    dave = token_of(text(search(view, ADDRESS, DAVE)))
    assert release_form(view, DAVE, dave, origin="https://evil.test").status == 403
    assert view.denied("release", "csrf_origin") == 1 and view.publisher.records == []


def test_the_json_api_releases_with_json_only(view: View) -> None:
    body = json.dumps({"address": ADDRESS}).encode()
    as_form = view.post("/api/addresses/release", b"address=jane%40example.com", DAVE | {"content-type": FORM})
    assert as_form.status == 415 and view.denied("release", "content_type") == 1
    assert view.post("/api/addresses/release", body, CAROL | {"content-type": JSON}).status == 403
    assert view.post("/api/addresses/release", body, {"content-type": JSON}).status == 401
    answer = view.post("/api/addresses/release", body, DAVE | {"content-type": JSON})
    assert answer.status == 202 and json.loads(text(answer))["event_id"]
    assert [(t, k) for t, k, _ in view.publisher.records] == [("address.signals", ADDRESS.encode())]


# -- where the record lives ----------------------------------------------------------------------------------------
def split_view(web_config: Path, owner_url: str, partition: int) -> View:
    """An instance that owns no address partition; the owner at `owner_url` owns `partition`."""
    return View(
        Auth(load_web_config(web_config)),
        addresses=address_placement(FakeAddressState(set()), Owners(lambda: {partition: owner_url})),
    )


def test_a_record_owned_elsewhere_is_asked_of_its_owner_and_the_page_made_here(web_config: Path) -> None:
    partition = address_partition(ADDRESS)
    owner = View(Auth(load_web_config(web_config)), addresses=address_placement(FakeAddressState({partition})))
    quarantined(owner.addresses.state)
    with serve(owner.app) as owner_url:
        here = split_view(web_config, owner_url, partition)
        page = text(search(here, ADDRESS, DAVE))
        assert 'id="address-status">QUARANTINED<' in page and owner.addresses.state.asked == [ADDRESS]
        response = release_form(here, DAVE, token_of(page))  # the page's token is this instance's
        assert response.status == 200 and len(here.publisher.records) == 1
        owner.addresses.state.partitions = set()  # the owner lost the partition: it says so, and this one too
        assert search(here, ADDRESS, DAVE).status == 503


def test_an_unreachable_owner_means_a_redirect_that_keeps_the_post(web_config: Path) -> None:
    with serve(View(Auth()).app) as gone:
        pass
    partition = address_partition(ADDRESS)
    here = split_view(web_config, gone, partition)
    redirected = search(here, ADDRESS, CAROL)
    location = dict(redirected.headers)["Location"]
    assert redirected.status == 307 and location.startswith(gone + "/addresses?")  # 307: the browser posts again
    assert "routed=1" in urlsplit(location).query and "jane" not in location
    routed = here.app.handle(
        request(
            "/addresses",
            "POST",
            query={"routed": ["1"]},
            headers=CAROL | HTML | {"content-type": FORM},
            body=b"address=jane%40example.com",
        )
    )
    assert routed is not None and routed.status == 503 and "not here" in text(routed)  # never sent on again


def test_nobody_owning_the_partition_is_a_503_not_an_error(web_config: Path) -> None:
    here = View(Auth(load_web_config(web_config)), addresses=address_placement(FakeAddressState(set()), Owners(dict)))
    answer = search(here, ADDRESS, CAROL)
    assert answer.status == 503 and "No instance owns partition" in text(answer)


def test_an_unknown_topic_is_a_503(web_config: Path) -> None:
    def no_topic() -> int:
        raise LookupError("address.signals: no such topic")  # as owners.topic_partition_count says it

    placement = AddressPlacement(FakeAddressState(), None, KeyPartitions(no_topic, "consistent_random"))
    here = View(Auth(load_web_config(web_config)), addresses=placement)
    assert search(here, ADDRESS, CAROL).status == 503


def test_without_the_quarantine_there_are_no_address_pages(web_config: Path) -> None:
    view = View(Auth(load_web_config(web_config)), quarantine=False)
    assert search(view, ADDRESS, CAROL).status == 404
    assert view.post("/api/addresses/release", b"{}", CAROL | {"content-type": JSON}).status == 404
    assert 'action="/addresses"' not in text(view.get("/", HTML | CAROL))
    assert json.loads(text(view.get("/api/instance")))["address_partitions"] == []


def test_a_search_posted_by_another_site_is_refused(view: View) -> None:
    headers = CAROL | HTML | {"content-type": FORM, "origin": "https://evil.test"}
    assert view.post("/addresses", b"address=jane%40example.com", headers).status == 403
    assert view.addresses.state.asked == []


def test_errors_never_mention_the_address_in_logs(view: View) -> None:
    with capture_logs() as logged:
        search(view, ADDRESS, CAROL)
        search(view, "nobody@example.com", CAROL)
    assert [line["address_ref"] for line in logged if line["event"] == "address_viewed"] == [
        address_ref(ADDRESS),
        address_ref("nobody@example.com"),
    ]
    assert "example.com" not in repr(logged)


def test_a_request_claiming_to_come_from_a_peer_is_audited_all_the_same(view: View) -> None:
    headers = CAROL | HTML | {"content-type": FORM, FORWARDED_HEADER: "1"}
    with capture_logs() as logged:
        assert view.post("/addresses", b"address=jane%40example.com", headers).status == 200
    assert [(line["user"], line["address_ref"]) for line in logged if line["event"] == "address_viewed"] == [
        ("carol", address_ref(ADDRESS))
    ]
