"""What the HTTP server hands to a page handler, and what it gets back: no HTTP machinery here.

The server (`ops/http.py`) parses and bounds requests, owns /metrics, /healthz and /readyz, and passes
every other request to a `Handler` (the Deployment view in `web/`), so the view can be tested without
sockets and the server without pages.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Request:
    method: str  # upper case; HEAD is answered by the server from the GET response
    path: str  # percent-decoded path, without the query
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    client: str  # "host:port" of the peer
    secure: bool  # came over TLS


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
