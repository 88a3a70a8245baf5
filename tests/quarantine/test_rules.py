"""One row per rule and per boundary: the status after a history, whole and applied one signal at a time."""

from __future__ import annotations

import pytest

from consumer.core.status import PLATFORM_REASONS
from consumer.quarantine.rules import (
    COMPLAINT_RULE,
    COUNTER_RESET,
    DAY_MS,
    DELIVERED_RULE,
    DENYLISTED,
    ERRONEOUS,
    ERROR_COUNTED,
    ERROR_THRESHOLD,
    HARD_ERROR_RULE,
    MAILBOX_FULL,
    MAILBOX_FULL_RELEASE,
    MANUAL_RELEASE,
    QUARANTINED,
    VALID,
    Rules,
    evaluate,
)
from consumer.quarantine.signals import (
    COMPLAINT,
    DELIVERED,
    HARD_ERROR,
    IGNORED_ERROR,
    RELEASE,
    SOFT_ERROR,
    VALIDITY_END_FAILURE,
)
from consumer.quarantine.state import AddressState, Limits
from tests.quarantine.builders import sig

D = DAY_MS
MF = MAILBOX_FULL


def soft_daily(count: int, start: float = 0, reason: str = "unreachable") -> list:
    return [(SOFT_ERROR, start + i, reason) for i in range(count)]


# (rule, [(kind, day, reason)], now in days (None: the last signal's time), status, error count, rule, since in days)
ROWS = [
    ("a hard error quarantines at once", [(HARD_ERROR, 0, "user_unknown")], None, QUARANTINED, 0, HARD_ERROR_RULE, 0),
    ("an ignored error changes nothing", [(IGNORED_ERROR, 0, "x")], None, VALID, 0, None, None),
    ("a soft error counts one", [(SOFT_ERROR, 0, "unreachable")], None, ERRONEOUS, 1, ERROR_COUNTED, 0),
    (
        "closer than one day: once",
        [(SOFT_ERROR, 0, "r"), (SOFT_ERROR, 1 - 1 / D, "r")],
        None,
        ERRONEOUS,
        1,
        ERROR_COUNTED,
        0,
    ),
    (
        "exactly one day apart: twice",
        [(SOFT_ERROR, 0, "r"), (SOFT_ERROR, 1, "r")],
        None,
        ERRONEOUS,
        2,
        ERROR_COUNTED,
        0,
    ),
    (
        "the day runs from the last counted error",
        [(SOFT_ERROR, 0, "r"), (SOFT_ERROR, 0.6, "r"), (SOFT_ERROR, 1.2, "r")],
        None,
        ERRONEOUS,
        2,
        ERROR_COUNTED,
        0,
    ),
    (
        "five errors within a day count once",
        [(SOFT_ERROR, i / 10, "r") for i in range(5)],
        None,
        ERRONEOUS,
        1,
        ERROR_COUNTED,
        0,
    ),
    ("the fourth counted error", soft_daily(4), None, ERRONEOUS, 4, ERROR_COUNTED, 0),
    ("the fifth counted error quarantines", soft_daily(5), None, QUARANTINED, 5, ERROR_THRESHOLD, 4),
    (
        "errors exactly ten days apart keep counting",
        [(SOFT_ERROR, 0, "r"), (SOFT_ERROR, 10, "r")],
        None,
        ERRONEOUS,
        2,
        ERROR_COUNTED,
        0,
    ),
    (
        "more than ten days: the counter resets first",
        [(SOFT_ERROR, 0, "r"), (SOFT_ERROR, 10 + 1 / D, "r")],
        None,
        ERRONEOUS,
        1,
        ERROR_COUNTED,
        10 + 1 / D,
    ),
    ("ten days on, still erroneous", [(SOFT_ERROR, 0, "r")], 10, ERRONEOUS, 1, ERROR_COUNTED, 0),
    ("past ten days, time alone resets", [(SOFT_ERROR, 0, "r")], 10 + 1 / D, VALID, 0, COUNTER_RESET, 10 + 1 / D),
    (
        "a validity-end failure counts as a soft error",
        [(SOFT_ERROR, 0, "r"), (VALIDITY_END_FAILURE, 2, "r")],
        None,
        ERRONEOUS,
        2,
        ERROR_COUNTED,
        0,
    ),
    (
        "a validity-end failure within a day of its soft bounce counts once",
        [(SOFT_ERROR, 0, "r"), (VALIDITY_END_FAILURE, 0.5, "r")],
        None,
        ERRONEOUS,
        1,
        ERROR_COUNTED,
        0,
    ),
    (
        "a delivery makes an erroneous address valid",
        [(SOFT_ERROR, 0, "r"), (DELIVERED, 1, None)],
        None,
        VALID,
        0,
        DELIVERED_RULE,
        1,
    ),
    ("a delivery to a valid address changes nothing", [(DELIVERED, 0, None)], None, VALID, 0, None, None),
    (
        "a delivery does not release a quarantine",
        [(HARD_ERROR, 0, "user_unknown"), (DELIVERED, 1, None)],
        None,
        QUARANTINED,
        0,
        HARD_ERROR_RULE,
        0,
    ),
    (
        "after a delivery, a new run",
        [*soft_daily(4), (DELIVERED, 4, None), *soft_daily(2, 5)],
        None,
        ERRONEOUS,
        2,
        ERROR_COUNTED,
        5,
    ),
    (
        "mailbox_full, one millisecond short of 30 days",
        [(SOFT_ERROR, day, MF) for day in (0, 9, 18, 27)],
        30 - 1 / D,
        ERRONEOUS,
        4,
        ERROR_COUNTED,
        0,
    ),
    (
        "mailbox_full for 30 days is released",
        [(SOFT_ERROR, day, MF) for day in (0, 9, 18, 27)],
        30,
        VALID,
        0,
        MAILBOX_FULL_RELEASE,
        30,
    ),
    (
        "another reason restarts the mailbox_full clock",
        [(SOFT_ERROR, 0, MF), (SOFT_ERROR, 9, "unreachable"), (SOFT_ERROR, 18, MF), (SOFT_ERROR, 27, MF)],
        30,
        ERRONEOUS,
        4,
        ERROR_COUNTED,
        0,
    ),
    ("a complaint denylists", [(COMPLAINT, 0, None)], None, DENYLISTED, 0, COMPLAINT_RULE, 0),
    (
        "a complaint denylists a quarantined address",
        [(HARD_ERROR, 0, "user_unknown"), (COMPLAINT, 1, None)],
        None,
        DENYLISTED,
        0,
        COMPLAINT_RULE,
        1,
    ),
    ("a quarantine is kept for good", [(HARD_ERROR, 0, "user_unknown")], 3650, QUARANTINED, 0, HARD_ERROR_RULE, 0),
    ("a threshold quarantine is kept for good", soft_daily(5), 3650, QUARANTINED, 0, ERROR_THRESHOLD, 4),
    ("a denylisting is kept for good", [(COMPLAINT, 0, None)], 3650, DENYLISTED, 0, COMPLAINT_RULE, 0),
    ("a release releases", [(HARD_ERROR, 0, "user_unknown"), (RELEASE, 1, None)], None, VALID, 0, MANUAL_RELEASE, 1),
    ("a release releases a denylisting", [(COMPLAINT, 0, None), (RELEASE, 1, None)], None, VALID, 0, MANUAL_RELEASE, 1),
    (
        "a release resets the counter",
        [*soft_daily(4), (RELEASE, 3.5, None), (SOFT_ERROR, 4, "r")],
        None,
        ERRONEOUS,
        1,
        ERROR_COUNTED,
        4,
    ),
    (
        "a release releases its own millisecond",
        [(HARD_ERROR, 1, "user_unknown"), (RELEASE, 1, None)],
        None,
        VALID,
        0,
        MANUAL_RELEASE,
        1,
    ),
    (
        "after a release a hard error quarantines again",
        [(RELEASE, 0, None), (HARD_ERROR, 1 / D, "x")],
        None,
        QUARANTINED,
        0,
        HARD_ERROR_RULE,
        1 / D,
    ),
]


def _signals(history: list) -> list:
    return [sig(kind, day, reason) for kind, day, reason in history]


@pytest.mark.parametrize(
    ("history", "now", "status", "count", "rule", "since"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS]
)
def test_rule(history, now, status, count, rule, since):
    signals = _signals(history)
    at = round(now * D) if now is not None else max(s.occurred_at for s in signals)
    expected = (status, count, rule, None if since is None else round(since * D))
    whole = evaluate(signals, at)
    assert (whole.status, whole.error_count, *_decided(whole)) == expected
    state = AddressState.new("a@example.com", Limits())
    for signal in signals:
        state.apply(signal, Rules(), Limits())
    assert state.status(at, Rules()) == whole


def _decided(status) -> tuple:
    return (status.decision.rule, status.decision.since) if status.decision else (None, None)


def test_the_error_count_of_a_threshold_quarantine_is_the_count_that_reached_it():
    assert evaluate(_signals(soft_daily(5)), 4 * D).error_count == 5


def test_reasons_come_from_the_platforms_list():
    assert MAILBOX_FULL in PLATFORM_REASONS
    status = evaluate([sig(SOFT_ERROR, 0, "something invented")], 0)
    assert status.decision.reason == "other"
    assert evaluate([sig(HARD_ERROR, 0, None)], 0).decision.reason == "unknown"


def test_the_thresholds_are_configurable():
    rules = Rules(count_once_within_ms=0, quarantine_at=2, reset_after_ms=D, mailbox_full_release_ms=2 * D)
    assert evaluate([sig(SOFT_ERROR, 0, "r"), sig(SOFT_ERROR, 0, "r", ms=1)], 1, rules).status == QUARANTINED
    assert evaluate([sig(SOFT_ERROR, 0, "r")], D + 1, rules).status == VALID
    short_mailbox = Rules(reset_after_ms=D, mailbox_full_release_ms=2 * D)
    mailbox_full = [sig(SOFT_ERROR, 0, MF), sig(SOFT_ERROR, 1, MF)]
    assert evaluate(mailbox_full, 2 * D - 1, short_mailbox).status == ERRONEOUS
    assert evaluate(mailbox_full, 2 * D, short_mailbox).decision.rule == MAILBOX_FULL_RELEASE
    with pytest.raises(ValueError):
        Rules(quarantine_at=0)


def test_the_status_names_the_deciding_signal():
    hard = sig(HARD_ERROR, 3, "user_unknown")
    status = evaluate([sig(SOFT_ERROR, 0, "r"), hard, sig(SOFT_ERROR, 5, "r")], 5 * D)
    assert status.decision.signal == hard
