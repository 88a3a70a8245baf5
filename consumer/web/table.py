"""The latest KPI of every delivery, for a year of them: compact entries, newest change first, change cursors.

`KpiTable` is thread-safe and notifies waiters of changes (pages and server-sent events read it). Each entry
keeps the record as its Avro bytes (about 130 bytes, decoded when shown: a page decodes its 50) and the few
fields that list, filter and route (id, state, partition); an index ordered by change number gives a page of
the newest changes, or the changes after a cursor, without looking at the other deliveries. The progress
history of each delivery (consumer/web/progress.py) is kept beside it, bounded.
"""

from __future__ import annotations

import secrets
import threading
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sortedcontainers import SortedDict

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_KPI
from consumer.ops.exchange import count
from consumer.web import progress

Kpi = dict[str, Any]  # a DeliveryKpi record, field names of schemas/delivery_kpi.avsc
_CODEC = AvroCodec.named(DELIVERY_KPI)


@dataclass(frozen=True, slots=True)
class KpiEntry:
    delivery_id: str
    state: str
    partition: int
    seq: int  # the table's change counter when this record arrived
    version: int
    raw: bytes  # the record, Avro-encoded

    @property
    def kpi(self) -> Kpi:
        return _CODEC.decode(self.raw)


@dataclass(frozen=True)
class Page:
    entries: list[KpiEntry]  # newest change first
    next_before: int | None  # the change number to go on below; None on the last page


class KpiTable:
    """Latest KPI per delivery: the highest version wins, at equal versions the later record.

    Changes are numbered; a reader asks for the changes after a cursor `"<epoch>:<seq>"`. The epoch is
    random per table, so a cursor from another instance (or before a restart) means "send everything".
    """

    def __init__(self) -> None:
        self._entries: dict[str, KpiEntry] = {}
        self._order: SortedDict = SortedDict()  # change number -> delivery id, one per delivery
        self._history: dict[str, array] = {}
        self._states: Counter[str] = Counter()
        self._seq = 0
        self._epoch = secrets.token_hex(4)
        self._changed = threading.Condition()

    def apply(self, partition: int, kpi: Kpi) -> bool:
        """Keep the record if it is the delivery's latest; True when it changed the table."""
        raw = _CODEC.encode(kpi)
        delivery_id = kpi["delivery_id"]
        with self._changed:
            current = self._entries.get(delivery_id)
            if current is not None and (kpi["version"] < current.version or raw == current.raw):
                return False
            self._forget(current)
            self._seq += 1
            entry = KpiEntry(delivery_id, kpi["state"], partition, self._seq, kpi["version"], raw)
            self._entries[delivery_id] = entry
            self._order[self._seq] = delivery_id
            self._states[entry.state] += 1
            self._history[delivery_id] = progress.add(self._history.get(delivery_id), kpi)
            self._changed.notify_all()
            return True

    def remove(self, delivery_id: str) -> None:
        """A tombstone: the delivery is gone from the compacted topic."""
        with self._changed:
            entry = self._entries.pop(delivery_id, None)
            if entry is not None:
                self._forget(entry)
                self._history.pop(delivery_id, None)
                self._seq += 1
                self._changed.notify_all()

    def get(self, delivery_id: str) -> KpiEntry | None:
        with self._changed:
            return self._entries.get(delivery_id)

    def history(self, delivery_id: str) -> list[progress.Point]:
        with self._changed:
            return progress.read(self._history.get(delivery_id))

    def page(self, limit: int, before: int | None = None, state: str | None = None, search: str = "") -> Page:
        """Up to `limit` deliveries changed before change number `before`, newest first, in `state` when given,
        whose id contains `search` (case-insensitive)."""
        wanted = search.casefold()
        rows: list[KpiEntry] = []
        with self._changed:
            for entry in self._newest_first(before):
                if state in (None, entry.state) and wanted in entry.delivery_id.casefold():
                    if len(rows) == limit:
                        return Page(rows, rows[-1].seq)
                    rows.append(entry)
        return Page(rows, None)

    def counts(self) -> tuple[int, dict[str, int]]:
        """How many deliveries in all, and in each state."""
        with self._changed:
            return len(self._entries), dict(self._states)

    def changes(self, cursor: str | None, timeout_s: float) -> tuple[str, list[KpiEntry]]:
        """The entries changed after the cursor, oldest first, waiting up to timeout_s for one; a foreign cursor
        gets all."""
        since = self._seq_of(cursor)
        with self._changed:
            if since is not None:
                self._changed.wait_for(lambda: self._seq > since, timeout_s)
            seqs = self._order.irange(minimum=(since or 0) + 1)
            return self._cursor(), [self._entries[self._order[s]] for s in seqs]

    def cursor(self) -> str:
        """Where the table is now: changes() after it are the ones still to come."""
        with self._changed:
            return self._cursor()

    def _newest_first(self, before: int | None) -> Iterator[KpiEntry]:
        for seq in self._order.irange(maximum=before, inclusive=(True, False), reverse=True):
            yield self._entries[self._order[seq]]

    def _forget(self, entry: KpiEntry | None) -> None:
        if entry is not None:
            del self._order[entry.seq]
            self._states[entry.state] -= 1
            if not self._states[entry.state]:
                del self._states[entry.state]

    def _cursor(self) -> str:
        return f"{self._epoch}:{self._seq}"

    def _seq_of(self, cursor: str | None) -> int | None:
        epoch, _, seq = (cursor or "").partition(":")
        number = count(seq)
        return number if epoch == self._epoch and number is not None and number <= self._seq else None
