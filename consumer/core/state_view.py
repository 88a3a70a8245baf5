"""The state the core needs from one partition; `consumer.state` implements it over a store."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from consumer.core.delivery import DeliveryState
from consumer.core.status import MessageState


class PartitionState(Protocol):
    def message(self, delivery_id: str, message_id: str) -> MessageState | None: ...

    def put_message(self, delivery_id: str, message_id: str, message: MessageState) -> None: ...

    def messages(self, delivery_id: str) -> Iterator[tuple[str, MessageState]]:
        """Every message of the delivery, staged changes included."""
        ...

    def message_groups(self, delivery_id: str) -> Iterator[tuple[MessageState, int]]:
        """Every message of the delivery as (state, how many messages share it): all a recompute needs."""
        ...

    def deliveries(self) -> Iterable[DeliveryState]:
        """The live (not archived) deliveries."""
        ...

    def put_delivery(self, delivery: DeliveryState) -> None:
        """Stage the delivery's record; an archived one replaces its live record by its archived record."""
        ...

    def archived(self, delivery_id: str) -> DeliveryState | None:
        """The delivery's archived record (its final counters), if it was archived."""
        ...

    def drop_messages(self, delivery_id: str) -> None:
        """Delete every message and counted-once record of the delivery (archiving)."""
        ...

    def count_once(self, delivery_id: str, event_id: str, kind: str) -> bool:
        """Record an event id of a kind counted per distinct event (OPEN, CLICK, a rejected confirmation);
        False if it was already recorded. A rejected confirmation's id (the deliveries topic) and an
        engagement's (mta.events) are chosen by different producers: an equal id never makes one a duplicate
        of the other."""
        ...

    def counted(self, delivery_id: str) -> Iterator[str]:
        """The kinds of the delivery's events recorded by count_once."""
        ...

    def watermark(self) -> int: ...

    def put_watermark(self, watermark: int) -> None: ...
