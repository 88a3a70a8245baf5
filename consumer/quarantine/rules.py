"""Quarantine rules: an address's standing is a fold of its signals in event-time order (Signal.order).

The fold has two independent parts, which is what lets late input be placed exactly:
- the error counter (soft errors, validity-end failures, deliveries, and time: the reset and the mailbox_full
  release), which goes on counting whatever the status, and
- three latches: quarantined (a hard error, or the counter reaching the threshold), denylisted (a complaint), each
  set by the first signal in the fold's order and cleared only by a manual release.
A hard error or a complaint only sets a latch, so one that arrives after the signals around it were folded away is
still placed exactly (`absorb_late`): the earliest latching signal after the latest release wins either way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from consumer.core.status import UNKNOWN_REASON, kpi_reason
from consumer.quarantine.signals import (
    CLICK,
    COMPLAINT,
    DELIVERED,
    HARD_ERROR,
    OPEN,
    RELEASE,
    SOFT_ERROR,
    VALIDITY_END_FAILURE,
    Signal,
)

DAY_MS = 86_400_000

VALID = "VALID"
ERRONEOUS = "ERRONEOUS"
QUARANTINED = "QUARANTINED"
DENYLISTED = "DENYLISTED"
ADDRESS_STATUSES = (VALID, ERRONEOUS, QUARANTINED, DENYLISTED)

# Which rule gave an address its status (the status record's `rule`).
ERROR_COUNTED = "ERROR_COUNTED"
ERROR_THRESHOLD = "ERROR_THRESHOLD"
HARD_ERROR_RULE = "HARD_ERROR"
COMPLAINT_RULE = "COMPLAINT"
DELIVERED_RULE = "DELIVERED"
COUNTER_RESET = "COUNTER_RESET"
MAILBOX_FULL_RELEASE = "MAILBOX_FULL_RELEASE"
MANUAL_RELEASE = "MANUAL_RELEASE"
DECIDING_RULES = (
    ERROR_COUNTED,
    ERROR_THRESHOLD,
    HARD_ERROR_RULE,
    COMPLAINT_RULE,
    DELIVERED_RULE,
    COUNTER_RESET,
    MAILBOX_FULL_RELEASE,
    MANUAL_RELEASE,
)

MAILBOX_FULL = "mailbox_full"  # one of the core's PLATFORM_REASONS
COMPLAINT_REASON = "complaint"
COUNTED_KINDS = frozenset({SOFT_ERROR, VALIDITY_END_FAILURE})
# A message with one of these did not fail for want of a successful retry, as the delivery core judges it: delivered
# (an open or a click proves it too) or hard-bounced (a hard error counts for itself).
SETTLING_KINDS = frozenset({DELIVERED, OPEN, CLICK, HARD_ERROR})

MessageKey = tuple[str | None, str | None]  # (delivery_id, message_id)


@dataclass(frozen=True, slots=True)
class Rules:
    """The thresholds of the rules; the defaults are the platform's (README.md beside this file)."""

    count_once_within_ms: int = DAY_MS  # errors closer together than this to the last counted one count once
    quarantine_at: int = 5  # the counted error that quarantines
    reset_after_ms: int = 10 * DAY_MS  # the counter resets when its last counted error is older than this
    mailbox_full_release_ms: int = 30 * DAY_MS  # an address erroneous for mailbox_full this long is valid again

    def __post_init__(self) -> None:
        if self.quarantine_at < 1:
            raise ValueError("quarantine_at must be at least 1")
        if min(self.count_once_within_ms, self.reset_after_ms, self.mailbox_full_release_ms) < 0:
            raise ValueError("rule durations cannot be negative")


class Decision(NamedTuple):
    """Why an address has its status: since when, by which rule, the signal that decided (None when time did)."""

    since: int
    rule: str
    signal: Signal | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Counter:
    """The error counter. `decision`: ERRONEOUS since its first counted error (decided by the last one), or VALID
    since it was last reset; None for an address never erroneous."""

    count: int = 0
    last_counted: int | None = None  # event time of the last counted error
    mailbox_full_since: int | None = None  # the counted errors have said mailbox_full since then
    decision: Decision | None = None


@dataclass(frozen=True, slots=True)
class Standing:
    """An address's rule state after folding some of its signals."""

    counter: Counter = field(default_factory=Counter)
    quarantined: Decision | None = None
    denylisted: Decision | None = None
    released: Signal | None = None  # the latest manual release: whatever is ordered before it is released


class AddressStatus(NamedTuple):
    """What the quarantine publishes for an address, rules-wise."""

    status: str
    error_count: int
    decision: Decision | None


# -- time -----------------------------------------------------------------------------------------------------------
def counter_deadline(counter: Counter, rules: Rules) -> Decision | None:
    """The reset that time alone will bring to an erroneous counter, and when; None for a zero counter."""
    if counter.count == 0 or counter.last_counted is None:
        return None
    # "More than ten days old": at exactly reset_after the counter still holds, one millisecond later it is reset.
    due = [Decision(counter.last_counted + rules.reset_after_ms + 1, COUNTER_RESET, None, None)]
    if counter.mailbox_full_since is not None:
        release_at = counter.mailbox_full_since + rules.mailbox_full_release_ms
        due.append(Decision(release_at, MAILBOX_FULL_RELEASE, None, None))
    return min(due, key=lambda d: (d.since, d.rule))


def advance(counter: Counter, now: int, rules: Rules) -> Counter:
    """The counter at time `now`: a reset that is due has happened. After one the counter is zero, so there is
    never a second, and advancing in steps gives what advancing at once does."""
    due = counter_deadline(counter, rules)
    if due is None or due.since > now:
        return counter
    return Counter(decision=due)


# -- one signal -----------------------------------------------------------------------------------------------------
def count_error(counter: Counter, signal: Signal, rules: Rules) -> Counter:
    """A soft error (or a validity-end failure) at a counter already advanced to its time."""
    at = signal.occurred_at
    if counter.last_counted is not None and at - counter.last_counted < rules.count_once_within_ms:
        return counter  # closer than count_once_within to the last counted error: the same error, counted once
    reason = kpi_reason(signal.reason or UNKNOWN_REASON)
    since = counter.decision.since if counter.count and counter.decision else at
    mailbox_full_since = None
    if reason == MAILBOX_FULL:
        mailbox_full_since = counter.mailbox_full_since if counter.mailbox_full_since is not None else at
    return Counter(counter.count + 1, at, mailbox_full_since, Decision(since, ERROR_COUNTED, signal, reason))


def step(standing: Standing, signal: Signal, rules: Rules) -> Standing:
    """Fold one signal; callers fold in Signal.order."""
    kind, at = signal.kind, signal.occurred_at
    if kind == RELEASE:  # everything before it is forgotten: counter, latches
        return Standing(Counter(decision=Decision(at, MANUAL_RELEASE, signal, None)), released=signal)
    if kind in (HARD_ERROR, COMPLAINT):
        return _latch(standing, signal)
    if kind in COUNTED_KINDS:
        counter = count_error(advance(standing.counter, at, rules), signal, rules)
        quarantined = standing.quarantined
        if quarantined is None and counter.count >= rules.quarantine_at:
            quarantined = Decision(at, ERROR_THRESHOLD, signal, counter.decision.reason if counter.decision else None)
        return replace(standing, counter=counter, quarantined=quarantined)
    if kind == DELIVERED:
        counter = advance(standing.counter, at, rules)
        if counter.count:  # a successful delivery makes an erroneous address valid again
            counter = Counter(decision=Decision(at, DELIVERED_RULE, signal, None))
        return replace(standing, counter=counter)
    return standing  # an ignored error, an open, a click: nothing for the rules


def _latch(standing: Standing, signal: Signal) -> Standing:
    """Set the latch a hard error or a complaint sets, unless an earlier signal (in Signal.order) holds it."""
    if signal.kind == HARD_ERROR:
        name = "quarantined"
        decision = Decision(signal.occurred_at, HARD_ERROR_RULE, signal, kpi_reason(signal.reason or UNKNOWN_REASON))
    else:
        name = "denylisted"
        decision = Decision(signal.occurred_at, COMPLAINT_RULE, signal, COMPLAINT_REASON)
    held: Decision | None = getattr(standing, name)
    if held is not None and held.signal is not None and held.signal.order <= signal.order:
        return standing
    return replace(standing, **{name: decision})


def absorb_late(standing: Standing, signal: Signal) -> Standing | None:
    """Place a signal ordered before every signal folded into `standing`, if that can be done exactly; None if not.

    A hard error or a complaint can: it only sets its latch, where the earliest wins, unless the latest release
    comes after it. A soft error, a delivery or a release would have to be replayed among signals no longer kept.
    """
    if signal.kind not in (HARD_ERROR, COMPLAINT):
        return None
    if standing.released is not None and signal.order < standing.released.order:
        return standing  # released since
    return _latch(standing, signal)


def settled_messages(signals: Iterable[Signal]) -> set[MessageKey]:
    return {(s.delivery_id, s.message_id) for s in signals if s.kind in SETTLING_KINDS}


def without_void_failures(signals: Iterable[Signal], settled: Collection[MessageKey]) -> list[Signal]:
    """The signals the rules count: a validity-end failure of a message that `settled` says was delivered or
    hard-bounced is void. The delivery stage tells the failure when its clock passes the validity end; reading a
    backlog or a replay, that clock is past the end before the retry's success, dated earlier, is read, so the
    failure can come first. Voiding it whichever arrives first keeps the answer independent of the reading order."""
    return [s for s in signals if s.kind != VALIDITY_END_FAILURE or (s.delivery_id, s.message_id) not in settled]


def fold(signals: Iterable[Signal], start: Standing | None = None, rules: Rules | None = None) -> Standing:
    rules = rules or Rules()
    standing = start or Standing()
    for signal in sorted(signals, key=lambda s: s.order):
        standing = step(standing, signal, rules)
    return standing


# -- the answer -----------------------------------------------------------------------------------------------------
def status_of(standing: Standing, now: int, rules: Rules) -> AddressStatus:
    """The address's status at time `now` (the stage's clock): a latch wins, else the counter as time left it."""
    counter = advance(standing.counter, now, rules)
    if standing.denylisted is not None:
        return AddressStatus(DENYLISTED, counter.count, standing.denylisted)
    if standing.quarantined is not None:
        return AddressStatus(QUARANTINED, counter.count, standing.quarantined)
    if counter.count:
        return AddressStatus(ERRONEOUS, counter.count, counter.decision)
    return AddressStatus(VALID, 0, counter.decision)


def next_change_at(standing: Standing, rules: Rules) -> int | None:
    """When time alone will change the status: never for a latched address (never released automatically)."""
    if standing.quarantined is not None or standing.denylisted is not None:
        return None
    due = counter_deadline(standing.counter, rules)
    return None if due is None else due.since


def evaluate(signals: Iterable[Signal], now: int, rules: Rules | None = None) -> AddressStatus:
    """The status of a whole history at `now`: what incremental application must always agree with. An event id
    names one event, so a repeated id is one signal; a settled message's validity-end failure is void."""
    rules = rules or Rules()
    unique = {signal.event_id: signal for signal in signals}.values()
    return status_of(fold(without_void_failures(unique, settled_messages(unique)), rules=rules), now, rules)
