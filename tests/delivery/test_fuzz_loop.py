"""Fuzzing the whole input path through the real processing loop (over fake clients, so hypothesis can
try thousands of streams): good records mixed with mutated, truncated, random and contract-breaking
ones, on every input topic, in any arrangement over polls and partitions.

Properties: the loop never raises; every record the contract rejects is in the dead-letter topic exactly
once, with its error headers; the KPIs equal those of the accepted records applied alone.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.codec.avro import AvroCodec
from consumer.codec.control import parse_control
from consumer.codec.errors import InvalidEvent
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT
from consumer.codec.validation import check_event
from consumer.core.events import MTA_EVENT_TYPES
from consumer.core.processor import PartitionProcessor
from consumer.delivery.view import StateView
from consumer.kafka.topics import Topics
from consumer.state.memory import MemoryStore
from tests.core.builders import delivery_event, mta, prepared
from tests.figures import record
from tests.runtime.fakes import NOW_S, LoopDriver

NOW_MS = int(NOW_S * 1000)
PARTITIONS = 2
DELIVERIES = ("d0", "d1", "d2")
TOPICS = Topics()
CODECS = {TOPICS.deliveries: AvroCodec.named(DELIVERY_EVENT), TOPICS.mta_events: AvroCodec.named(MTA_EVENT)}
SKEW_MS = 900_000
tried = {"streams": 0, "records": 0, "bad": 0}


def partition_of(delivery_id: str) -> int:
    return zlib.crc32(delivery_id.encode()) % PARTITIONS


@dataclass(frozen=True)
class Raw:
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None


times = st.integers(NOW_MS - 7_200_000, NOW_MS)
delivery_ids = st.sampled_from(DELIVERIES)


@st.composite
def good_mta(draw) -> Raw:
    delivery = draw(delivery_ids)
    event = mta(
        delivery,
        draw(st.sampled_from([f"m{i}" for i in range(8)])),
        draw(st.sampled_from(MTA_EVENT_TYPES)),
        at=draw(times),
        event_id=f"e{draw(st.integers(0, 40))}",  # collisions make duplicates
        reason=draw(st.sampled_from([None, "mailbox_full", "user_unknown", "weird reason"])),
        attempt=draw(st.integers(0, 3)),
    )
    return Raw(TOPICS.mta_events, partition_of(delivery), delivery.encode(), CODECS[TOPICS.mta_events].encode(event))


@st.composite
def good_delivery(draw) -> Raw:
    delivery = draw(delivery_ids)
    kind = draw(st.sampled_from(["PREPARED", "CONFIRMED", "SCHEDULED", "CANCELLED"]))
    at = draw(times)
    if kind == "PREPARED":
        event = prepared(
            delivery,
            efs=draw(st.booleans()),
            at=at,
            validity_end=draw(st.sampled_from([None, NOW_MS - 1_000_000, NOW_MS + 3_600_000])),
            confirmation_required=draw(st.booleans()),
            event_id=f"p{draw(st.integers(0, 5))}",
        )
    else:
        roles = draw(st.sampled_from([None, [], ["start_deliveries"], ["viewer"]]))
        event = delivery_event(delivery, kind, at=at, actor_roles=roles, event_id=f"{kind}{draw(st.integers(0, 5))}")
    return Raw(TOPICS.deliveries, partition_of(delivery), delivery.encode(), CODECS[TOPICS.deliveries].encode(event))


@st.composite
def good_control(draw) -> Raw:
    delivery = draw(delivery_ids)
    command = json.dumps({"command": "compute-stats", "delivery_id": delivery}).encode()
    return Raw(TOPICS.control, partition_of(delivery), delivery.encode(), command)


@st.composite
def mutated(draw, good) -> Raw:
    raw = draw(good)
    value = bytearray(raw.value)
    how = draw(st.sampled_from(["flip", "truncate", "extend"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 3))):
            value[draw(st.integers(0, len(value) - 1))] = draw(st.integers(0, 255))
    elif how == "truncate":
        value = value[: draw(st.integers(0, len(value) - 1))]
    else:
        value += draw(st.binary(min_size=1, max_size=8))
    return Raw(raw.topic, raw.partition, raw.key, bytes(value))


@st.composite
def contract_breaking(draw) -> Raw:
    delivery = draw(delivery_ids)
    key = delivery.encode()
    fields: dict[str, Any] = {}
    how = draw(st.sampled_from(["empty_id", "future", "attempt", "no_key", "wrong_key", "nul", "long_id"]))
    message = {"empty_id": "", "nul": "m\x00", "long_id": "m" * 300}.get(how, "m1")
    if how == "future":
        fields["at"] = NOW_MS + SKEW_MS + draw(st.integers(1, 10**12))
    if how == "attempt":
        fields["attempt"] = draw(st.sampled_from([-1, 5_000]))
    if how in ("no_key", "wrong_key"):
        key = None if how == "no_key" else b"someone-else"
    event = mta(delivery, message, "RELAYED", **{"at": NOW_MS - 1, **fields})
    return Raw(TOPICS.mta_events, partition_of(delivery), key, CODECS[TOPICS.mta_events].encode(event))


hostile_control = st.builds(
    lambda value, key, partition: Raw(TOPICS.control, partition, key, value),
    st.one_of(
        st.binary(max_size=64),
        st.just(b"[" * 100_000),
        st.just(b'{"command": "compute-stats", "delivery_id": "\\udc00"}'),
        st.text(max_size=40).map(str.encode),
    ),
    st.one_of(st.none(), delivery_ids.map(str.encode)),
    st.integers(0, PARTITIONS - 1),
)
random_records = st.builds(
    Raw,
    st.sampled_from([TOPICS.deliveries, TOPICS.mta_events]),
    st.integers(0, PARTITIONS - 1),
    st.one_of(st.none(), st.binary(max_size=8)),
    st.one_of(st.none(), st.binary(max_size=80), st.binary(max_size=40).map(lambda b: b"\xc3\x01" + b)),
)
any_record = st.one_of(
    good_mta(),
    good_mta(),
    good_delivery(),
    good_control(),
    mutated(st.one_of(good_mta(), good_delivery())),
    contract_breaking(),
    hostile_control,
    random_records,
)


def accepted(raw: Raw) -> dict[str, Any] | None:
    """The oracle: the contract's verdict on one record, alone (None: a dead letter)."""
    try:
        if raw.topic == TOPICS.control:
            parse_control(raw.value, raw.key)
            return {}
        return check_event(CODECS[raw.topic].decode(raw.value), raw.key, NOW_MS + SKEW_MS)
    except InvalidEvent:
        return None


def expected_kpis(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kpis = {}
    for p in range(PARTITIONS):
        processor = PartitionProcessor(StateView(MemoryStore()))
        processor.apply([e for e in events if partition_of(e["delivery_id"]) == p], NOW_MS)
        processor.advance_clock(NOW_MS)
        kpis |= {k["delivery_id"]: k for k in processor.take_output().kpis}
    return kpis


def without_version(kpi: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kpi.items() if k != "version"}


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(any_record, min_size=1, max_size=60), st.data())
def test_bad_input_anywhere_changes_nothing_but_the_dead_letters(records, data):
    driver = LoopDriver(partitions=PARTITIONS, max_clock_skew_s=SKEW_MS / 1000)
    records = data.draw(st.permutations(records))  # offsets follow the arrival order, as in a partition
    messages = [driver.message(r.topic, r.partition, r.key, r.value) for r in records]
    verdicts = [accepted(r) for r in records]
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(messages) - 1)), max_size=6)))
    for a, b in zip([0, *cuts], [*cuts, len(messages)], strict=True):
        driver.poll(messages[a:b])
        if data.draw(st.booleans()):
            driver.checkpoint()
    driver.checkpoint()

    rejected = {(m.topic(), m.partition(), m.offset()) for m, v in zip(messages, verdicts, strict=True) if v is None}
    letters = driver.dead_letters()
    sources = [
        (d["sendtrack.source.topic"], int(d["sendtrack.source.partition"]), int(d["sendtrack.source.offset"]))
        for d in letters
    ]
    assert sorted(sources) == sorted(rejected)  # each exactly once
    assert all(d["sendtrack.error.code"] and d["sendtrack.error.message"] for d in letters)

    # The accepted events in the order the loop saw them per partition (order does not change the KPIs).
    events = [v for v, r in zip(verdicts, records, strict=True) if v and r.topic != TOPICS.control]
    expected = {d: without_version(k) for d, k in expected_kpis(events).items()}
    assert {d: without_version(k) for d, k in driver.kpis().items()} == expected
    for topic in TOPICS.inputs:  # every offset is done: applied or dead-lettered
        for p in range(PARTITIONS):
            sent = [m for m in messages if m.topic() == topic and m.partition() == p]
            if sent:
                assert driver.committed_offsets()[topic, p] == max(m.offset() for m in sent) + 1

    tried["streams"] += 1
    tried["records"] += len(records)
    tried["bad"] += len(rejected)


def teardown_module() -> None:
    record("fuzz_loop", **tried)
