"""structlog setup: JSON lines for machines, a console renderer for people (demo)."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(json: bool = True, level: str = "INFO", stream=sys.stderr) -> None:
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library (librdkafka via confluent-kafka's `logger` setting):
    # send those records through the same renderer, so every line of the process has one format.
    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(logging.getLevelName(level.upper()))


class _ToStructlog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        structlog.get_logger().log(record.levelno, record.getMessage(), logger=record.name)


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)
