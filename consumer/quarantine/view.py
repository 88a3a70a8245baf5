"""The quarantine processor's addresses over a partition store: decoded states read through, changes staged in
memory until the checkpoint, which takes them as byte changes (store and changelog alike).

Memory holds only the addresses read or changed since the last checkpoint; a rewind drops the view with them. The
deadline index (state_codec.py) is kept here: an address's entry moves when the processor stages another due time,
and `due(now)` merges the store's entries with the staged ones. The published status counts are kept here too, from
what each staged state publishes against what its stored one did.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from consumer.quarantine.state import AddressState
from consumer.quarantine.state_codec import (
    CLOCK,
    DEADLINE,
    STATUS_COUNT,
    address_key,
    deadline_bound,
    deadline_key,
    deadline_of,
    decode_address,
    encode_address,
    status_count_key,
)
from consumer.state.store import PartitionStore

_PAGE = 256  # deadline index entries read per store call
_NEVER = 2**64  # later than any due time


class AddressView:
    def __init__(self, store: PartitionStore, history_size: int) -> None:
        self._store = store
        self._history_size = history_size
        self._states: dict[str, AddressState | None] = {}  # read or staged; None: absent or erased
        self._stored: dict[str, tuple[str | None, int | None]] = {}  # (published, due) as the store has them
        self._dues: dict[str, int | None] = {}  # the staged due time of each changed address
        self._clock: int | None = None
        # No deadline index entry of the store is due before this (None: not known yet). A clock step that is not
        # there yet reads nothing, so a quiet partition's steps cost no store read (a memory store's cost O(state)).
        self._stored_from: int | None = None

    # -- addresses ------------------------------------------------------------------------------------------------
    def get(self, address: str) -> AddressState | None:
        if address not in self._states:
            value = self._store.get(address_key(address))
            if value is None:
                self._stored[address] = (None, None)
                self._states[address] = None
            else:
                state, due = decode_address(address, value, self._history_size)
                self._stored[address] = (state.published, due)
                self._states[address] = state
        return self._states[address]

    def put(self, state: AddressState, due: int | None) -> None:
        """Stage the address's state and when the clock must look at it next (None: never by time alone)."""
        self.get(state.address)
        self._states[state.address] = state
        self._dues[state.address] = due

    def erase(self, address: str) -> None:
        self.get(address)
        self._states[address] = None
        self._dues[address] = None

    def due(self, now: int) -> list[str]:
        """The addresses whose deadline is at or before `now`, in due order."""
        found = [deadline_of(key) for key in self._stored_due(now)]
        found = [(due, address) for due, address in found if address not in self._dues]
        found += [(due, address) for address, due in self._dues.items() if due is not None and due <= now]
        return [address for _, address in sorted(found)]

    def _stored_due(self, now: int) -> Iterator[bytes]:
        if self._stored_from is not None and now < self._stored_from:
            return
        bound, start = deadline_bound(now), DEADLINE
        while True:
            rows = self._store.read_range(DEADLINE, start, _PAGE)
            for key, _ in rows:
                if key >= bound:
                    self._stored_from = deadline_of(key)[0]
                    return
                yield key
            if len(rows) < _PAGE:
                self._stored_from = _NEVER
                return
            start = rows[-1][0] + b"\x00"

    # -- the clock --------------------------------------------------------------------------------------------------
    def clock(self) -> int:
        if self._clock is not None:
            return self._clock
        value = self._store.get(CLOCK)
        return 0 if value is None else int(value)

    def put_clock(self, now: int) -> None:
        self._clock = now

    # -- checkpoint -------------------------------------------------------------------------------------------------
    def stage(self) -> dict[bytes, bytes | None]:
        """Encode what changed since the last stage (an erased address: tombstones) and start afresh."""
        changes: dict[bytes, bytes | None] = {}
        moves: Counter[str] = Counter()
        for address in sorted(self._dues):
            state, due = self._states[address], self._dues[address]
            published, stored_due = self._stored[address]
            changes[address_key(address)] = None if state is None else encode_address(state, due)
            if due != stored_due:
                if stored_due is not None:
                    changes[deadline_key(stored_due, address)] = None
                if due is not None:
                    changes[deadline_key(due, address)] = b""
                    if self._stored_from is not None:  # written to the store after the commit
                        self._stored_from = min(self._stored_from, due)
            now_published = None if state is None else state.published
            if now_published != published:
                moves[published] -= 1
                moves[now_published] += 1
        for status, move in sorted(moves.items(), key=lambda item: str(item[0])):
            if status is not None and move:
                key = status_count_key(status)
                stored = self._store.get(key)
                changes[key] = b"%d" % ((0 if stored is None else int(stored)) + move)
        # An idle partition stages nothing (no transaction each second): the clock waits for the next change.
        if self._clock is not None and changes:
            changes[CLOCK] = b"%d" % self._clock
            self._clock = None
        self._states.clear()
        self._stored.clear()
        self._dues.clear()
        return changes


def committed_status_counts(store: PartitionStore) -> dict[str, int]:
    """Addresses by published status, as the store has them (safe from other threads, like read_range)."""
    rows = store.read_range(STATUS_COUNT, STATUS_COUNT, 16)
    return {key[len(STATUS_COUNT) :].decode(): int(value) for key, value in rows}
