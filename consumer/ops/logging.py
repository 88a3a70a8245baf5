"""structlog setup: JSON lines for machines, a console renderer for people (demo)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Hashable, Mapping
from typing import Any

import structlog


def configure(
    json: bool = True, level: str = "INFO", stream=sys.stderr, fields: Mapping[str, Any] | None = None
) -> None:
    """`fields` go on every line, from every thread (a --workers worker names itself: its lines share a stream)."""
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *([_Fields(fields)] if fields else []),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write per line (print() writes the line and its newline apart): processes sharing a stream (the
        # --workers parent and its workers, unbuffered under PYTHONUNBUFFERED) would interleave half lines.
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library (librdkafka via confluent-kafka's `logger` setting):
    # send those records through the same renderer, so every line of the process has one format.
    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(logging.getLevelName(level.upper()))


class _Fields:
    def __init__(self, fields: Mapping[str, Any]) -> None:
        self._fields = dict(fields)

    def __call__(self, _logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        return {**self._fields, **event}


class _ToStructlog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        structlog.get_logger().log(record.levelno, record.getMessage(), logger=record.name)


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)


class Throttle:
    """At most one log line per kind of trouble per interval: a flood or an outage must show, not fill the log."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self._interval_s = interval_s
        self._last: dict[Hashable, float] = {}

    def allows(self, kind: Hashable) -> bool:
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) < self._interval_s:
            return False
        self._last[kind] = now
        return True
