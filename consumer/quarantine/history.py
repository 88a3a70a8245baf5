"""Recipient history: an address's last messages, newest first, with what its signals say about each."""

from __future__ import annotations

from dataclasses import dataclass, field

from consumer.core.events import DELIVERY_PROOF, ENGAGED, Fact
from consumer.core.status import PENDING, message_status
from consumer.quarantine.signals import MESSAGE_FACTS, Signal

# As plain ints: an IntFlag operation costs about ten times an int's, and each status record asks it of 100 messages.
_ENGAGED = int(ENGAGED)
_CLICK = int(Fact.CLICK)
_SETTLED = DELIVERY_PROOF | int(Fact.HARD_BOUNCE)  # as rules.SETTLING_KINDS: no validity-end failure


@dataclass(frozen=True, slots=True)
class MessageEntry:
    delivery_id: str
    message_id: str
    first_at: int  # its earliest signal: the history is ordered by this
    last_at: int  # its latest signal
    facts: int  # the core's Fact bits its signals add up to

    @property
    def rank(self) -> tuple[int, str, str]:
        """A total order of messages: the history keeps the greatest."""
        return (self.first_at, self.delivery_id, self.message_id)

    @property
    def status(self) -> str:
        # The core's rules as with EFS: the address only learns what the MTA confirmed, so a message is Sent once
        # delivered or engaged, Failed on a hard error, a validity-end failure or a soft error not yet retried.
        # A message with only an ignored error or a complaint has no relay proof: Pending.
        return message_status(self.facts, efs=True, validity_over=False) or PENDING

    @property
    def opened(self) -> bool:
        return bool(self.facts & _ENGAGED)  # a click implies an open

    @property
    def clicked(self) -> bool:
        return bool(self.facts & _CLICK)


@dataclass(slots=True)
class RecipientHistory:
    """The `size` messages with the latest first signal. A message's signals merge by union and min/max, so their
    order does not matter; a message pushed out is not remembered, so a signal for it that comes after `size`
    newer messages is taken for a new message (placed by its own time) unless it is older than all of them."""

    size: int
    entries: dict[tuple[str, str], MessageEntry] = field(default_factory=dict)

    def add(self, signal: Signal) -> bool:
        """Take a signal; whether the history changed."""
        facts = MESSAGE_FACTS.get(signal.kind)
        if facts is None or signal.delivery_id is None or signal.message_id is None:
            return False  # a release concerns no message
        key = (signal.delivery_id, signal.message_id)
        at = signal.occurred_at
        old = self.entries.get(key)
        if old is not None:
            new = MessageEntry(*key, min(old.first_at, at), max(old.last_at, at), old.facts | facts)
            self.entries[key] = new
            return new != old
        new = MessageEntry(*key, at, at, facts)
        if len(self.entries) >= self.size:
            oldest = min(self.entries.values(), key=lambda entry: entry.rank)
            if new.rank < oldest.rank:
                return False  # older than every message kept: it would be the one pushed out
            del self.entries[oldest.delivery_id, oldest.message_id]
        self.entries[key] = new
        return True

    def settled(self) -> set[tuple[str, str]]:
        """The messages delivered (an open or a click proves it) or hard-bounced."""
        return {key for key, entry in self.entries.items() if entry.facts & _SETTLED}

    def latest(self) -> list[MessageEntry]:
        """Newest first."""
        return sorted(self.entries.values(), key=lambda entry: entry.rank, reverse=True)
