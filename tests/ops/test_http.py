"""The instance's HTTP server on its own: routes, HEAD, bounds, methods, a handler, streaming, disconnects, TLS."""

from __future__ import annotations

import http.client
import io
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from consumer.ops import logging as logs
from consumer.ops.exchange import Request, Response
from consumer.ops.http import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_LINE_BYTES, Limits, OpsServer, StatusSource
from tests.reliability.proxy import make_certificates

HOST = "127.0.0.1"
TIMEOUT_S = 5.0
KPI = {"delivery_id": "d1", "sent": 9}
_BIG_HEADER = b"X-Some: " + b"a" * 4000 + b"\r\n"  # each small enough, too many bytes together


class Status:
    """A StatusSource's answers, changeable by a test."""

    def __init__(self) -> None:
        self.ready, self.alive = (True, "assigned and restored"), (True, "alive")

    def source(self) -> StatusSource:
        return StatusSource(lambda: self.ready, lambda d: KPI if d == "d1" else None, lambda: self.alive)


class Pages:
    """A fake page handler: /page echoes what it was given, /stream streams, /boom fails, the rest is not its."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.release = threading.Event()  # /stream's second part waits for it
        self.closed = threading.Event()  # set when the server closed the stream

    def handle(self, request: Request) -> Response | None:
        self.requests.append(request)
        if request.path == "/deliveries/taken":
            return Response(200, b"page", "text/html")
        if request.path.startswith("/page"):
            seen = {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "body": request.body.decode(),
            }
            return Response(201, json.dumps(seen).encode(), headers=[("X-Page", "yes")])
        if request.path == "/stream":
            return Response(200, self._stream(), "text/event-stream")
        if request.path == "/boom":
            raise RuntimeError("a bug in a page")
        return None

    def _stream(self) -> Iterator[bytes]:
        try:
            yield b"data: first\n\n"
            assert self.release.wait(TIMEOUT_S)
            for n in range(1000):  # more than socket buffers hold: a client that left is noticed
                yield f"data: {n}\n\n".encode() * 100
        finally:
            self.closed.set()


@pytest.fixture
def status() -> Status:
    return Status()


@pytest.fixture
def pages() -> Pages:
    return Pages()


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    """Everything the server logs, as JSON lines."""
    lines = io.StringIO()
    logs.configure(json=True, stream=lines)
    yield lines
    logs.configure()


def start(status: Status, pages: Pages | None = None, tls: ssl.SSLContext | None = None) -> OpsServer:
    registry = CollectorRegistry()
    Counter("sendtrack_test_total", "a counter", registry=registry).inc()
    return OpsServer(0, registry, status.source(), host=HOST, handler=pages, tls=tls).start()


@pytest.fixture
def server(status: Status, pages: Pages) -> Iterator[OpsServer]:
    running = start(status, pages)
    yield running
    running.stop()


@pytest.fixture
def bare(status: Status) -> Iterator[OpsServer]:
    """No page handler: what an instance serves on its own."""
    running = start(status)
    yield running
    running.stop()


def call(server: OpsServer, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    connection = http.client.HTTPConnection(HOST, server.port, timeout=TIMEOUT_S)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def raw(server: OpsServer, data: bytes) -> tuple[int, dict[str, Any]]:
    """Send bytes as they are; the status and JSON body of the answer."""
    with socket.create_connection((HOST, server.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def logged(lines: io.StringIO, event: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        found = [entry for entry in map(json.loads, lines.getvalue().splitlines()) if entry["event"] == event]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


# -- the server's own routes ----------------------------------------------------------------------
def test_own_routes_answer_as_before(bare: OpsServer, status: Status) -> None:
    status_code, headers, body = call(bare, "GET", "/metrics")
    assert status_code == 200 and "sendtrack_test_total 1.0" in body.decode()
    assert headers["Content-Type"].startswith("text/plain")
    assert call(bare, "GET", "/healthz")[::2] == (200, b'{"status": "alive", "detail": "alive"}')
    assert json.loads(call(bare, "GET", "/readyz")[2]) == {"ready": True, "detail": "assigned and restored"}
    assert json.loads(call(bare, "GET", "/deliveries/d1")[2]) == KPI
    assert call(bare, "GET", "/deliveries/d2")[::2] == (404, b'{"error": "delivery not owned by this instance"}')
    assert call(bare, "GET", "/nothing-here")[::2] == (404, b'{"error": "not found"}')
    status.ready, status.alive = (False, "restoring"), (False, "no progress for 130 s")
    assert call(bare, "GET", "/readyz")[0] == 503
    assert json.loads(call(bare, "GET", "/healthz?verbose=1")[2]) == {
        "status": "stuck",
        "detail": "no progress for 130 s",
    }


def test_the_server_binds_the_given_address_and_every_address_by_default(bare: OpsServer, status: Status) -> None:
    assert bare.host == HOST
    everywhere = OpsServer(0, CollectorRegistry(), status.source())
    try:
        assert everywhere.host == "0.0.0.0"
    finally:
        everywhere.stop()


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/deliveries/d1", "/page", "/nothing-here"])
def test_head_has_the_get_headers_and_no_body(server: OpsServer, path: str) -> None:
    got_status, got_headers, got_body = call(server, "GET", path)
    status, headers, body = call(server, "HEAD", path)
    assert (status, body) == (got_status, b"")
    assert {k: v for k, v in headers.items() if k != "Date"} == {k: v for k, v in got_headers.items() if k != "Date"}
    assert int(headers["Content-Length"]) == len(got_body) > 0


# -- methods and bounds ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"])
def test_other_methods_are_405_with_json(server: OpsServer, method: str) -> None:
    status, headers, body = call(server, method, "/page")
    assert (status, headers["Allow"], headers["Content-Type"]) == (405, "GET, HEAD, POST", "application/json")
    assert json.loads(body) == {"error": f"method {method} not allowed"}


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/deliveries/d1"])
def test_the_servers_own_routes_take_no_post(bare: OpsServer, path: str) -> None:
    status, headers, _ = call(bare, "POST", path, body=b"x")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")


@pytest.mark.parametrize(
    ("request_bytes", "code", "message"),
    [
        (b"GET /" + b"a" * MAX_LINE_BYTES + b" HTTP/1.1\r\n\r\n", 414, "request line too long"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * MAX_LINE_BYTES + b"\r\n\r\n", 431, "request headers too large"),
        (b"GET / HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n", 431, "request headers too large"),
        (
            b"GET / HTTP/1.1\r\n" + _BIG_HEADER * (MAX_HEADER_BYTES // len(_BIG_HEADER) + 1) + b"\r\n",
            431,
            "request headers too large",
        ),
        (b"POST /page HTTP/1.1\r\nContent-Length: 65537\r\n\r\n", 413, f"request body over {MAX_BODY_BYTES} bytes"),
        (b"POST /page HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400, "bad Content-Length"),
        (b"POST /page HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, "bad Content-Length"),
        (b"POST /page HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411, "a body needs a Content-Length"),
        (b"GARBAGE\r\n\r\n", 400, "Bad request syntax ('GARBAGE')"),
        (b"GET / HTTP/x.y\r\n\r\n", 400, "Bad request version ('HTTP/x.y')"),
        (b"GET /\r\n\r\n", 400, "HTTP/0.9 requests are not supported"),
    ],
)
def test_oversized_and_malformed_requests_get_json_errors(
    server: OpsServer, pages: Pages, request_bytes: bytes, code: int, message: str
) -> None:
    assert raw(server, request_bytes) == (code, {"error": message})
    assert pages.requests == []


def test_a_body_at_the_limit_is_accepted(server: OpsServer, pages: Pages) -> None:
    status, _, _ = call(server, "POST", "/page", body=b"a" * MAX_BODY_BYTES)
    assert status == 201 and len(pages.requests[0].body) == MAX_BODY_BYTES


# -- the page handler -----------------------------------------------------------------------------
def test_the_handler_gets_every_other_request_as_an_exchange_request(server: OpsServer, pages: Pages) -> None:
    status, headers, body = call(
        server, "POST", "/page%20one?x=1&x=2&empty=", body=b"form=1", headers={"X-Custom": "A", "x-custom": "B"}
    )
    assert (status, headers["X-Page"]) == (201, "yes")
    assert json.loads(body) == {
        "method": "POST",
        "path": "/page one",
        "query": {"x": ["1", "2"], "empty": [""]},
        "body": "form=1",
    }
    [request] = pages.requests
    assert request.headers["x-custom"] == "A, B" and request.headers["content-length"] == "6"
    assert request.client.startswith(f"{HOST}:") and request.secure is False
    call(server, "HEAD", "/page")
    assert pages.requests[-1].method == "GET"  # HEAD is answered from the GET response
    for path in ("/metrics", "/healthz", "/readyz"):
        call(server, "GET", path)
    assert {r.path for r in pages.requests} == {"/page one", "/page"}


def test_deliveries_go_to_the_handler_alone_and_without_one_to_the_instance(server: OpsServer, bare: OpsServer) -> None:
    assert call(server, "GET", "/deliveries/taken")[::2] == (200, b"page")
    assert call(server, "GET", "/deliveries/d1")[0] == 404  # the handler checks who asks: nothing goes around it
    assert json.loads(call(bare, "GET", "/deliveries/d1")[2]) == KPI


def test_a_failing_handler_is_a_json_500_and_one_log_line(server: OpsServer, log: io.StringIO) -> None:
    assert call(server, "GET", "/boom")[::2] == (500, b'{"error": "internal error"}')
    [entry] = logged(log, "http_handler_failed")
    assert entry["path"] == "/boom" and "a bug in a page" in entry["exception"]


def test_a_streamed_body_goes_out_chunk_by_chunk(server: OpsServer, pages: Pages) -> None:
    with socket.create_connection((HOST, server.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"data: first\n\n" not in received:  # arrives while the stream still waits to go on
            received += sock.recv(65536)
        assert b"HTTP/1.0 200" in received and b"Content-Type: text/event-stream" in received
        pages.release.set()
        while chunk := sock.recv(65536):
            received += chunk
    assert received.endswith(b"data: 999\n\n" * 100)
    assert pages.closed.wait(TIMEOUT_S)


def test_a_client_leaving_mid_stream_is_one_log_line_and_no_traceback(
    server: OpsServer, pages: Pages, log: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    sock = socket.create_connection((HOST, server.port), timeout=TIMEOUT_S)
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    while b"data: first" not in sock.recv(65536):
        pass
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST
    pages.release.set()
    assert pages.closed.wait(TIMEOUT_S)  # the stream was stopped and closed
    [entry] = logged(log, "http_client_left")
    assert entry["error"] in {"ConnectionResetError", "BrokenPipeError"} and entry["client"].startswith(HOST)
    assert len(log.getvalue().splitlines()) == 1
    assert "Traceback" not in capfd.readouterr().err


# -- TLS ------------------------------------------------------------------------------------------
def test_tls_serves_trusting_clients_and_a_failed_handshake_is_one_log_line(
    status: Status, pages: Pages, tmp_path: Path, log: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    certificates = make_certificates(tmp_path)
    server = start(status, pages, tls=certificates.server_context())
    try:
        connection = http.client.HTTPSConnection(
            HOST, server.port, timeout=TIMEOUT_S, context=certificates.client_context()
        )
        try:
            connection.request("GET", "/page")
            assert connection.getresponse().status == 201
        finally:
            connection.close()
        assert pages.requests[0].secure is True
        with pytest.raises((ConnectionError, http.client.HTTPException)):  # plaintext to the TLS port: no answer
            call(server, "GET", "/healthz")
        [entry] = logged(log, "http_tls_failed")
        assert entry["client"].startswith(HOST)
        assert "Traceback" not in capfd.readouterr().err
    finally:
        server.stop()


def test_a_flood_of_idle_connections_is_capped_and_the_server_answers_again_once_they_go(status, log) -> None:
    """Every connection holds a thread for up to IO_TIMEOUT_S: without a cap, enough idle clients would exhaust
    the process's threads. Past the cap a new connection is closed at once (one log line per 10 s)."""
    server = OpsServer(0, CollectorRegistry(), status.source(), host=HOST, limits=Limits(3, reserved=1)).start()
    idle = [socket.create_connection((HOST, server.port), timeout=TIMEOUT_S) for _ in range(4)]
    try:
        time.sleep(0.2)  # the server has taken them
        with socket.create_connection((HOST, server.port), timeout=TIMEOUT_S) as refused:
            assert refused.recv(1) == b""  # closed without an answer, not left waiting
        assert logged(log, "http_connections_refused")
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:  # the idle clients' threads end as their sockets close
        try:
            if call(server, "GET", "/healthz")[0] == 200:
                break
        except (ConnectionError, http.client.HTTPException):
            time.sleep(0.05)
    assert call(server, "GET", "/healthz")[0] == 200
    server.stop()


# -- review hole 3: slow clients and many streams made /healthz and /readyz unreachable -------------------------
def trickle(port: int, lines: int, pause_s: float, source: str = HOST) -> socket.socket:
    """A slow-header client: a request line, then one header line every pause_s (in a thread of its own)."""
    sock = socket.create_connection((HOST, port), timeout=TIMEOUT_S, source_address=(source, 0))

    def send() -> None:
        try:
            sock.sendall(b"GET /page HTTP/1.1\r\n")
            for n in range(lines):
                time.sleep(pause_s)
                sock.sendall(f"X-Slow-{n}: 1\r\n".encode())
            sock.sendall(b"\r\n")
        except OSError:  # the server gave up on it
            pass

    threading.Thread(target=send, daemon=True).start()
    return sock


def test_a_request_that_trickles_past_the_deadline_is_answered_408(status: Status, pages: Pages) -> None:
    server = OpsServer(
        0, CollectorRegistry(), status.source(), host=HOST, handler=pages, limits=Limits(deadline_s=0.5)
    ).start()
    try:
        with trickle(server.port, lines=10, pause_s=0.2) as slow:  # 2 s of headers, every line within the I/O timeout
            answer = slow.recv(65536)
        assert answer.split()[1] == b"408" and not pages.requests
    finally:
        server.stop()


def test_a_full_server_still_answers_its_own_paths_and_one_client_cannot_fill_it(status: Status, pages: Pages) -> None:
    limits = Limits(connections=4, per_client=3, reserved=2, deadline_s=30)
    server = OpsServer(0, CollectorRegistry(), status.source(), host=HOST, handler=pages, limits=limits).start()
    slow = [trickle(server.port, 100, 0.2, source) for source in ("127.0.0.1",) * 3 + ("127.0.0.2",)]
    try:
        time.sleep(0.3)  # every general slot is held; 127.0.0.1 is at its own cap as well
        with socket.create_connection((HOST, server.port), timeout=TIMEOUT_S) as refused:
            assert refused.recv(1) == b""  # a fourth from the same address: closed at once
        other = ("127.0.0.3", 0)
        for path in ("/healthz", "/readyz", "/metrics"):
            with socket.create_connection((HOST, server.port), timeout=TIMEOUT_S, source_address=other) as probe:
                probe.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert probe.recv(65536).split()[1] == b"200", path
        with socket.create_connection((HOST, server.port), timeout=TIMEOUT_S, source_address=other) as page:
            page.sendall(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
            assert page.recv(65536).split()[1] == b"503"  # a reserved slot is for the probes only
    finally:
        for sock in slow:
            sock.close()
        server.stop()
