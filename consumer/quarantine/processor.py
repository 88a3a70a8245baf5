"""Batch apply for the quarantine stage: signals keyed by address in, status records and tombstones out.

Like the core's PartitionProcessor it is pure: it holds the addresses it is given and answers what to publish;
the stage (not yet wired) gives it a store and produces its output with the checkpoint.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consumer.quarantine.records import status_record
from consumer.quarantine.rules import Rules
from consumer.quarantine.signals import Signal
from consumer.quarantine.state import DUPLICATE, AddressState, Limits


@dataclass(slots=True)
class QuarantineOutput:
    """What a checkpoint publishes and reports, accumulated since the last take."""

    # Tombstones go out before the statuses: an address in both was erased, then signalled again.
    tombstones: list[str] = field(default_factory=list)  # addresses erased: forgotten, or idle with nothing to keep
    statuses: list[dict[str, Any]] = field(default_factory=list)  # one complete AddressStatus per changed address
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (signal kind, outcome)
    transitions: Counter[tuple[str | None, str | None]] = field(default_factory=Counter)  # published status moves


class QuarantineProcessor:
    def __init__(
        self, rules: Rules | None = None, limits: Limits | None = None, addresses: Iterable[AddressState] = ()
    ):
        self.rules = rules or Rules()
        self.limits = limits or Limits()
        self._addresses = {state.address: state for state in addresses}
        self._time = max((state.last_seen or 0 for state in self._addresses.values()), default=0)
        self._dirty: set[str] = set()
        self._out = QuarantineOutput()

    def apply(self, signals: Iterable[tuple[str, Signal]], now_ms: int | None = None) -> None:
        """Apply a batch of (address, signal). now_ms, the wall clock, caps how far event times move the clock,
        as in the core: a future-dated signal is applied but cannot end a window early."""
        newest = self._time
        for address, signal in signals:
            state = self._addresses.get(address)
            if state is None:
                state = self._addresses[address] = AddressState.new(address, self.limits)
            outcome = state.apply(signal, self.rules, self.limits)
            self._out.outcomes[signal.kind, outcome] += 1
            if outcome != DUPLICATE:
                self._dirty.add(address)
            newest = max(newest, signal.occurred_at)
        self.advance_clock(newest if now_ms is None else min(newest, max(now_ms, self._time)))

    def advance_clock(self, now_ms: int) -> None:
        """Move time forward: statuses time changes (a counter reset, a mailbox_full release) are republished, and
        addresses idle with nothing to remember are dropped. Walks every address, like the core's clock step; a
        stage with many addresses would index them by their next change."""
        if now_ms <= self._time:
            return
        self._time = now_ms
        for address, state in list(self._addresses.items()):
            if state.forgettable(now_ms, self.rules, self.limits):
                self._erase(address)
            elif state.published is not None and state.status(now_ms, self.rules).status != state.published:
                self._dirty.add(address)

    def forget(self, address: str) -> bool:
        """Erase an address (`sendtrack quarantine forget`): its state goes, its record becomes a tombstone. A signal
        that comes later starts a new state from itself alone. False if the address was unknown."""
        if address not in self._addresses:
            return False
        self._erase(address)
        return True

    def address(self, address: str) -> AddressState | None:
        return self._addresses.get(address)

    @property
    def now(self) -> int:
        return self._time

    def take_output(self) -> QuarantineOutput:
        """One complete status record per changed address; reset the accumulators."""
        out, self._out = self._out, QuarantineOutput()
        for address in sorted(self._dirty):
            state = self._addresses[address]
            record = status_record(state, self._time, self.rules)
            out.statuses.append(record)
            if record["status"] != state.published:
                out.transitions[state.published, record["status"]] += 1
                state.published = record["status"]
        self._dirty.clear()
        return out

    def _erase(self, address: str) -> None:
        state = self._addresses.pop(address)
        self._dirty.discard(address)
        self._out.tombstones.append(address)
        if state.published is not None:
            self._out.transitions[state.published, None] += 1
