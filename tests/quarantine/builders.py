"""Signal builders for quarantine tests: times in days unless given in ms."""

from __future__ import annotations

import itertools

from consumer.quarantine.processor import QuarantineProcessor
from consumer.quarantine.rules import DAY_MS, Rules
from consumer.quarantine.signals import RELEASE, Signal
from consumer.quarantine.state import Limits
from consumer.quarantine.view import AddressView
from consumer.state.memory import MemoryStore

_ids = itertools.count(1)


def sig(
    kind: str, day: float = 0, reason: str | None = None, *, ms: int = 0, message: str | None = None, **kw
) -> Signal:
    """A signal at `day` days plus `ms` milliseconds; each call its own event and message unless told."""
    n = next(_ids)
    at = round(day * DAY_MS) + ms
    if kind == RELEASE:
        return Signal(kw.pop("event_id", f"release-{n}"), kind, at, actor=kw.pop("actor", "ops"))
    return Signal(kw.pop("event_id", f"e-{n}"), kind, at, kw.pop("delivery_id", "d1"), message or f"m-{n}", reason)


def new_processor(limits: Limits | None = None, rules: Rules | None = None) -> QuarantineProcessor:
    """A processor over an empty memory store (nothing staged to it unless a test checkpoints the view)."""
    limits = limits or Limits()
    return QuarantineProcessor(AddressView(MemoryStore(), limits.history_size), rules, limits)
