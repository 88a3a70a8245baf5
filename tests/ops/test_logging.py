"""The log throttle: one line per kind of trouble per interval."""

from __future__ import annotations

import time

from consumer.ops import logging as logs
from consumer.ops.logging import Throttle


def test_each_kind_is_allowed_once_per_interval():
    throttle = Throttle(interval_s=0.2)
    assert throttle.allows("cut") and throttle.allows(42)  # kinds are independent
    assert not throttle.allows("cut") and not throttle.allows(42)
    time.sleep(0.25)
    assert throttle.allows("cut")
    assert not throttle.allows("cut")


class _Writes:
    """A stream that keeps each write call apart, as an unbuffered file shared by processes sees them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        return None


def test_a_log_line_is_one_write_so_processes_sharing_a_stream_never_split_a_line() -> None:
    stream = _Writes()
    logs.configure(json=True, stream=stream)
    try:
        logs.get("test").info("worker_stopped", worker="w0")
        logs.get("test").warning("another", n=2)
    finally:
        logs.configure(json=True)  # back to stderr for the other tests
    assert len(stream.calls) == 2
    assert all(call.startswith("{") and call.endswith("}\n") for call in stream.calls), stream.calls
