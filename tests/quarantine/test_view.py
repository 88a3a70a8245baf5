"""The processor over its store view: the deadline index visits exactly the addresses time changes, and the results
equal the all-in-memory fold the processor was before (walking every address at each clock step), through
checkpoints and restarts from the store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.quarantine import view as view_module
from consumer.quarantine.processor import QuarantineOutput, QuarantineProcessor
from consumer.quarantine.records import status_record
from consumer.quarantine.rules import DAY_MS, ERRONEOUS, QUARANTINED, VALID, Rules, next_change_at
from consumer.quarantine.signals import DELIVERED, FORGET, HARD_ERROR, SOFT_ERROR, Signal
from consumer.quarantine.state import DUPLICATE, AddressState, Limits
from consumer.quarantine.view import AddressView, committed_status_counts
from consumer.state.memory import MemoryStore
from tests.quarantine.builders import sig
from tests.quarantine.test_properties import KINDS, REASONS

D = DAY_MS
RULES = Rules()
LIMITS = Limits(horizon_ms=20 * D, max_facts=16, history_size=4, idle_after_ms=40 * D)


class WalkingProcessor:
    """The processor as it was before the store: every address in memory, all of them walked at each clock step.
    The oracle of the tests below."""

    def __init__(self, rules: Rules, limits: Limits) -> None:
        self.rules, self.limits = rules, limits
        self.addresses: dict[str, AddressState] = {}
        self.time = 0
        self._dirty: set[str] = set()
        self._out = QuarantineOutput()

    def apply(self, signals: Iterable[tuple[str, Signal]], now_ms: int) -> None:
        newest = self.time
        for address, signal in signals:
            if signal.kind == FORGET:
                known = address in self.addresses
                if known:
                    self._erase(address)
                self._out.outcomes[FORGET, "applied" if known else DUPLICATE] += 1
                continue
            state = self.addresses.setdefault(address, AddressState.new(address, self.limits))
            outcome = state.apply(signal, self.rules, self.limits)
            self._out.outcomes[signal.kind, outcome] += 1
            if outcome != DUPLICATE:
                self._dirty.add(address)
            newest = max(newest, signal.occurred_at)
        self.advance_clock(min(newest, max(now_ms, self.time)))

    def advance_clock(self, now_ms: int) -> None:
        if now_ms <= self.time:
            return
        self.time = now_ms
        for address, state in list(self.addresses.items()):
            if state.forgettable(now_ms, self.rules, self.limits):
                self._erase(address)
            elif state.published is not None and state.status(now_ms, self.rules).status != state.published:
                self._dirty.add(address)

    def take_output(self) -> QuarantineOutput:
        out, self._out = self._out, QuarantineOutput()
        for address in sorted(self._dirty):
            state = self.addresses[address]
            record = status_record(state, self.time, self.rules)
            out.statuses.append(record)
            if record["status"] != state.published:
                out.transitions[state.published, record["status"]] += 1
                state.published = record["status"]
        self._dirty.clear()
        return out

    def _erase(self, address: str) -> None:
        state = self.addresses.pop(address)
        self._dirty.discard(address)
        self._out.tombstones.append(address)
        if state.published is not None:
            self._out.transitions[state.published, None] += 1

    def expected_due(self, before: int, now: int) -> set[str]:
        """Addresses with something time does between the clock `before` and `now`: a status change by time, or
        nothing left to remember."""
        due = set()
        for address, state in self.addresses.items():
            standing = state.standing(self.rules)
            if standing.quarantined is not None or standing.denylisted is not None:
                continue
            change = next_change_at(standing, self.rules)
            if (change is not None and before < change <= now) or state.forgettable(now, self.rules, self.limits):
                due.add(address)
        return due


class Stepped:
    """The processor under test over a memory store: a view per checkpoint, as the stage has it."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.visited: list[str] = []
        self.restart()

    def restart(self) -> None:
        self.view = AddressView(self.store, LIMITS.history_size)
        due = self.view.due
        self.view.due = lambda now: self._record(due(now))  # type: ignore[method-assign]
        self.processor = QuarantineProcessor(self.view, RULES, LIMITS)

    def _record(self, addresses: list[str]) -> list[str]:
        self.visited += addresses
        return addresses

    def checkpoint(self) -> QuarantineOutput:
        out = self.processor.take_output()
        self.store.write(self.view.stage(), {})
        return out


def same(a: QuarantineOutput, b: QuarantineOutput) -> None:
    assert sorted(a.tombstones) == sorted(b.tombstones)
    assert a.statuses == b.statuses
    assert a.transitions == b.transitions
    assert a.outcomes == b.outcomes


ADDRESSES = st.sampled_from(["a@x", "b@x", "c@x", "d@x", "e@x"])


@st.composite
def signals(draw: st.DrawFn, n: int) -> tuple[str, Signal]:
    kind = draw(st.sampled_from((*KINDS.elements, FORGET))) if draw(st.integers(0, 9)) == 0 else draw(KINDS)
    at = draw(st.integers(0, 200 * D))
    if kind in ("RELEASE", FORGET):
        return draw(ADDRESSES), Signal(f"e{n}", kind, at, actor="ops")
    message = f"m{draw(st.integers(0, 5))}"
    return draw(ADDRESSES), Signal(f"e{n}", kind, at, "d1", message, draw(REASONS))


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[str, object]]:
    steps, n = [], 0
    for _ in range(draw(st.integers(1, 25))):
        what = draw(st.sampled_from(("apply", "apply", "clock", "checkpoint", "restart")))
        if what == "apply":
            batch = []
            for _ in range(draw(st.integers(1, 6))):
                batch.append(draw(signals(n)))
                n += 1
            steps.append((what, (batch, draw(st.integers(0, 240 * D)))))
        elif what == "clock":
            steps.append((what, draw(st.integers(0, 40 * D))))
        else:
            steps.append((what, None))
    return steps


@settings(max_examples=300, deadline=None)
@given(scripts())
def test_the_stored_processor_equals_the_walking_fold_and_visits_only_what_is_due(script):
    oracle, tested = WalkingProcessor(RULES, LIMITS), Stepped()
    for what, arg in script:
        if what == "apply":
            batch, now = arg
            oracle.apply(batch, now)
            tested.processor.apply(batch, now)
        elif what == "clock":
            before = oracle.time
            expected_due = oracle.expected_due(before, before + arg) if arg else set()
            oracle.advance_clock(before + arg)
            tested.visited = []
            tested.processor.advance_clock(before + arg)
            assert set(tested.visited) == expected_due
            assert len(tested.visited) == len(expected_due)  # each once
        elif what == "checkpoint":
            same(tested.checkpoint(), oracle.take_output())
        else:  # a checkpoint, then a new processor over what the store has
            same(tested.checkpoint(), oracle.take_output())
            tested.restart()
            # The store keeps the clock of the last checkpoint that changed anything: stepping from there to where
            # the clock was changes nothing.
            assert tested.processor.now <= oracle.time
            tested.processor.advance_clock(oracle.time)
            same(tested.checkpoint(), QuarantineOutput())
        assert tested.processor.now == oracle.time
    same(tested.checkpoint(), oracle.take_output())
    for address, state in oracle.addresses.items():
        assert tested.processor.address(address) == state
    assert {a for a in ("a@x", "b@x", "c@x", "d@x", "e@x") if tested.processor.address(a)} == set(oracle.addresses)
    published = Counter(state.published for state in oracle.addresses.values())
    counts = {status: n for status, n in committed_status_counts(tested.store).items() if n}
    assert counts == {status: n for status, n in published.items() if status is not None}


def test_an_erased_address_leaves_nothing_in_the_store():
    tested = Stepped()
    tested.processor.apply([("a@x", sig(SOFT_ERROR, 0, "mailbox_full"))], now_ms=0)
    tested.checkpoint()
    assert len(tested.store) > 1
    tested.processor.apply([("a@x", Signal("f1", FORGET, 1, actor="ops"))], now_ms=0)
    out = tested.checkpoint()
    assert out.tombstones == ["a@x"] and out.transitions == {(ERRONEOUS, None): 1}
    assert [key for key, _ in tested.store.scan(b"")] == [b"s\x00ERRONEOUS"]  # a count: 0
    assert committed_status_counts(tested.store) == {ERRONEOUS: 0}


def test_the_index_is_read_in_pages_and_in_due_order(monkeypatch):
    monkeypatch.setattr(view_module, "_PAGE", 2)
    tested = Stepped()
    batch = [(f"{n}@x", sig(SOFT_ERROR, n, "unreachable")) for n in range(7)]
    tested.processor.apply(batch, now_ms=0)
    tested.checkpoint()
    tested.processor.apply([("late@x", sig(DELIVERED, 0))], now_ms=0)  # staged, not in the store: filed at day 40
    tested.processor.advance_clock(14 * D)  # resets due at 10 days and 1 ms after each error
    assert tested.visited == ["0@x", "1@x", "2@x", "3@x"]
    out = tested.checkpoint()
    assert [r["status"] for r in out.statuses] == [VALID] * 4 + [VALID]  # late@x: first published now
    # 4..6 at their resets; then idle (40 days after their last signal) 0 and late (day 0), 1, 2, 3
    assert tested.view.due(10**12) == ["4@x", "5@x", "6@x", "0@x", "late@x", "1@x", "2@x", "3@x"]


def test_a_latched_address_is_never_filed():
    tested = Stepped()
    tested.processor.apply([("q@x", sig(HARD_ERROR, 0, "user_unknown"))], now_ms=0)
    out = tested.checkpoint()
    assert [r["status"] for r in out.statuses] == [QUARANTINED]
    assert tested.view.due(10**15) == []


def test_a_clock_step_with_nothing_due_reads_nothing_from_the_store(monkeypatch):
    tested = Stepped()
    tested.processor.apply([(f"{n}@x", sig(SOFT_ERROR, 0, "unreachable")) for n in range(3)], now_ms=0)
    tested.checkpoint()
    reads = []
    read_range = tested.store.read_range
    monkeypatch.setattr(tested.store, "read_range", lambda *args: reads.append(args) or read_range(*args))
    tested.processor.advance_clock(D)  # reads the index once: the first entry is due at 10 days
    assert len(reads) == 1
    for day in range(2, 10):
        tested.processor.advance_clock(day * D)
        tested.checkpoint()
    assert len(reads) == 1
    tested.processor.apply([("new@x", sig(SOFT_ERROR, 9.5, "unreachable"))], now_ms=9 * D)  # filed at 19.5 days
    tested.checkpoint()
    tested.processor.advance_clock(10 * D + 1)
    assert tested.visited == ["0@x", "1@x", "2@x"] and len(reads) == 2
