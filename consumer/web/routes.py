"""Routing by path segments: a delivery id is one segment whatever it holds (a line feed, '/' sent as %2F, '..').

A pattern is a path whose `{name}` segments capture any one non-empty segment and `{name=a|b}` segments one
of the listed words. Matching compares whole segments, never a regular expression over the decoded path, so
no id can fall through to another route or to no route at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from consumer.ops.exchange import Request


@dataclass(frozen=True)
class Route:
    method: str
    segments: tuple[str, ...]
    answer: Callable[..., object]

    @classmethod
    def of(cls, method: str, pattern: str, answer: Callable[..., object]) -> Route:
        return cls(method, tuple(pattern[1:].split("/")), answer)

    def match(self, segments: tuple[str, ...]) -> dict[str, str] | None:
        """The captured parameters when the segments fit this route's shape, else None."""
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for expected, given in zip(self.segments, segments, strict=True):
            if not (expected.startswith("{") and expected.endswith("}")):
                if expected != given:
                    return None
                continue
            name, _, words = expected[1:-1].partition("=")
            if not given or (words and given not in words.split("|")):
                return None
            params[name] = given
        return params


def find(routes: list[Route], request: Request) -> tuple[Route, dict[str, str]] | set[str] | None:
    """The route and its parameters; else the methods of routes of this shape (a 405), or None (not ours)."""
    method = "GET" if request.method == "HEAD" else request.method
    allowed: set[str] = set()
    segments = request.segments
    for route in routes:
        params = route.match(segments)
        if params is None:
            continue
        if route.method == method:
            return route, params
        allowed.add(route.method)
    return allowed or None


def segment(value: str) -> str:
    """A value as one path segment: every reserved character encoded, '/' included."""
    return quote(value, safe="")


def encoded_path(request: Request) -> str:
    """The request's path to send on (forwarding, redirects): each segment encoded, so segments stay segments."""
    return "/" + "/".join(segment(part) for part in request.segments)
