"""Serve a `Handler` over real HTTP for the tests: the instance's own server, `consumer.ops.http.OpsServer`."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry

from consumer.ops.exchange import Handler
from consumer.ops.http import OpsServer, StatusSource


@contextmanager
def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """The base URL of a server answering with `handler`, for the duration of the block."""
    source = StatusSource(ready=lambda: (True, "ready"), delivery_kpi=lambda _delivery_id: None)
    server = OpsServer(0, CollectorRegistry(), source, host="127.0.0.1", handler=handler, tls=tls).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.port}"
    finally:
        server.stop()
