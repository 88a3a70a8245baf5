"""The quarantine store's layout: keys, and AddressState as compact JSON.

One store per partition (and its changelog) holds:
- `a\\x00<address>`: the address's state, and when its deadline index entry is due;
- `t\\x00<due: 8 bytes big-endian><address>`: the deadline index, in due order, so a clock step reads only what is
  due (a counter reset, a mailbox_full release, an idle address to drop); a latched address has no entry;
- `s\\x00<STATUS>`: how many addresses have that status published (the metrics' gauge, exact after a restore);
- `n`: the partition's clock, as of the last checkpoint that changed anything (every record published was made at
  or before it; a step from it to a later time that changed nothing would change nothing again).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from consumer.quarantine.history import MessageEntry, RecipientHistory
from consumer.quarantine.rules import Counter, Decision, Standing
from consumer.quarantine.signals import Signal
from consumer.quarantine.state import AddressState

ADDRESS = b"a\x00"
DEADLINE = b"t\x00"
STATUS_COUNT = b"s\x00"
CLOCK = b"n"
_DUE = struct.Struct(">Q")
_FORMAT = 1  # the first element of every value: a later layout can read this one


def address_key(address: str) -> bytes:
    return ADDRESS + address.encode()


def deadline_key(due: int, address: str) -> bytes:
    return DEADLINE + _DUE.pack(max(due, 0)) + address.encode()


def deadline_of(key: bytes) -> tuple[int, str]:
    """(due, address) of a deadline index key."""
    start = len(DEADLINE)
    (due,) = _DUE.unpack_from(key, start)
    return due, key[start + _DUE.size :].decode()


def deadline_bound(now: int) -> bytes:
    """The first index key due after `now`: every key below it is due."""
    return DEADLINE + _DUE.pack(max(now + 1, 0))


def status_count_key(status: str) -> bytes:
    return STATUS_COUNT + status.encode()


# -- values ---------------------------------------------------------------------------------------------------------
def encode_address(state: AddressState, due: int | None) -> bytes:
    entries = [[e.delivery_id, e.message_id, e.first_at, e.last_at, e.facts] for e in state.history.entries.values()]
    value = [
        _FORMAT,
        state.last_seen,
        state.published,
        due,
        None if state.base_before is None else list(state.base_before),
        _standing(state.base),
        [_signal(signal) for signal in state.pending.values()],
        entries,
    ]
    return json.dumps(value, separators=(",", ":")).encode()


def decode_address(address: str, value: bytes, history_size: int) -> tuple[AddressState, int | None]:
    """The state and its index entry's due time. A history larger than `history_size` (the setting was lowered)
    keeps its latest messages."""
    _, last_seen, published, due, base_before, base, pending, entries = json.loads(value)
    history = RecipientHistory(history_size)
    kept = sorted((MessageEntry(*entry) for entry in entries), key=lambda e: e.rank)[-history_size:]
    history.entries = {(e.delivery_id, e.message_id): e for e in kept}
    signals = [Signal(*raw) for raw in pending]
    state = AddressState(
        address,
        history,
        _standing_of(base),
        None if base_before is None else (base_before[0], base_before[1], base_before[2]),
        {signal.event_id: signal for signal in signals},
        last_seen,
        published,
    )
    return state, due


def _signal(signal: Signal | None) -> list[Any] | None:
    if signal is None:
        return None
    return [
        signal.event_id,
        signal.kind,
        signal.occurred_at,
        signal.delivery_id,
        signal.message_id,
        signal.reason,
        signal.actor,
    ]


def _signal_of(raw: list[Any] | None) -> Signal | None:
    return None if raw is None else Signal(*raw)


def _decision(decision: Decision | None) -> list[Any] | None:
    if decision is None:
        return None
    return [decision.since, decision.rule, _signal(decision.signal), decision.reason]


def _decision_of(raw: list[Any] | None) -> Decision | None:
    if raw is None:
        return None
    since, rule, signal, reason = raw
    return Decision(since, rule, _signal_of(signal), reason)


def _standing(standing: Standing) -> list[Any]:
    c = standing.counter
    counter = [c.count, c.last_counted, c.mailbox_full_since, _decision(c.decision)]
    return [counter, _decision(standing.quarantined), _decision(standing.denylisted), _signal(standing.released)]


def _standing_of(raw: list[Any]) -> Standing:
    (count, last_counted, mailbox_full_since, decision), quarantined, denylisted, released = raw
    return Standing(
        Counter(count, last_counted, mailbox_full_since, _decision_of(decision)),
        _decision_of(quarantined),
        _decision_of(denylisted),
        _signal_of(released),
    )
