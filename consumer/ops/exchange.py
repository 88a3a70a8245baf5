"""What the HTTP server hands to a page handler, and what it gets back: no HTTP machinery here.

The server (`ops/http.py`) parses and bounds requests, owns /metrics, /healthz and /readyz, and passes
every other request to a `Handler` (the Deployment view in `web/`), so the view can be tested without
sockets and the server without pages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import unquote


@dataclass(frozen=True)
class Request:
    method: str  # upper case; HEAD is answered by the server from the GET response
    path: str  # percent-decoded path, without the query
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    client: str  # "host:port" of the peer
    secure: bool  # came over TLS
    raw_path: str = ""  # the path as sent (percent-encoded); empty when made from a decoded path

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments, each decoded on its own: an id holding '/' (sent as %2F) stays one segment."""
        if not self.raw_path:
            return tuple(self.path[1:].split("/"))
        return tuple(unquote(part) for part in self.raw_path[1:].split("/"))


@dataclass
class Response:
    status: int
    # An iterator is streamed (server-sent events) until it ends or the client leaves.
    body: bytes | Iterator[bytes] = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


class Handler(Protocol):
    def handle(self, request: Request) -> Response | None:
        """The response, or None when the path is not the handler's (the server answers 404)."""


@runtime_checkable
class MetricsGuard(Protocol):
    """A handler that may refuse /metrics (the web config protects it); /healthz and /readyz stay open."""

    def metrics_refusal(self, request: Request) -> Response | None: ...


_COUNT = re.compile(r"[0-9]{1,12}")  # ASCII only: str.isdigit() takes superscripts and other scripts' digits


def count(text: str | None) -> int | None:
    """A non-negative number as a request may give it (Content-Length, limit, a cursor), or None if it is not one."""
    return int(text) if text is not None and _COUNT.fullmatch(text) else None
