"""Per-address state: what the rules need of an address's signals, bounded, and its recipient history.

The rule-relevant signals of the last `horizon` (by event time, behind the newest signal seen) are kept as they
came, keyed by event id, and folded in event-time order whenever the status is asked for; older ones are folded
into `base` once and dropped. So within the horizon any arrival order and any duplicates give exactly the result of
folding the sorted history, and per address the state holds at most `max_facts` signals and `history_size`
messages, whatever the input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from consumer.quarantine.history import RecipientHistory
from consumer.quarantine.rules import (
    DAY_MS,
    VALID,
    AddressStatus,
    Rules,
    Standing,
    absorb_late,
    fold,
    next_change_at,
    status_of,
    without_void_failures,
)
from consumer.quarantine.signals import (
    COMPLAINT,
    DELIVERED,
    HARD_ERROR,
    RELEASE,
    SOFT_ERROR,
    VALIDITY_END_FAILURE,
    Signal,
)

APPLIED = "applied"
DUPLICATE = "duplicate"  # changed nothing
LATE = "late"  # a soft error, validity-end failure, delivery or release ordered before the base: not placed

Order = tuple[int, bool, str]  # a Signal.order

# The kinds the rules read; the others (ignored errors, opens, clicks) only feed the recipient history.
RULE_KINDS = frozenset({HARD_ERROR, SOFT_ERROR, VALIDITY_END_FAILURE, DELIVERED, COMPLAINT, RELEASE})


@dataclass(frozen=True, slots=True)
class Limits:
    """How much an address may hold, and for how long."""

    # How late a soft error, validity-end failure, delivery or release may come (behind the newest signal of its
    # address) and still be placed exactly. 30 days covers asynchronous bounces and the longest rule window.
    horizon_ms: int = 30 * DAY_MS
    # At most this many rule signals kept unfolded; past it the oldest are folded early (the horizon shrinks for
    # an address that busy: 128 rule signals inside 30 days is about four messages a day).
    max_facts: int = 128
    history_size: int = 100  # messages in the recipient history
    idle_after_ms: int = 180 * DAY_MS  # an address with no signal this long and nothing to remember is dropped

    def __post_init__(self) -> None:
        if min(self.max_facts, self.history_size) < 1 or min(self.horizon_ms, self.idle_after_ms) < 0:
            raise ValueError("limits must be positive")


@dataclass(slots=True)
class AddressState:
    address: str
    history: RecipientHistory
    base: Standing = field(default_factory=Standing)  # every rule signal ordered before base_before, folded
    base_before: Order | None = None  # a Signal.order bound: what sorts below it is in (or too late for) base
    pending: dict[str, Signal] = field(default_factory=dict)  # rule signals from base_before on, by event id
    last_seen: int | None = None  # the newest event time of any signal
    published: str | None = None  # the status last published, so transitions are counted once each
    # The fold of base and pending, kept until the next signal: a checkpoint asks for it several times (the deadline,
    # the status record, whether it is forgettable), each a fold of up to max_facts signals otherwise.
    _folded: tuple[Rules, Standing] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def new(cls, address: str, limits: Limits) -> AddressState:
        return cls(address, RecipientHistory(limits.history_size))

    def apply(self, signal: Signal, rules: Rules, limits: Limits) -> str:
        """Take one signal: APPLIED, DUPLICATE or LATE (LATE may still have added it to the recipient history)."""
        self._folded = None
        history_changed = self.history.add(signal)
        outcome = self._learn(signal) if signal.kind in RULE_KINDS else DUPLICATE
        newer = self.last_seen is None or signal.occurred_at > self.last_seen
        if newer:
            self.last_seen = signal.occurred_at
        if newer or len(self.pending) > limits.max_facts:  # the horizon moved, or there is too much to keep
            self._compact(rules, limits)
        return APPLIED if outcome == DUPLICATE and history_changed else outcome

    def standing(self, rules: Rules) -> Standing:
        if self._folded is None or self._folded[0] is not rules:
            self._folded = (rules, fold(self._counted(self.pending.values()), self.base, rules))
        return self._folded[1]

    def status(self, now: int, rules: Rules) -> AddressStatus:
        return status_of(self.standing(rules), now, rules)

    def next_change_at(self, rules: Rules) -> int | None:
        return next_change_at(self.standing(rules), rules)

    def forgettable(self, now: int, rules: Rules, limits: Limits) -> bool:
        """Nothing to remember: no signal for idle_after and valid (a quarantine or denylisting is kept for good,
        an error counter until it resets). The recipient history goes with it."""
        idle = self.last_seen is None or now - self.last_seen >= limits.idle_after_ms
        return idle and self.status(now, rules).status == VALID

    def _counted(self, signals: Iterable[Signal]) -> list[Signal]:
        """What the rules fold: a validity-end failure is void once the recipient history shows its message delivered
        or hard-bounced (rules.without_void_failures). A failure folded into base before that is not undone: past
        the horizon, or for a message pushed out of the history."""
        return without_void_failures(signals, self.history.settled())

    def _learn(self, signal: Signal) -> str:
        if self.base_before is not None and signal.order < self.base_before:
            absorbed = absorb_late(self.base, signal)
            if absorbed is None:
                return LATE
            changed, self.base = absorbed != self.base, absorbed
            return APPLIED if changed else DUPLICATE
        if signal.event_id in self.pending:
            return DUPLICATE
        self.pending[signal.event_id] = signal
        return APPLIED

    def _compact(self, rules: Rules, limits: Limits) -> None:
        """Fold into base what is older than the horizon, and the oldest in Signal.order beyond max_facts. The bound
        moves in Signal.order, not by whole milliseconds, so signals arriving in that order are never late."""
        if self.last_seen is None:
            return
        bound: Order = (self.last_seen - limits.horizon_ms + 1, False, "")  # every order dated up to the cut
        ordered = sorted(self.pending.values(), key=lambda s: s.order)
        kept = [s for s in ordered if s.order >= bound]
        excess = len(kept) - limits.max_facts
        if excess > 0:
            time, release, event_id = kept[excess - 1].order
            bound = (time, release, event_id + "\0")  # just past it: the next order a signal can have
        if self.base_before is not None and bound <= self.base_before:
            return
        due = [s for s in ordered if s.order < bound]
        if due:
            self.base = fold(self._counted(due), self.base, rules)
            for signal in due:
                del self.pending[signal.event_id]
        self.base_before = bound
