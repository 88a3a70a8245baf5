"""A delivery-stage partition: its store, the core processor over it, and where its inputs stand."""

from __future__ import annotations

from consumer.core.processor import PartitionProcessor
from consumer.delivery.view import StateView
from consumer.runtime.stage import PartitionWork
from consumer.state.store import PartitionStore


class PartitionRuntime(PartitionWork):
    """A delivery-stage partition: its store and the core processor over it."""

    def __init__(
        self,
        partition: int,
        store: PartitionStore,
        efs_default: bool,
        retention_ms: int | None = None,
        address_signals: bool = False,
    ) -> None:
        self.store = store
        self._efs_default = efs_default
        self._retention_ms = retention_ms
        self._address_signals = address_signals
        super().__init__(partition)

    def reset(self) -> None:
        """Forget everything since the last checkpoint: the store holds the committed truth."""
        super().reset()
        self.view = StateView(self.store)
        self.processor = PartitionProcessor(self.view, self._efs_default, self._retention_ms, self._address_signals)
