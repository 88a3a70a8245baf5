"""One small HTTP server per instance: /metrics, /healthz, /readyz, and every other path through a page handler.

The server owns the HTTP (ops/exchange.py says what a page handler sees). It bounds and parses requests: a
request line over 8 KiB is 414; a header line over 8 KiB, more than 16 KiB or 100 headers in all, 431; a body over
64 KiB, 413 (a body needs a Content-Length: 411); anything malformed, 400; a method other than GET, HEAD and POST,
405. Every error body is JSON. HEAD is answered from the GET response without its body. /metrics, /healthz and
/readyz are the server's own; any other request goes to the optional `exchange.Handler` (a path it does not
take is 404); without a handler, /deliveries/<id> answers the instance's own KPI. A client that leaves, times
out or fails the TLS handshake is one structured log line, not a traceback on stderr. Each response ends its
connection (HTTP/1.0), which is also how a streamed body ends.

Connections are bounded (`Limits`): a whole request must arrive within a deadline (else 408), one address holds
at most `per_client` connections, and past `connections` a few more are accepted for /metrics, /healthz and
/readyz only (anything else on them is 503), so a flood cannot make an instance look dead to its orchestrator.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import ssl
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from consumer.ops import logging as logs
from consumer.ops.exchange import Handler, MetricsGuard, Request, Response, count

MAX_LINE_BYTES = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
MAX_BODY_BYTES = 64 * 1024
IO_TIMEOUT_S = 30.0  # a client that sends or reads nothing for this long is dropped
REQUEST_DEADLINE_S = 10.0  # the whole request (line, headers, body) must arrive within this, however it trickles
# Each connection has a thread (live views keep theirs): past this many, new ones are closed at once, so a flood
# of connections cannot exhaust the process's threads and memory.
MAX_CONNECTIONS = 256
MAX_PER_CLIENT = 32  # connections of one address: one viewer's event streams cannot take every slot
# Connections past MAX_CONNECTIONS that may only ask /metrics, /healthz or /readyz: a full server still answers its
# orchestrator and Prometheus, so a flood does not get a healthy instance restarted.
RESERVED_CONNECTIONS = 16
METHODS = ("GET", "HEAD", "POST")
GENERAL, RESERVE = "general", "reserve"
OWN_PATHS = ("/metrics", "/healthz", "/readyz")
DELIVERIES = "/deliveries/"


@dataclass(frozen=True)
class Limits:
    connections: int = MAX_CONNECTIONS
    per_client: int = MAX_PER_CLIENT
    reserved: int = RESERVED_CONNECTIONS  # for OWN_PATHS only, past `connections`
    deadline_s: float = REQUEST_DEADLINE_S


class StatusSource:
    """What the server asks the service; plain callables keep the server ignorant of the service."""

    def __init__(
        self,
        ready: Callable[[], tuple[bool, str]],
        delivery_kpi: Callable[[str], dict[str, Any] | None],
        alive: Callable[[], tuple[bool, str]] = lambda: (True, "alive"),
    ) -> None:
        self.ready = ready
        self.delivery_kpi = delivery_kpi
        self.alive = alive  # False when the main loop is stuck (the watchdog's view)


class OpsServer:
    def __init__(
        self,
        port: int,
        registry: CollectorRegistry,
        source: StatusSource,
        host: str = "0.0.0.0",
        handler: Handler | None = None,
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._server = _Server((host, port), _Routes(registry, source, handler), tls, limits or Limits())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="ops-http", daemon=True
        )

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() would wait forever for a loop that never ran
            self._server.shutdown()
        self._server.server_close()


def json_response(status: int, body: dict[str, Any], headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(body).encode(), headers=headers or [])


def error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


def _not_allowed(method: str, allowed: str) -> Response:
    return error(HTTPStatus.METHOD_NOT_ALLOWED, f"method {method} not allowed", [("Allow", allowed)])


class _Routes:
    """Which response a request gets: no HTTP machinery here."""

    def __init__(self, registry: CollectorRegistry, source: StatusSource, handler: Handler | None) -> None:
        self._registry = registry
        self._source = source
        self._handler = handler

    def respond(self, request: Request) -> Response:
        if request.path in OWN_PATHS:
            return self._own(request)
        if self._handler is not None:  # it owns every other path, and checks who asks: no fallback around it
            return self._handler.handle(request) or error(HTTPStatus.NOT_FOUND, "not found")
        if request.path.startswith(DELIVERIES):
            return self._delivery(request)
        return error(HTTPStatus.NOT_FOUND, "not found")

    def _own(self, request: Request) -> Response:
        if request.method != "GET":
            return _not_allowed(request.method, "GET, HEAD")
        if request.path == "/metrics":
            refusal = self._handler.metrics_refusal(request) if isinstance(self._handler, MetricsGuard) else None
            return refusal or Response(HTTPStatus.OK, generate_latest(self._registry), CONTENT_TYPE_LATEST)
        if request.path == "/healthz":
            alive, detail = self._source.alive()
            return json_response(200 if alive else 503, {"status": "alive" if alive else "stuck", "detail": detail})
        ready, detail = self._source.ready()
        return json_response(200 if ready else 503, {"ready": ready, "detail": detail})

    def _delivery(self, request: Request) -> Response:
        if request.method != "GET":
            return _not_allowed(request.method, "GET, HEAD")
        kpi = self._source.delivery_kpi(request.path[len(DELIVERIES) :])
        if kpi is None:
            return error(HTTPStatus.NOT_FOUND, "delivery not owned by this instance")
        return json_response(HTTPStatus.OK, kpi)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], routes: _Routes, tls: ssl.SSLContext | None, limits: Limits) -> None:
        self.routes = routes
        self.limits = limits
        self._tls = tls
        self._slots = {
            GENERAL: threading.BoundedSemaphore(limits.connections),
            RESERVE: threading.BoundedSemaphore(limits.reserved),
        }
        self._kinds: dict[Any, tuple[str, str]] = {}  # connection -> (slot kind, client address)
        self._per_client: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._refusals = logs.Throttle()  # a flood is one line per 10 s, not one per connection
        super().__init__(address, _Exchange)

    def process_request(self, request: Any, client_address: Any) -> None:
        kind = self._admit(client_address[0])
        if kind is None:
            self._log_refusal(client_address)
            self.shutdown_request(request)
            return
        with self._lock:
            self._kinds[request] = (kind, client_address[0])
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def reserved(self, request: Any) -> bool:
        """The connection holds a reserved slot: it may ask the server's own paths only."""
        with self._lock:
            return self._kinds.get(request, (GENERAL, ""))[0] == RESERVE

    def _admit(self, client: str) -> str | None:
        """A general slot, else a reserved one, within the client's own cap; None when refused."""
        with self._lock:
            if self._per_client[client] >= self.limits.per_client:
                return None
            for kind in (GENERAL, RESERVE):
                if self._slots[kind].acquire(blocking=False):
                    self._per_client[client] += 1
                    return kind
        return None

    def _release(self, request: Any) -> None:
        with self._lock:
            kind, client = self._kinds.pop(request)
            self._slots[kind].release()
            self._per_client[client] -= 1
            if not self._per_client[client]:
                del self._per_client[client]

    def _log_refusal(self, client_address: Any) -> None:
        if self._refusals.allows("refused"):
            logs.get("sendtrack.http").warning("http_connections_refused", client=client_address[0])

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self._tls is not None:
            # The handshake happens in the request's own thread (_Exchange.setup), never in the accepting one.
            sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One structured line instead of socketserver's traceback on stderr."""
        exc = sys.exc_info()[1]
        client = f"{client_address[0]}:{client_address[1]}"
        log = logs.get("sendtrack.http")
        if isinstance(exc, ssl.SSLError):
            log.info("http_tls_failed", client=client, error=exc.reason or str(exc))
        elif isinstance(exc, ConnectionError | TimeoutError):
            log.info("http_client_left", client=client, error=type(exc).__name__)
        else:
            log.error("http_request_failed", client=client, exc_info=exc)


class _Exchange(BaseHTTPRequestHandler):
    server: _Server
    timeout = IO_TIMEOUT_S
    server_version = "sendtrack"
    sys_version = ""
    default_request_version = "HTTP/1.0"  # errors about a malformed request line still get a status line

    def setup(self) -> None:
        super().setup()
        # A client that trickles its request (a header line a second) would hold its slot for ever under the I/O
        # timeout alone: past the deadline, reading ends and the request is answered 408.
        self._late = threading.Event()
        self._deadline = threading.Timer(self.server.limits.deadline_s, self._expire)
        self._deadline.daemon = True
        self._deadline.start()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def _expire(self) -> None:
        self._late.set()
        with contextlib.suppress(OSError):  # already closed
            self.connection.shutdown(socket.SHUT_RD)  # the blocked read returns; the answer can still be written

    def handle_one_request(self) -> None:
        if self._read_head():
            self._exchange()
            self.wfile.flush()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's error pages, as JSON."""
        self.close_connection = True
        self._send(error(code, message or HTTPStatus(code).phrase))

    def log_message(self, *_args: Any) -> None:  # scrapes are not news; failures go through handle_error
        return

    # -- reading -----------------------------------------------------------------------------------
    def _read_head(self) -> bool:
        """Read the request line and headers within bounds, then parse them; False when nothing is to be answered."""
        self.close_connection = True
        line = self.rfile.readline(MAX_LINE_BYTES + 1)
        if self._late.is_set():
            return self._reject(HTTPStatus.REQUEST_TIMEOUT, "the request took too long to arrive")
        if not line:
            return False
        if len(line) > MAX_LINE_BYTES:
            return self._reject(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
        header_lines = self._read_header_lines()
        if self._late.is_set():
            return self._reject(HTTPStatus.REQUEST_TIMEOUT, "the request took too long to arrive")
        if header_lines is None:
            return self._reject(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large")
        # The standard library parses what was read within bounds, from memory.
        self.raw_requestline = line
        wire, self.rfile = self.rfile, io.BytesIO(b"".join(header_lines))
        try:
            parsed = self.parse_request()
        finally:
            self.rfile = wire
        if parsed and len(self.requestline.split()) == 2:  # no version: HTTP/0.9
            return self._reject(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not supported")
        return parsed

    def _read_header_lines(self) -> list[bytes] | None:
        lines: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(MAX_LINE_BYTES + 1)
            size += len(line)
            if len(line) > MAX_LINE_BYTES or size > MAX_HEADER_BYTES or len(lines) > MAX_HEADERS:
                return None
            lines.append(line)
            if line in (b"\r\n", b"\n", b""):
                return lines

    def _reject(self, status: int, message: str) -> bool:
        self.requestline, self.request_version, self.command = "", "", ""
        self.send_error(status, message)
        return False

    def _read_body(self) -> bytes | None:
        """The body within bounds; None when an error was answered instead."""
        if "Transfer-Encoding" in self.headers:
            self.send_error(HTTPStatus.LENGTH_REQUIRED, "a body needs a Content-Length")
            return None
        lengths = self.headers.get_all("Content-Length") or ["0"]
        length = count(lengths[0]) if len(set(lengths)) == 1 else None
        if length is None:
            self.send_error(HTTPStatus.BAD_REQUEST, "bad Content-Length")
            return None
        if length > MAX_BODY_BYTES:
            self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY_BYTES} bytes")
            return None
        body = self.rfile.read(length)
        if self._late.is_set():
            self.send_error(HTTPStatus.REQUEST_TIMEOUT, "the request took too long to arrive")
            return None
        if len(body) < length:
            raise ConnectionAbortedError("the client left while sending its body")
        self._deadline.cancel()  # the request is in: answering (a stream may last) is not bounded by it
        return body

    # -- answering ---------------------------------------------------------------------------------
    def _exchange(self) -> None:
        if self.command not in METHODS:
            self._send(_not_allowed(self.command, ", ".join(METHODS)))
            return
        if self.server.reserved(self.request) and urlsplit(self.path).path not in OWN_PATHS:
            self.send_error(
                HTTPStatus.SERVICE_UNAVAILABLE, "busy: this connection may only ask " + ", ".join(OWN_PATHS)
            )
            return
        body = self._read_body()
        if body is not None:
            self._send(self._respond(self._request(body)))

    def _request(self, body: bytes) -> Request:
        url = urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return Request(
            method="GET" if self.command == "HEAD" else self.command,
            path=unquote(url.path),
            query=parse_qs(url.query, keep_blank_values=True),
            headers=headers,
            body=body,
            client=f"{self.client_address[0]}:{self.client_address[1]}",
            secure=isinstance(self.connection, ssl.SSLSocket),
            raw_path=url.path,
        )

    def _respond(self, request: Request) -> Response:
        try:
            return self.server.routes.respond(request)
        except Exception as exc:
            logs.get("sendtrack.http").error("http_handler_failed", path=request.path, exc_info=exc)
            return error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        if isinstance(response.body, bytes):
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        else:
            self.end_headers()
            self._stream(response.body)

    def _stream(self, chunks: Iterator[bytes]) -> None:
        """Each chunk goes out as soon as it is made; a client that leaves ends the stream (handle_error logs it)."""
        try:
            if self.command == "HEAD":
                return
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
