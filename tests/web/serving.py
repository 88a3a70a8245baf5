"""Serve a `Handler` over real HTTP for the tests, the way the instance's HTTP server will.

Stand-in until `consumer.ops.http.OpsServer` routes to a handler; then `serve` should build an OpsServer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from consumer.ops.exchange import Handler, Request


@contextmanager
def serve(handler: Handler, host: str = "127.0.0.1") -> Iterator[str]:
    """The base URL of a server answering with `handler`, for the duration of the block."""
    server = ThreadingHTTPServer((host, 0), _adapter(handler))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _adapter(handler: Handler) -> type[BaseHTTPRequestHandler]:
    class Adapter(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = Request(
                self.command,
                unquote(parts.path),
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                body,
                f"{self.client_address[0]}:{self.client_address[1]}",
                False,
            )
            response = handler.handle(request)
            if response is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            for name, value in response.headers:
                self.send_header(name, value)
            if isinstance(response.body, bytes):
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)
                return
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for chunk in response.body:
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except OSError:  # the client left
                pass
            finally:
                response.body.close()  # type: ignore[union-attr]

        def log_message(self, *_args: Any) -> None:
            return

    return Adapter
