"""One small HTTP server per instance: /metrics, /healthz, /readyz, /deliveries/<id>."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


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
    def __init__(self, port: int, registry: CollectorRegistry, source: StatusSource, host: str = "0.0.0.0") -> None:
        handler = _handler(registry, source)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(registry: CollectorRegistry, source: StatusSource) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                alive, detail = source.alive()
                self._json(200 if alive else 503, {"status": "alive" if alive else "stuck", "detail": detail})
            elif path == "/readyz":
                ready, detail = source.ready()
                self._json(200 if ready else 503, {"ready": ready, "detail": detail})
            elif path.startswith("/deliveries/"):
                kpi = source.delivery_kpi(unquote(path[len("/deliveries/") :]))
                if kpi is None:
                    self._json(404, {"error": "delivery not owned by this instance"})
                else:
                    self._json(200, kpi)
            else:
                self._json(404, {"error": "not found"})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._reply(status, json.dumps(body).encode(), "application/json")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:  # scrapes are not news
            return

    return Handler
