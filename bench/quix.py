"""The Quix Streams baseline: the delivery KPIs of the bench's inputs as a Quix Streams application.

`python -m bench.quix ...` (bench/run.py starts it in a process of its own). Written by us for the
benchmark, against Quix Streams' public API (and its rebalance callback, to say when it is ready): an
Application with exactly-once processing and its RocksDB state, the two input topics (Avro single-object
frames, decoded by a custom deserializer) concatenated into one StreamingDataFrame, and one stateful
function per event.

Equivalent work. Per event the function does what sendtrack's core does for it, with the core's own pure
rules: the facts of the event's (delivery, message) (a message record in the state), the message status by
`message_status`, the delivery's counters moved by the message's old and new contribution, opens, clicks
and refused confirmations counted once per event id, the lifecycle by `apply_delivery_event`; and it emits
one complete DeliveryKpi record (Avro) for each event that changed its delivery. Quix's state is keyed by
the record key (delivery_id), so a delivery's records are read and written through the state on every
event (a marshalled tuple, the cheapest encoding of it): Quix offers no per-checkpoint hook, so nothing can
be kept in memory across records without breaking its exactly-once rewind.

Quix's state cannot list a key's messages, so where sendtrack walks a delivery's messages the baseline keeps
the counters for both EFS settings (each message change moves both) and swaps them when a PREPARED switches
EFS: MTA events can be applied before their delivery's PREPARED (Quix's time alignment of the two topics is
best effort), and the first full run met exactly that.

What it does not do that sendtrack does: no validity end (the bench's workload has none), one KPI per
changing event rather than one per changed delivery per checkpoint, no sending logs, no dead letters
(a bad record stops the application, Quix's default), no clock-skew cap, no retention or archiving, no
changelog merge on restore (Quix replays its changelog as it is), no metrics or HTTP endpoints.
"""

from __future__ import annotations

import argparse
import json
import marshal
import time
from dataclasses import fields
from operator import attrgetter
from typing import Any, Protocol

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, DELIVERY_KPI, MTA_EVENT
from consumer.core.delivery import DeliveryState, Rejection, apply_delivery_event
from consumer.core.events import Event
from consumer.core.kpi import KpiCounters

# The core's per-event rules (private to the processor, whose batch and partition machinery Quix replaces).
from consumer.core.processor import _COUNTED_TOTAL, REJECTED_CONFIRMATION, _count, _learn, kpi_record
from consumer.core.status import NO_CONTRIBUTION, Contribution, MessageState, contribution, message_status
from consumer.delivery.records import decode_message, encode_message

# Keys within a delivery's state (Quix prefixes each with the record key, the delivery_id).
DELIVERY = b"d"
MESSAGE = b"m"
COUNTED = b"e"  # OPEN and CLICK event ids
REJECTED = b"r"  # refused CONFIRMED event ids: another producer's ids, so apart from COUNTED
SEEN = b"1"


_DELIVERY_FIELDS = tuple(f.name for f in fields(DeliveryState))
_COUNTERS = _DELIVERY_FIELDS.index("counters")
_delivery_values = attrgetter(*_DELIVERY_FIELDS)
_counter_values = attrgetter(*(f.name for f in fields(KpiCounters)))
# What a message contributes, so what differs between the counters under either EFS setting (not the totals
# of events counted once per id).
_PER_MESSAGE = tuple(f.name for f in fields(KpiCounters) if f.name not in _COUNTED_TOTAL.values())


def dump_delivery(delivery: DeliveryState, other: KpiCounters) -> bytes:
    """The delivery's record and its counters under the other EFS setting, as a marshalled tuple. Quix reads and
    writes it on every event, and this is about ten times faster than sendtrack's JSON record
    (records.encode_delivery), written once per checkpoint: the baseline should not pay for an encoding chosen
    for another access pattern."""
    values = list(_delivery_values(delivery))
    values[_COUNTERS] = _counter_values(delivery.counters)
    return marshal.dumps((*values, _counter_values(other)))


def load_delivery(raw: bytes) -> tuple[DeliveryState, KpiCounters]:
    *values, other = marshal.loads(raw)
    values[_COUNTERS] = KpiCounters(*values[_COUNTERS])
    return DeliveryState(*values), KpiCounters(*other)


class Store(Protocol):
    """What the function needs of Quix's State: bytes in, bytes out, keys scoped to one delivery."""

    def get_bytes(self, key: bytes, default: bytes | None = None) -> bytes | None: ...

    def set_bytes(self, key: bytes, value: bytes) -> None: ...


def apply_event(event: Event, state: Store) -> list[dict[str, Any]]:
    """Apply one event to its delivery's state: the delivery's new KPI record if it changed, else nothing."""
    raw = state.get_bytes(DELIVERY)
    delivery, other = load_delivery(raw) if raw else (DeliveryState(event["delivery_id"], efs=False), KpiCounters())
    changed = _see_event_time(delivery, event["occurred_at"])
    if "message_id" in event:
        changed = _apply_mta(delivery, other, event, state) or changed
    else:
        changed = _apply_lifecycle(delivery, other, event, state) or changed
    if not changed:
        return []
    delivery.version += 1
    state.set_bytes(DELIVERY, dump_delivery(delivery, other))
    return [kpi_record(delivery)]


def _see_event_time(delivery: DeliveryState, occurred_at: int) -> bool:
    """updated_at is the latest event time of the delivery (the core's rule)."""
    if occurred_at <= delivery.updated_at:
        return False
    delivery.updated_at = occurred_at
    return True


def _count_once(state: Store, key: bytes) -> bool:
    if state.get_bytes(key) is not None:
        return False
    state.set_bytes(key, SEEN)
    return True


def _contributions(message: MessageState, efs: bool, final: bool) -> tuple[str | None, Contribution, Contribution]:
    """The message's status, and its contribution under the delivery's EFS setting and under the other one."""
    if not message.facts:
        return None, NO_CONTRIBUTION, NO_CONTRIBUTION
    status = message_status(message.facts, efs, final)
    return status, contribution(message, status), contribution(message, message_status(message.facts, not efs, final))


def _apply_mta(delivery: DeliveryState, other: KpiCounters, event: Event, state: Store) -> bool:
    kind = event["type"]
    counted = kind in _COUNTED_TOTAL and _count_once(state, COUNTED + event["event_id"].encode())
    if counted:
        _count(delivery.counters, kind)
    key = MESSAGE + event["message_id"].encode()
    raw = state.get_bytes(key)
    message = decode_message(raw) if raw else MessageState()
    old_status, old, old_other = _contributions(message, delivery.efs, delivery.final)
    if not _learn(message, event, kind):
        return counted
    new_status, new, new_other = _contributions(message, delivery.efs, delivery.final)
    delivery.counters.move(old, new)
    other.move(old_other, new_other)
    if new_status != old_status:
        message.changes += 1  # sendtrack numbers its sending logs by it; kept so the records match
    state.set_bytes(key, encode_message(message))
    return True


def _apply_lifecycle(delivery: DeliveryState, other: KpiCounters, event: Event, state: Store) -> bool:
    efs_before = delivery.efs
    result = apply_delivery_event(delivery, event, efs_default=False)
    if isinstance(result, Rejection):
        if not _count_once(state, REJECTED + event["event_id"].encode()):
            return False
        _count(delivery.counters, REJECTED_CONFIRMATION)
        return True
    if delivery.efs != efs_before:  # sendtrack walks the delivery's messages here; Quix's state cannot list them
        _swap_per_message(delivery.counters, other)
    return bool(result)


def _swap_per_message(current: KpiCounters, other: KpiCounters) -> None:
    for name in _PER_MESSAGE:
        mine, theirs = getattr(current, name), getattr(other, name)
        setattr(current, name, theirs)
        setattr(other, name, mine)


# -- the application ---------------------------------------------------------------------------------------
def build(args: argparse.Namespace) -> Any:
    """The Application and its one dataframe: both inputs -> apply_event (stateful) -> the KPI topic."""
    from quixstreams import Application  # the optional bench dependency: imported only to run
    from quixstreams.models.serializers import Deserializer, Serializer

    class AvroDeserializer(Deserializer):
        def __init__(self, schema: str) -> None:
            super().__init__()
            self._codec = AvroCodec.named(schema)

        def __call__(self, value: bytes, ctx: Any) -> dict[str, Any]:
            return self._codec.decode(value)

    class AvroSerializer(Serializer):
        def __init__(self, schema: str) -> None:
            self._codec = AvroCodec.named(schema)

        def __call__(self, value: dict[str, Any], ctx: Any) -> bytes:
            return self._codec.encode(value)

    class ReportingApplication(Application):
        """Prints a line when its input partitions are assigned and their stores opened, so the bench produces
        only then, as it does for sendtrack once /readyz is 200 (the consumer group turns stable seconds
        before that). `_on_assign` is Quix's own rebalance callback; the override only follows it."""

        def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
            super()._on_assign(consumer, partitions)
            inputs = sum(1 for tp in partitions if tp.topic in (args.mta_topic, args.deliveries_topic))
            print(json.dumps({"event": "assigned", "inputs": inputs, "t": time.time()}), flush=True)

    app = ReportingApplication(
        broker_address=args.bootstrap_servers,
        consumer_group=args.group_id,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=args.commit_interval,  # sendtrack's checkpoint interval, for the same output latency
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    mta = app.dataframe(app.topic(args.mta_topic, value_deserializer=AvroDeserializer(MTA_EVENT)))
    deliveries = app.dataframe(app.topic(args.deliveries_topic, value_deserializer=AvroDeserializer(DELIVERY_EVENT)))
    output = app.topic(args.output_topic, value_serializer=AvroSerializer(DELIVERY_KPI))
    sdf = mta.concat(deliveries).apply(apply_event, stateful=True, expand=True)
    sdf.to_topic(output)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--group-id", required=True)
    parser.add_argument("--deliveries-topic", required=True)
    parser.add_argument("--mta-topic", required=True)
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--commit-interval", type=float, default=1.0)
    build(parser.parse_args(argv)).run()  # until SIGTERM


if __name__ == "__main__":
    main()
