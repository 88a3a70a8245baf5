"""Batch apply for the quarantine stage: signals keyed by address in, status records and tombstones out.

Like the core's PartitionProcessor it is pure: it reads and stages addresses through an AddressBook (the stage's is
a view over the partition store, view.py) and answers what to publish; the stage produces it with the checkpoint.
Time-driven changes (a counter reset, a mailbox_full release, an idle address dropped) come from the book's deadline
index: each address is filed under the next time the clock must look at it, so a clock step visits only those.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from consumer.quarantine.records import status_record
from consumer.quarantine.rules import Rules, next_change_at
from consumer.quarantine.signals import FORGET, Signal
from consumer.quarantine.state import APPLIED, DUPLICATE, AddressState, Limits


class AddressBook(Protocol):
    """The addresses of one partition, as the processor needs them."""

    def get(self, address: str) -> AddressState | None: ...

    def put(self, state: AddressState, due: int | None) -> None:
        """Stage a state, filed in the deadline index under `due` (None: time alone will not change it)."""

    def erase(self, address: str) -> None: ...

    def due(self, now: int) -> list[str]:
        """The addresses filed at or before `now`, in due order."""
        ...

    def clock(self) -> int: ...

    def put_clock(self, now: int) -> None: ...


class ApplyFailed(Exception):
    """Applying the signal at `index` of a batch raised: the signals before it are applied, so the caller must drop
    the partition's uncommitted state before going on."""

    def __init__(self, index: int, signal: Signal) -> None:
        super().__init__(f"applying signal {index} ({signal.kind} {signal.event_id!r}) failed")
        self.index = index


@dataclass(slots=True)
class QuarantineOutput:
    """What a checkpoint publishes and reports, accumulated since the last take."""

    # Tombstones go out before the statuses: an address in both was erased, then signalled again.
    tombstones: list[str] = field(default_factory=list)  # addresses erased: forgotten, or idle with nothing to keep
    statuses: list[dict[str, Any]] = field(default_factory=list)  # one complete AddressStatus per changed address
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (signal kind, outcome)
    transitions: Counter[tuple[str | None, str | None]] = field(default_factory=Counter)  # published status moves


class QuarantineProcessor:
    def __init__(self, book: AddressBook, rules: Rules | None = None, limits: Limits | None = None) -> None:
        self.rules = rules or Rules()
        self.limits = limits or Limits()
        self._book = book
        self._time = book.clock()
        self._dirty: set[str] = set()
        self._out = QuarantineOutput()

    def apply(self, signals: Iterable[tuple[str, Signal]], now_ms: int | None = None) -> None:
        """Apply a batch of (address, signal); a FORGET erases its address. now_ms, the wall clock, caps how far
        event times move the clock, as in the core: a future-dated signal is applied but cannot end a window early."""
        newest = self._time
        touched: dict[str, AddressState] = {}  # staged once, at the batch's end: one deadline per address
        for index, (address, signal) in enumerate(signals):
            try:
                if signal.kind == FORGET:  # a command, not part of the address's history
                    if address in touched:
                        self._file(touched.pop(address))
                    self._out.outcomes[FORGET, APPLIED if self.forget(address) else DUPLICATE] += 1
                    continue
                state = touched.get(address) or self._book.get(address) or AddressState.new(address, self.limits)
                outcome = state.apply(signal, self.rules, self.limits)
            except Exception as exc:
                raise ApplyFailed(index, signal) from exc
            touched[address] = state
            self._out.outcomes[signal.kind, outcome] += 1
            if outcome != DUPLICATE:
                self._dirty.add(address)
            newest = max(newest, signal.occurred_at)
        for state in touched.values():
            self._file(state)
        self.advance_clock(newest if now_ms is None else min(newest, max(now_ms, self._time)))

    def advance_clock(self, now_ms: int) -> None:
        """Move time forward: statuses time changes (a counter reset, a mailbox_full release) are republished, and
        addresses idle with nothing to remember are dropped. Visits only the addresses filed as due."""
        if now_ms <= self._time:
            return
        self._time = now_ms
        self._book.put_clock(now_ms)
        for address in self._book.due(now_ms):
            state = self._book.get(address)
            if state is None:
                continue
            if state.forgettable(now_ms, self.rules, self.limits):
                self._erase(state)
                continue
            if state.published is not None and state.status(now_ms, self.rules).status != state.published:
                self._dirty.add(address)
            self._file(state)

    def forget(self, address: str) -> bool:
        """Erase an address (`sendtrack quarantine forget`): its state goes, its record becomes a tombstone. A signal
        that comes later starts a new state from itself alone. False if the address was unknown."""
        state = self._book.get(address)
        if state is None:
            return False
        self._erase(state)
        return True

    def address(self, address: str) -> AddressState | None:
        return self._book.get(address)

    @property
    def now(self) -> int:
        return self._time

    def take_output(self) -> QuarantineOutput:
        """One complete status record per changed address; reset the accumulators."""
        out, self._out = self._out, QuarantineOutput()
        for address in sorted(self._dirty):
            state = self._book.get(address)
            assert state is not None, "an erased address is never dirty"
            record = status_record(state, self._time, self.rules)
            out.statuses.append(record)
            if record["status"] != state.published:
                out.transitions[state.published, record["status"]] += 1
                state.published = record["status"]
                self._file(state)
        self._dirty.clear()
        return out

    def _file(self, state: AddressState) -> None:
        """Stage the state, filed in the deadline index."""
        self._book.put(state, self._deadline(state))

    def _deadline(self, state: AddressState) -> int | None:
        """When the clock must next look at the address: its next change by time, else when it has nothing to
        remember (idle, and valid by then); never for a quarantined or denylisted address (only a release ends
        those, and a release is a signal)."""
        standing = state.standing(self.rules)
        if standing.quarantined is not None or standing.denylisted is not None:
            return None
        change = next_change_at(standing, self.rules)
        if change is not None and change > self._time:
            return change  # after it the counter is zero: the address is valid from then on
        return 0 if state.last_seen is None else state.last_seen + self.limits.idle_after_ms

    def _erase(self, state: AddressState) -> None:
        self._book.erase(state.address)
        self._dirty.discard(state.address)
        self._out.tombstones.append(state.address)
        if state.published is not None:
            self._out.transitions[state.published, None] += 1
