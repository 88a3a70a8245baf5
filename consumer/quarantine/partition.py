"""A quarantine-stage partition: its store, the address view and processor over it, and where its input stands."""

from __future__ import annotations

from consumer.quarantine.processor import QuarantineProcessor
from consumer.quarantine.rules import Rules
from consumer.quarantine.state import Limits
from consumer.quarantine.view import AddressView
from consumer.runtime.stage import PartitionWork
from consumer.state.store import PartitionStore


class QuarantinePartition(PartitionWork):
    def __init__(self, partition: int, store: PartitionStore, rules: Rules, limits: Limits) -> None:
        self.store = store
        self._rules = rules
        self._limits = limits
        super().__init__(partition)

    def reset(self) -> None:
        """Forget everything since the last checkpoint: the store holds the committed truth."""
        super().reset()
        self.view = AddressView(self.store, self._limits.history_size)
        self.processor = QuarantineProcessor(self.view, self._rules, self._limits)
