"""What the security review found, each attack reproduced against the served view (two instances where it matters).

Every test here failed before its fix.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import bcrypt
import pytest

from consumer.ops import logging as logs
from consumer.ops.exchange import Response
from consumer.web.auth import BEARER, Auth, Identity, load_web_config
from consumer.web.csrf import FORM, Csrf
from consumer.web.owners import Owners
from tests.web.fakes import Recorder, View, basic, kpi, request, write_web_config
from tests.web.serving import serve

ALICE = basic("alice", "alice-pw")  # start_deliveries
BOB = basic("bob", "bob-pw")  # viewer
HTML = {"accept": "text/html"}


@pytest.fixture(scope="module")
def web_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_web_config(tmp_path_factory.mktemp("web"))


@pytest.fixture
def view(web_config: Path) -> View:
    return View(Auth(load_web_config(web_config)))


def fetch(url: str, path: str, headers: dict[str, str] | None = None, method: str = "GET", body: bytes = b""):
    """A request with the path sent byte for byte as given (no client-side normalisation)."""
    parts = url.split("//", 1)[1]
    connection = http.client.HTTPConnection(parts, timeout=5)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            connection.putheader(name, value.encode())  # UTF-8 as given: a header may carry any bytes
        connection.endheaders(body)
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


# -- 1. an id no route matched reached the server's fallback, which checks nobody ------------------------------
@pytest.mark.parametrize("delivery_id", ["d1\n", "a\nb", "x/y", ".."])
def test_any_delivery_id_reaches_the_view_and_its_auth_check(view: View, delivery_id: str) -> None:
    view.kpis.apply(0, kpi(delivery_id))
    view.owner_state.kpis[delivery_id] = kpi(delivery_id)  # what the instance's own fallback served
    with serve(view.app) as url:
        path = "/deliveries/" + quote(delivery_id, safe="")
        assert fetch(url, path)[0] == 401  # no credentials: never the KPI
        assert fetch(url, "/deliveries/" + quote("never-seen\n", safe=""))[0] == 401  # nor a probe of existence
        status, _, body = fetch(url, path, BOB)
        assert status == 200 and json.loads(body)["delivery_id"] == delivery_id


# -- 2. ids in links and forms kept '/' unencoded: the browser resolved '..' to another delivery ---------------------
def test_a_form_on_a_tricky_ids_page_acts_on_that_delivery_only(view: View) -> None:
    tricky = "../deliveries/d2"  # d2 awaits confirmation too
    view.kpis.apply(0, kpi(tricky, state="AWAITING_CONFIRMATION"))
    with serve(view.app) as url:
        page_path = "/deliveries/" + quote(tricky, safe="")
        status, _, page = fetch(url, page_path, ALICE | HTML)
        assert status == 200
        action = page.decode().split('<form method="post" action="', 1)[1].split('"', 1)[0]
        token = page.decode().split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        posted = urljoin(url + page_path, action)  # what a browser posts to: dot segments resolved
        status, _, _ = fetch(
            url, urlsplit(posted).path, ALICE | {"content-type": FORM}, "POST", f"csrf_token={token}".encode()
        )
    assert status == 303
    assert [key for _, key, _ in view.publisher.records] == [tricky.encode()]


# -- 5. numbers in other scripts or thousands of digits were a 500 with a traceback, or a dropped connection ---------
MALFORMED = ["²", "١٢", "9" * 5000, "-1", "0x10"]


@pytest.mark.parametrize("number", MALFORMED)
def test_malformed_numbers_are_400_and_log_no_error(view: View, number: str, capfd: pytest.CaptureFixture) -> None:
    with serve(view.app) as url:
        for path in (
            f"/api/deliveries/d1/failed?limit={quote(number)}",
            f"/events?cursor={quote('abcd:' + number)}",
        ):
            status, _, body = fetch(url, path, BOB)
            assert status == 400, (path, body)
        status, _, body = fetch(url, "/page", BOB | {"Content-Length": number}, "POST", b"")
        assert status == 400 and json.loads(body) == {"error": "bad Content-Length"}
    assert "Traceback" not in capfd.readouterr().err


# -- 4. the decoy had a fixed cost: an unknown name answered faster (or slower) than a wrong password --------------
def test_an_unknown_user_costs_what_a_known_one_does(view: View, monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[bytes] = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda password, hashed: checked.append(hashed) or real(password, hashed))
    assert view.get("/api/deliveries", basic("mallory", "guess")).status == 401
    assert view.get("/api/deliveries", basic("alice", "guess")).status == 401
    decoy, alices = checked
    assert decoy != alices and decoy[:7] == alices[:7] == b"$2b$04$"  # the file's cost (fakes hash at 4)


# -- 6. CSRF tokens were bound to the user name only, good for 12 h anywhere, keyed by a digest of the config file --
def test_a_csrf_token_is_good_for_its_sign_in_action_and_delivery_only(view: View, web_config: Path) -> None:
    page = view.get("/deliveries/d2", HTML | ALICE).body.decode()
    compute_d2 = page.split('action="/deliveries/d2/compute-stats"', 1)[1].split('value="', 1)[1].split('"', 1)[0]
    as_jwt_alice = Csrf(view.app.auth.secret).token(Identity("alice", frozenset(), BEARER), "confirm", "d2")

    def confirm(delivery_id: str, token: str) -> int:
        body = f"csrf_token={token}".encode()
        return view.post(f"/deliveries/{delivery_id}/confirm", body, ALICE | {"content-type": FORM}).status

    assert confirm("d2", as_jwt_alice) == 403  # issued to the bearer user alice, not to the Basic user alice
    assert confirm("d2", compute_d2) == 403  # another action
    view.kpis.apply(0, kpi("d3", state="AWAITING_CONFIRMATION"))
    confirm_d2 = page.split('action="/deliveries/d2/confirm"', 1)[1].split('value="', 1)[1].split('"', 1)[0]
    assert confirm("d3", confirm_d2) == 403  # another delivery
    assert view.publisher.records == []
    assert confirm("d2", confirm_d2) == 303
    file_digest = hashlib.sha256(b"sendtrack-web\0" + web_config.read_bytes()).digest()
    assert view.app.auth.secret != file_digest  # whoever reads the file cannot mint tokens


# -- 7. forwarding passed Cookie and Proxy-Authorization on, and the owner's answer lacked our headers -------------
def test_forwarding_keeps_credentials_for_us_and_the_answer_carries_our_headers() -> None:
    owner = Recorder(
        Response(200, b"<p>owner</p>", "text/html", [("Set-Cookie", "s=1"), ("X-Content-Type-Options", "")])
    )
    with serve(owner) as owner_url:
        here = View(Auth(), owners=Owners(lambda: {0: owner_url}), owned=set())
        extra = {"cookie": "session=abc", "proxy-authorization": "Basic cHJveHk6cHc=", "authorization": "Bearer t"}
        answer = here.get("/deliveries/d1", HTML | extra)
    [forwarded] = owner.requests
    assert "cookie" not in forwarded.headers and "proxy-authorization" not in forwarded.headers
    assert forwarded.headers["authorization"] == "Bearer t"  # the owner checks who asks itself
    headers = dict(answer.headers)
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert headers["X-Content-Type-Options"] == "nosniff" and "Set-Cookie" not in headers


def test_json_is_nosniff_everywhere_and_tls_answers_carry_hsts(view: View) -> None:
    plain = dict(view.get("/api/deliveries", BOB).headers)
    assert plain["X-Content-Type-Options"] == "nosniff" and "Strict-Transport-Security" not in plain
    over_tls = view.app.handle(request("/api/deliveries", headers=BOB, secure=True))
    assert dict(over_tls.headers)["Strict-Transport-Security"] == "max-age=31536000"


# -- 8. failed sign-ins left no trace and had no limit; actions had none; Basic over HTTP and /metrics said nothing --
@pytest.fixture
def log() -> Iterator[io.StringIO]:
    lines = io.StringIO()
    logs.configure(json=True, stream=lines)
    yield lines
    logs.configure()


def events(lines: io.StringIO, event: str) -> list[dict]:
    return [entry for entry in map(json.loads, lines.getvalue().splitlines()) if entry["event"] == event]


def test_failed_sign_ins_are_logged_counted_and_limited(view: View, log: io.StringIO, monkeypatch) -> None:
    statuses = [view.get("/api/deliveries", basic("alice", f"guess-{n}")).status for n in range(75)]
    assert statuses == [401] * 10 + [429] * 65
    lines = events(log, "web_login_failed")
    assert len(lines) == 75 and {e["user"] for e in lines} == {"alice"} and "guess" not in log.getvalue()
    assert view.registry.get_sample_value("sendtrack_web_failed_logins_total", {"method": "basic"}) == 75
    checked: list[bytes] = []
    monkeypatch.setattr(bcrypt, "checkpw", lambda *args: checked.append(args[1]) or False)
    assert view.app.handle(request("/api/deliveries", headers=basic("bob", "x"))).status == 429  # same address
    assert checked == []  # a throttled guess costs no bcrypt
    elsewhere = request("/api/deliveries", headers=basic("alice", "alice-pw"), client="10.0.0.9:1")
    assert view.app.handle(elsewhere).status == 429  # the name is limited from any address


def test_actions_are_rate_limited_per_user(view: View) -> None:
    post = [
        view.post("/api/deliveries/d1/compute-stats", b"{}", BOB | {"content-type": "application/json"}).status
        for _ in range(40)
    ]
    assert post == [202] * 30 + [429] * 10 and len(view.publisher.records) == 30
    assert view.denied("compute-stats", "rate_limited") == 10


def test_basic_auth_without_tls_and_a_per_process_secret_are_warned_at_start(web_config: Path, log) -> None:
    Auth(load_web_config(web_config))
    warnings = [e["warning"] for e in events(log, "web_config_warning")]
    assert any("Basic auth without TLS" in w for w in warnings) and any("sendtrack_secret_file" in w for w in warnings)


def test_metrics_can_be_protected_and_the_probes_never_are(tmp_path: Path) -> None:
    config = write_web_config(tmp_path)
    config.write_text(config.read_text() + "sendtrack_protect_metrics: true\n")
    protected = View(Auth(load_web_config(config)))
    with serve(protected.app) as url:
        assert fetch(url, "/metrics")[0] == 401
        assert fetch(url, "/metrics", BOB)[0] == 200
        assert fetch(url, "/healthz")[0] == fetch(url, "/readyz")[0] == 200
    (tmp_path / "open").mkdir()
    with serve(View(Auth(load_web_config(write_web_config(tmp_path / "open")))).app) as url:
        assert fetch(url, "/metrics")[0] == 200  # open unless the file says: scrapers need no change
